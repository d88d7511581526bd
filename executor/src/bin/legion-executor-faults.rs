//! `legion-executor-faults [--settings-dir DIR]... [--settings FILE]...`: exactly `legion-executor`
//! (same settings, signals and exit codes), plus the test-only `fault` extension
//! (`fault.process.abort`, `fault.process.hang`, `fault.result.oversize`) for end-to-end fault tests.
//! Built only with the cargo feature `fault-injection`; never deploy it.

use std::process::ExitCode;

fn main() -> ExitCode {
    legion_executor::cli::main("legion-executor-faults", |settings| {
        vec![legion_executor::extensions::fault::extension(settings.limits.max_result_bytes)]
    })
}
