//! The real binaries as child processes: found next to the test executable, started with a settings
//! file, an isolated `HOME` and working directory, stdout and stderr in a log file, and killed
//! (SIGKILL) when the handle drops.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The command that builds every binary the tests start.
pub const BUILD_HINT: &str = "cargo build --workspace --bins";

/// Process failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary is not in the target dir.
    #[error("binary {name} not found at {path}: run `{BUILD_HINT}` before the end-to-end tests")]
    Missing {
        /// The binary name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The test executable's location is unknown.
    #[error("cannot locate the test executable: {0}")]
    CurrentExe(std::io::Error),
    /// The process could not be started.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// The process name.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The log file could not be created.
    #[error("cannot create log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The directory of the cargo profile the tests were built with (`target/debug`): the parent of the
/// `deps/` directory that holds the test executable.
///
/// # Errors
/// [`Error::CurrentExe`].
pub fn target_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
    let deps = exe.parent().ok_or_else(|| Error::CurrentExe(std::io::Error::other("no parent directory")))?;
    Ok(deps.parent().unwrap_or(deps).to_path_buf())
}

/// The path of binary `name` in [`target_dir`].
///
/// # Errors
/// [`Error::Missing`] naming [`BUILD_HINT`] when it is not built.
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    let path = target_dir()?.join(name);
    if path.is_file() { Ok(path) } else { Err(Error::Missing { name: name.to_owned(), path }) }
}

/// A command for binary `name` with the isolation every child gets: working directory and `HOME` set
/// to `work_dir` (so `./settings/` and `~/.legionio/` are empty), no inherited `LEGION_*` variables,
/// `NO_COLOR=1` for readable logs.
///
/// # Errors
/// [`Error::Missing`] when the binary is not built.
pub fn command(name: &str, work_dir: &Path) -> Result<Command, Error> {
    let mut command = Command::new(binary(name)?);
    command.current_dir(work_dir).env("HOME", work_dir).env("NO_COLOR", "1").stdin(Stdio::null());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("LEGION_") {
            command.env_remove(var);
        }
    }
    Ok(command)
}

/// A running long-lived process (control plane, executor, gateway).
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `command` with stdout and stderr appended to `log`. `name` labels it in messages.
    ///
    /// # Errors
    /// [`Error::Log`] or [`Error::Spawn`].
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self, Error> {
        let log_err = |source| Error::Log { path: log.to_path_buf(), source };
        let out = File::options().create(true).append(true).open(log).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let child =
            command.stdout(out).stderr(err).spawn().map_err(|source| Error::Spawn { name: name.to_owned(), source })?;
        Ok(Self { name: name.to_owned(), child: Some(child), log: log.to_path_buf() })
    }

    /// The label given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended, `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// `kill -<name> <pid>` (the crate forbids unsafe code, so no libc), e.g. `STOP` to freeze the
    /// process and `CONT` to let it run on; false when the process is gone.
    pub fn signal(&mut self, name: &str) -> bool {
        let Some(pid) = self.pid() else { return false };
        if self.exited().is_some() {
            return false;
        }
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Kills the process with SIGKILL and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process already exited; wait() reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process as an operator would: SIGTERM (sent with `kill -TERM`, as the crate forbids
    /// unsafe code), then waits up to `grace` for it to exit, polling every 20 ms. Returns its exit
    /// status when it exited by itself; `None` when it was not running, or outlived `grace` and was
    /// killed with SIGKILL (and reaped). Idempotent.
    pub async fn terminate(&mut self, grace: std::time::Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = std::time::Instant::now() + grace;
        while signalled && std::time::Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(_) => break,
            }
        }
        // Fails only when the process already exited; wait() reaps it either way.
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of the file at `path` (at most the last 256 KiB are read); a note when it
/// cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 256 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => last_lines(&text, lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// The last `n` lines of `text`, joined with newlines.
pub fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// The file name of `path` for messages.
pub fn file_name(path: &Path) -> &str {
    path.file_name().and_then(OsStr::to_str).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn tail_reads_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, (1..=100).map(|i| format!("line {i}\n")).collect::<String>()).expect("write");
        assert_eq!(tail(&path, 2), "line 99\nline 100");
        assert!(tail(&dir.path().join("missing.log"), 2).starts_with("(cannot read"));
    }

    #[test]
    fn a_missing_binary_names_the_build_command() {
        let err = binary("legion-no-such-binary").expect_err("missing");
        assert!(err.to_string().contains(BUILD_HINT), "{err}");
    }

    /// Waits up to 5 s for a test shell to print `ready` (its traps are set by then).
    async fn until_ready(log: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !tail(log, 1).contains("ready") && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn terminate_sends_sigterm_and_kills_what_ignores_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new("sh");
        command.args(["-c", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done"]);
        let mut graceful = Service::spawn("graceful", command, &dir.path().join("g.log")).expect("spawn");
        until_ready(&dir.path().join("g.log")).await;
        let status = graceful.terminate(std::time::Duration::from_secs(5)).await.expect("exits on SIGTERM");
        assert_eq!(status.code(), Some(3), "the TERM trap ran");
        assert!(graceful.terminate(std::time::Duration::from_secs(1)).await.is_none(), "idempotent");

        let mut command = Command::new("sh");
        command.args(["-c", "trap '' TERM; echo ready; exec sleep 30"]);
        let mut stubborn = Service::spawn("stubborn", command, &dir.path().join("s.log")).expect("spawn");
        let pid = stubborn.pid().expect("pid");
        // SIGTERM must arrive after the trap is set, or the shell dies of it.
        until_ready(&dir.path().join("s.log")).await;
        assert!(stubborn.terminate(std::time::Duration::from_millis(300)).await.is_none(), "killed after the grace");
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} must be gone");
    }

    #[test]
    fn a_service_is_killed_on_drop_and_logs_its_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sh.log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo started; echo oops >&2; exec sleep 30"]);
        let mut service = Service::spawn("sh", command, &log).expect("spawn");
        assert!(service.exited().is_none());
        let pid = service.pid().expect("pid");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !tail(&log, 5).contains("oops") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(service.log_tail(5), "started\noops");
        drop(service);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process {pid} must be gone");
    }
}
