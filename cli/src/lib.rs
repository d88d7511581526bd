//! `legion`, Legion's operator CLI: development certificates (`legion certs init|node`), and commands
//! that talk gRPC to the control plane: tasks (`legion task submit|get|list|watch|cancel|tree`), dead
//! letters (`legion dead-letter list|replay`), chains
//! (`legion chain apply|list|show|delete`), schedules
//! (`legion schedule add|list|show|pause|resume|delete|fires|preview`; `preview` is computed locally),
//! policies (`legion policy apply|list|show|delete|check`), API keys (`legion api-key create|list|revoke`),
//! tokens (`legion auth token|whoami`) and the audit trail (`legion audit list|verify`). Every call
//! carries the credential of `--api-key`/`LEGION_API_KEY`, else of `--token`/`LEGION_TOKEN`.
//!
//! Exit codes: 0 success; 1 a failed call (the gRPC code and message are printed on stderr), an I/O
//! error, or an audit trail that does not verify; 2 a followed task (`watch`, `submit --wait`) ended
//! other than `succeeded`; 64 bad usage or settings (an unreadable or malformed policy, chain or
//! schedule file included, and a cadence `schedule add` or `schedule preview` refuses).

pub mod args;
pub mod certs;
pub mod chain;
pub mod connect;
pub mod dead_letter;
pub mod error;
pub mod schedule;
pub mod security;
pub mod task;
#[cfg(test)]
mod testing;
pub mod tree;

use std::io::{Read, Write};

use crate::args::{CertsCommand, Cli, Command};
use crate::error::Error;

/// Runs a parsed command line, writing results to `out` and reading standard input for
/// `policy apply -`, `chain apply -` and `schedule add --file -`. Returns the exit code of a successful
/// run (0; 2 for a followed task that did not succeed; 1 for an audit trail that does not verify).
///
/// # Errors
/// [`Error`]; its [`Error::exit_code`] is the process exit code.
pub async fn run(cli: Cli, out: &mut impl Write) -> Result<u8, Error> {
    run_with_input(cli, std::io::stdin(), out).await
}

/// [`run`] with `stdin` in place of the process's standard input.
///
/// # Errors
/// As [`run`].
pub async fn run_with_input(cli: Cli, stdin: impl Read, out: &mut impl Write) -> Result<u8, Error> {
    let Cli { connection, command } = cli;
    let connect = || -> Result<connect::Clients, Error> {
        let target = connect::resolve(&connection, None, false)?;
        connect::clients(&target)
    };
    match command {
        Command::Certs { command: CertsCommand::Init { dir, executor_name } } => {
            certs::init(&dir, &executor_name, out)?;
            Ok(0)
        }
        Command::Certs { command: CertsCommand::Node { dir, name } } => {
            certs::node(&dir, &name, out)?;
            Ok(0)
        }
        Command::Task { command } => task::run(command, connect()?.tasks(), out).await,
        Command::DeadLetter { command } => dead_letter::run(command, connect()?.dead_letters(), out).await,
        Command::Chain { command } => chain::run(command, || Ok(connect()?.chains()), stdin, out).await,
        Command::Schedule { command } => schedule::run(command, || Ok(connect()?.schedules()), stdin, out).await,
        Command::Policy { command } => security::policy(command, &connect()?, stdin, out).await,
        Command::ApiKey { command } => security::api_key(command, &connect()?, out).await,
        Command::Auth { command } => security::auth(command, &connect()?, connection.api_key.as_ref(), out).await,
        Command::Audit { command } => security::audit(command, &connect()?, out).await,
    }
}
