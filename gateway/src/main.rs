//! `legion-gateway`: the REST gateway binary. See the library docs for what it serves.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use legion_common::settings::Sources;
use legion_common::{EXIT_USAGE, Settings};

/// Legion's REST gateway: JSON over HTTP in front of the control plane's gRPC API.
#[derive(Debug, Parser)]
#[command(name = "legion-gateway", version, about)]
struct Args {
    /// A directory of `*.json` settings files (merged in name order); repeatable.
    #[arg(long = "settings-dir", value_name = "DIR")]
    settings_dirs: Vec<PathBuf>,
    /// A settings file, merged after the directories; repeatable.
    #[arg(long = "settings", value_name = "FILE")]
    settings_files: Vec<PathBuf>,
}

fn usage_exit() -> ExitCode {
    ExitCode::from(u8::try_from(EXIT_USAGE).unwrap_or(64))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { usage_exit() } else { ExitCode::SUCCESS };
        }
    };
    let sources = Sources { dirs: args.settings_dirs, files: args.settings_files, ..Sources::default() };
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("legion-gateway: {e}");
            return usage_exit();
        }
    };
    if let Err(e) = legion_common::telemetry::init(&settings.logging) {
        eprintln!("legion-gateway: logging: {e}");
        return usage_exit();
    }
    legion_common::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("legion-gateway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = legion_common::shutdown::on_signal();
        legion_gateway::run(settings, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed");
            eprintln!("legion-gateway: {e}");
            if e.downcast_ref::<legion_gateway::Error>().is_some_and(legion_gateway::Error::is_settings) {
                usage_exit()
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
