//! One-shot runs of a binary to its exit: the `legion` CLI, or a server expected to refuse its
//! settings. Same isolation as long-running children (see [`crate::process::command`]).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// One-shot run failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary is missing or could not be started.
    #[error(transparent)]
    Process(#[from] crate::process::Error),
    /// Waiting for the process failed.
    #[error("{name}: {source}")]
    Wait {
        /// The binary.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The process did not exit in time (it was killed).
    #[error("{name} {args} did not exit within {timeout:?}")]
    Timeout {
        /// The binary.
        name: String,
        /// Its arguments.
        args: String,
        /// The limit.
        timeout: Duration,
    },
}

/// What a finished process left.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

impl Output {
    /// The stdout lines that parse as JSON, in order.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout.lines().filter_map(|l| serde_json::from_str(l.trim()).ok()).collect()
    }
}

/// Runs binary `name` with `args` in `work_dir` until it exits, killing it after `timeout`.
///
/// # Errors
/// [`Error`] when it cannot start, cannot be awaited or outlives `timeout`.
pub async fn run(name: &str, work_dir: &Path, args: &[&str], timeout: Duration) -> Result<Output, Error> {
    let mut command = tokio::process::Command::from(crate::process::command(name, work_dir)?);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().map_err(|source| crate::process::Error::Spawn { name: name.to_owned(), source })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => Ok(Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Ok(Err(source)) => Err(Error::Wait { name: name.to_owned(), source }),
        Err(_) => Err(Error::Timeout { name: name.to_owned(), args: args.join(" "), timeout }),
    }
}
