//! A shared service stopped for a test ([`crate::postgres::PostgresOutage`],
//! [`crate::rabbit::RabbitOutage`]): the guard needs the exclusive [`ServiceLock`], stops the service,
//! and always starts it again: on [`Outage::end`], on `Drop` (so a panicking test never leaves the
//! service down) and on SIGTERM or SIGINT (nextest's timeout, Ctrl-C), which would end the process
//! without unwinding, before the process exits (code 130). The lock is borrowed, so it is released
//! only after the service is back.

use std::fmt::Display;
use std::process::{Command, ExitStatus};

use crate::lock::{Mode, ServiceLock};

/// A command of a service's tooling (`rabbitmqctl`, `pg_ctlcluster`) that could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command could not be started.
    #[error("cannot run {command}: {source}{hint}")]
    Spawn {
        /// The program and its arguments.
        command: String,
        /// What to check, appended to the message (may be empty).
        hint: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The command exited with an error.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The program and its arguments.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
}

/// Runs `program args` to completion and returns its stdout (lossy UTF-8). Blocking. `hint` is
/// appended to the message when the program cannot be started (e.g. where to install it).
///
/// # Errors
/// [`CommandError`].
pub fn run_command(program: &str, args: &[&str], hint: &'static str) -> Result<String, CommandError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program).args(args).output().map_err(|source| CommandError::Spawn {
        command: command.clone(),
        hint,
        source,
    })?;
    if !output.status.success() {
        return Err(CommandError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// How to stop and start one shared service; the `stop` and `restart` functions block.
#[derive(Debug)]
pub struct Service<E: 'static> {
    /// Its name in messages, lowercase (`postgresql`).
    pub name: &'static str,
    /// What an operator runs to start it by hand, e.g. "run `rabbitmqctl start_app`".
    pub start_hint: &'static str,
    /// The error for a lock that is not exclusive.
    pub not_exclusive: fn() -> E,
    /// Stops the service.
    pub stop: fn() -> Result<(), E>,
    /// Starts the service and waits until it accepts connections.
    pub restart: fn() -> Result<(), E>,
}

/// While this guard lives, its service is stopped; see the module docs.
#[derive(Debug)]
#[must_use = "dropping the guard starts the service again"]
pub struct Outage<'lock, E: Display + 'static> {
    _lock: &'lock ServiceLock,
    service: &'static Service<E>,
    ended: bool,
    watchdog: tokio::task::JoinHandle<()>,
}

impl<'lock, E: Display + Send + 'static> Outage<'lock, E> {
    /// Stops `service` (the services' own modules offer `begin`, which names it).
    ///
    /// # Errors
    /// `service.not_exclusive()` without the exclusive lock; what `service.stop` returns (the guard is
    /// dropped then, which starts the service again).
    pub async fn stop(lock: &'lock ServiceLock, service: &'static Service<E>) -> Result<Self, E> {
        if lock.mode() != Mode::Exclusive {
            return Err((service.not_exclusive)());
        }
        // Built before the stop, so that even a failed or interrupted stop is followed by a start.
        let guard = Self { _lock: lock, service, ended: false, watchdog: tokio::spawn(restart_on_signal(service)) };
        blocking(service.stop).await?;
        Ok(guard)
    }

    /// Starts the service and waits until it accepts connections.
    ///
    /// # Errors
    /// What `service.restart` returns.
    pub async fn end(mut self) -> Result<(), E> {
        self.watchdog.abort();
        self.ended = true;
        blocking(self.service.restart).await
    }
}

impl<E: Display + 'static> Drop for Outage<'_, E> {
    fn drop(&mut self) {
        self.watchdog.abort();
        if !self.ended
            && let Err(e) = (self.service.restart)()
        {
            left_stopped(self.service, &e);
        }
    }
}

/// Says loudly that `service` may still be stopped, and how to start it.
fn left_stopped<E>(service: &Service<E>, error: &dyn Display) {
    eprintln!("legion-tests: {} MAY BE LEFT STOPPED: {error}; {}", service.name.to_uppercase(), service.start_hint);
}

/// Waits for SIGTERM or SIGINT, starts `service` and exits the process.
async fn restart_on_signal<E: Display + Send + 'static>(service: &'static Service<E>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let name = service.name;
    eprintln!("legion-tests: signal during a {name} outage: starting {name} before exiting");
    if let Ok(Err(e)) = tokio::task::spawn_blocking(service.restart).await {
        left_stopped(service, &e);
    }
    std::process::exit(130);
}

/// Runs the blocking `f` on tokio's blocking pool; a panic in it is resumed here.
async fn blocking<E: Send + 'static>(f: fn() -> Result<(), E>) -> Result<(), E> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        // The closure panicked; the panic belongs to the test.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
