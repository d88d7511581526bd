//! `legion`, Legion's operator CLI: development certificates (`legion certs init|node`) and the task
//! commands (`legion task submit|get|list|watch|cancel`), which talk gRPC to the control plane.
//!
//! Exit codes: 0 success; 1 a failed call (the gRPC code and message are printed on stderr) or I/O
//! error; 2 a followed task (`watch`, `submit --wait`) ended other than `succeeded`; 64 bad usage or
//! settings.

pub mod args;
pub mod certs;
pub mod connect;
pub mod error;
pub mod task;

use std::io::Write;

use crate::args::{CertsCommand, Cli, Command};
use crate::error::Error;

/// Runs a parsed command line, writing results to `out`. Returns the exit code of a successful run
/// (0, or 2 for a followed task that did not succeed).
///
/// # Errors
/// [`Error`]; its [`Error::exit_code`] is the process exit code.
pub async fn run(cli: Cli, out: &mut impl Write) -> Result<u8, Error> {
    match cli.command {
        Command::Certs { command: CertsCommand::Init { dir, executor_name } } => {
            certs::init(&dir, &executor_name, out)?;
            Ok(0)
        }
        Command::Certs { command: CertsCommand::Node { dir, name } } => {
            certs::node(&dir, &name, out)?;
            Ok(0)
        }
        Command::Task { command } => {
            let target = connect::resolve(&cli.connection, None, false)?;
            let client = connect::task_client(&target)?;
            task::run(command, client, out).await
        }
    }
}
