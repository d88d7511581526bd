//! The command line of `legion dead-letter …`.

use clap::{Args, Subcommand};

use super::parse_task_id;

/// `legion dead-letter …`.
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Prints one page of dead letters (tasks that ended `dead_lettered`; `error` holds the reason),
    /// newest first, as `{"dead_letters":[…],"next_page_token":…}` (`GET /api/v1/dead-letters`).
    List(DeadLetterList),
    /// Runs a dead-lettered task again (same id and args, a new dispatch) and prints it.
    Replay {
        /// Task id (UUID).
        #[arg(value_parser = parse_task_id)]
        task_id: String,
    },
}

/// `legion dead-letter list`.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterList {
    /// Only dead letters of this function.
    #[arg(long, value_name = "FUNCTION")]
    pub function: Option<String>,
    /// Tasks per page, 1 to 1000 (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// `next_page_token` of the previous page.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}
