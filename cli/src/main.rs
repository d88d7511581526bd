//! `legion`: Legion's operator CLI. See the library docs for the commands and exit codes.

use std::process::ExitCode;

use clap::Parser;
use legion_cli::args::Cli;
use legion_common::EXIT_USAGE;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(u8::try_from(EXIT_USAGE).unwrap_or(64))
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    legion_common::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("legion: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(legion_cli::run(cli, &mut stdout)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("legion: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
