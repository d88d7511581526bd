//! `legion-executor [--settings-dir DIR]... [--settings FILE]...`: runs an executor until SIGTERM or
//! SIGINT, then drains. Exit codes: 0 after a clean shutdown, 64 for bad settings or usage, 1 for
//! other failures. It loads only the built-in extensions, never the test-only `fault` extension, even
//! when the `fault-injection` feature is compiled in.

use std::process::ExitCode;

fn main() -> ExitCode {
    legion_executor::cli::main("legion-executor", |_| Vec::new())
}
