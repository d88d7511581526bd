//! `legion-executor [--settings-dir DIR]... [--settings FILE]...`: runs an executor until SIGTERM or
//! SIGINT, then drains. Exit codes: 0 after a clean shutdown, 64 for bad settings or usage, 1 for
//! other failures.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use legion_common::settings::{Settings, Sources};

/// Legion executor: consumes tasks from RabbitMQ and runs the functions of its compiled-in extensions.
#[derive(Debug, Parser)]
#[command(name = "legion-executor", version, about)]
struct Cli {
    /// Directory of `*.json` settings files, merged in name order (repeatable).
    #[arg(long = "settings-dir", value_name = "DIR")]
    settings_dirs: Vec<PathBuf>,
    /// Settings file (repeatable; later files win).
    #[arg(long = "settings", value_name = "FILE")]
    settings_files: Vec<PathBuf>,
}

fn usage_exit() -> ExitCode {
    ExitCode::from(u8::try_from(legion_common::EXIT_USAGE).unwrap_or(64))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { usage_exit() } else { ExitCode::SUCCESS };
        }
    };
    let sources = Sources { dirs: cli.settings_dirs, files: cli.settings_files, ..Sources::default() };
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("legion-executor: {e}");
            return usage_exit();
        }
    };
    if let Err(e) = legion_common::telemetry::init(&settings.logging) {
        eprintln!("legion-executor: logging: {e}");
        return usage_exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("legion-executor: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let shutdown = legion_common::shutdown::on_signal();
        legion_executor::run(settings, shutdown).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<legion_executor::SettingsError>().is_some() => {
            tracing::error!(error = %e, "bad settings");
            eprintln!("legion-executor: {e}");
            usage_exit()
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "executor failed");
            eprintln!("legion-executor: {e:#}");
            ExitCode::FAILURE
        }
    }
}
