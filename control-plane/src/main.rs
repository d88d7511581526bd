//! `legion-control-plane [--settings-dir DIR]... [--settings FILE]... [migrate]`
//!
//! Without a subcommand: applies the migrations and serves until SIGTERM or SIGINT, then drains.
//! `migrate` applies the migrations and exits. Bad settings or usage exit 64 with a message on stderr;
//! logs go to stderr. The hidden `sandbox --memory-bytes N --max-output-bytes N` serves transformation
//! evaluations for the control plane's sandbox pool (`chains::sandbox`), without loading settings.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use legion_common::settings::Sources;
use legion_common::{EXIT_USAGE, Settings};

/// The Legion control plane: gRPC API, PostgreSQL state and the outbox publisher.
#[derive(Debug, Parser)]
#[command(name = "legion-control-plane", version, about)]
struct Cli {
    /// A directory of `*.json` settings files, merged in name order; repeatable, applied in order.
    #[arg(long = "settings-dir", value_name = "DIR", global = true)]
    settings_dirs: Vec<PathBuf>,
    /// A JSON settings file; repeatable, applied in order after the directories.
    #[arg(long = "settings", value_name = "FILE", global = true)]
    settings_files: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply the database migrations and exit.
    Migrate,
    /// Serve transformation evaluations on stdin/stdout (internal: started by the control plane's
    /// transformation sandbox; reads no settings).
    #[command(hide = true)]
    Sandbox {
        /// RLIMIT_AS of this process, in bytes.
        #[arg(long = "memory-bytes", value_name = "N")]
        memory_bytes: u64,
        /// Largest transformation output, serialized as JSON, in bytes.
        #[arg(long = "max-output-bytes", value_name = "N")]
        max_output_bytes: usize,
    },
}

fn usage_exit() -> ExitCode {
    ExitCode::from(u8::try_from(EXIT_USAGE).unwrap_or(64))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return usage_exit();
        }
    };
    // The sandbox needs no settings: it must not read settings files or start telemetry.
    if let Some(Command::Sandbox { memory_bytes, max_output_bytes }) = cli.command {
        return legion_control_plane::chains::sandbox::serve_stdio(memory_bytes, max_output_bytes);
    }
    let sources = Sources { dirs: cli.settings_dirs, files: cli.settings_files, ..Sources::default() };
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("legion-control-plane: {e}");
            return usage_exit();
        }
    };
    legion_common::install_crypto_provider();
    // TLS material is checked before anything starts: a key that does not match its certificate, or a
    // file that is not PEM, is a settings error (exit 64) naming tls.key or tls.cert.
    if cli.command.is_none()
        && let Err(e) = legion_control_plane::check_settings(&settings)
    {
        eprintln!("legion-control-plane: {e}");
        return usage_exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("legion-control-plane: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if let Err(e) = legion_common::telemetry::init(&settings.logging) {
            eprintln!("legion-control-plane: invalid logging settings: {e}");
            return usage_exit();
        }
        let result = match cli.command {
            Some(Command::Migrate) => {
                let shutdown = legion_common::shutdown::on_signal();
                match legion_control_plane::migrate(&settings, &shutdown).await {
                    Ok(pool) => {
                        pool.close().await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Some(Command::Sandbox { .. }) => Ok(()),
            None => legion_control_plane::run(settings, legion_common::shutdown::on_signal()).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "control plane failed");
                eprintln!("legion-control-plane: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
