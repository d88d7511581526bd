//! The `main` of the executor binaries, shared so that `legion-executor` and `legion-executor-faults`
//! start, stop and exit the same way: `<binary> [--settings-dir DIR]... [--settings FILE]...` runs an
//! executor until SIGTERM or SIGINT, then drains. Exit codes: 0 after a clean shutdown, 64 for bad
//! settings or usage, 1 for other failures.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use legion_common::settings::{Settings, Sources};

use crate::extensions::Extension;

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

/// Runs the binary `name`: parses the command line, loads the settings, starts logging and runs
/// [`crate::run_extended`] with the extensions `extra` builds from the settings (none for
/// `legion-executor`) until SIGTERM or SIGINT.
pub fn main(name: &'static str, extra: fn(&Settings) -> Vec<Extension>) -> ExitCode {
    let cli = match Cli::command().name(name).try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
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
            eprintln!("{name}: {e}");
            return usage_exit();
        }
    };
    if let Err(e) = legion_common::telemetry::init(&settings.logging) {
        eprintln!("{name}: logging: {e}");
        return usage_exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let extensions = extra(&settings);
    let outcome = runtime.block_on(async move {
        let shutdown = legion_common::shutdown::on_signal();
        crate::run_extended(settings, extensions, shutdown).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<crate::SettingsError>().is_some() => {
            tracing::error!(error = %e, "bad settings");
            eprintln!("{name}: {e}");
            usage_exit()
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "executor failed");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
