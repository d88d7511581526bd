//! A supervisor for an executor that may crash, as Kubernetes restarts a crashed pod: a task of its own
//! watches the process every [`POLL_INTERVAL`] and, whenever it has exited, records its exit status and
//! starts the next one with the same settings ([`NodeLauncher::spawn`]: same node name, certificate
//! and spool). Used by the poison-message test, whose task aborts the executor on every delivery.
//!
//! Dropping the [`Supervisor`] stops the loop and kills the executor it runs; [`Supervisor::stop`]
//! stops the loop and hands the running executor back.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::env::Error;
use crate::nodes::{Node, NodeLauncher};

/// The raw wait status of a process killed by SIGKILL.
const SIGKILL: i32 = 9;

/// How often the supervisor looks at its process.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Supervisor failures.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A restart could not be started (port, settings file, spawn).
    #[error("cannot restart node {node}: {source}")]
    Spawn {
        /// The node name.
        node: String,
        /// The setup error.
        source: Error,
    },
    /// The executor died more often than the supervisor may restart it (a crash loop that is not
    /// the test's poison message, e.g. settings it refuses).
    #[error("node {node} exited {exits} times, more than the {max} restarts allowed; last exit {last}")]
    CrashLoop {
        /// The node name.
        node: String,
        /// How many times it exited.
        exits: usize,
        /// The restart cap.
        max: u32,
        /// The last exit status.
        last: String,
    },
    /// The loop is no longer attached to this handle (it was stopped already).
    #[error("the supervisor was stopped already")]
    Detached,
    /// The supervisor task panicked or was cancelled.
    #[error("supervisor task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A liveness probe: `GET http://<admin>/healthz` every `period`, each with `timeout`; after
/// `failure_threshold` failures in a row the process is killed (SIGKILL) and restarted. Failures count
/// once the process has answered once or `startup_grace` after its start, whichever comes first
/// (Kubernetes' start-up probe), so a slow start is not a failure but a process that hangs before it
/// ever answers is still killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Time between probes.
    pub period: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Failures in a row that kill the process.
    pub failure_threshold: u32,
    /// How long after its start a process that never answered is given before failures count.
    pub startup_grace: Duration,
}

impl Default for Liveness {
    /// Every 500 ms, 1 s per probe, killed after 2 failures in a row, 10 s of start-up grace.
    fn default() -> Self {
        Self {
            period: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            failure_threshold: 2,
            startup_grace: Duration::from_secs(10),
        }
    }
}

/// A running supervisor; see the module docs.
#[derive(Debug)]
#[must_use = "dropping the supervisor kills its executor"]
pub struct Supervisor {
    node: String,
    stop: watch::Sender<bool>,
    exits: Arc<Mutex<Vec<ExitStatus>>>,
    task: Option<JoinHandle<Result<Node, SupervisorError>>>,
}

impl Supervisor {
    /// Starts the first process of `launcher` and supervises it, restarting it at most `max_restarts`
    /// times.
    ///
    /// # Errors
    /// [`SupervisorError::Spawn`] when the first process cannot be started.
    pub fn start(launcher: NodeLauncher, max_restarts: u32) -> Result<Self, SupervisorError> {
        Self::start_with(launcher, max_restarts, None)
    }

    /// Like [`Supervisor::start`], and with `liveness` also kills and restarts a process that stops
    /// answering its `/healthz`.
    ///
    /// # Errors
    /// [`SupervisorError::Spawn`] when the first process cannot be started.
    pub fn start_with(
        mut launcher: NodeLauncher,
        max_restarts: u32,
        liveness: Option<Liveness>,
    ) -> Result<Self, SupervisorError> {
        let node = launcher.name().to_owned();
        let first = launcher.spawn().map_err(|source| SupervisorError::Spawn { node: node.clone(), source })?;
        let (stop, stopped) = watch::channel(false);
        let exits = Arc::new(Mutex::new(Vec::new()));
        let loop_state = Loop { launcher, max_restarts, liveness, stopped, exits: exits.clone() };
        let task = tokio::spawn(loop_state.run(first));
        Ok(Self { node, stop, exits, task: Some(task) })
    }

    /// The node name of every process it runs.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The exit statuses of the processes that died so far, in order.
    pub fn exits(&self) -> Vec<ExitStatus> {
        self.exits.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Whether the loop has ended (it failed: see [`Supervisor::stop`] for the error).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops supervising and returns the executor running now (it keeps running; drop it to kill it).
    ///
    /// # Errors
    /// [`SupervisorError`] when the loop had failed (a restart that could not start, a crash loop).
    pub async fn stop(mut self) -> Result<Node, SupervisorError> {
        // The receiver lives in the task; a send error means the task already ended.
        let _ = self.stop.send(true);
        let Some(task) = self.task.take() else { return Err(SupervisorError::Detached) };
        task.await?
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Aborting drops the task's future, and with it the node, which kills the executor.
            task.abort();
        }
    }
}

/// What the supervisor task owns.
struct Loop {
    launcher: NodeLauncher,
    max_restarts: u32,
    liveness: Option<Liveness>,
    stopped: watch::Receiver<bool>,
    exits: Arc<Mutex<Vec<ExitStatus>>>,
}

/// The liveness state of the current process.
#[derive(Debug)]
struct Probe {
    started: Instant,
    answered: bool,
    failures: u32,
    next: Option<Instant>,
}

impl Probe {
    fn new() -> Self {
        Self { started: Instant::now(), answered: false, failures: 0, next: None }
    }
}

impl Loop {
    async fn run(mut self, mut node: Node) -> Result<Node, SupervisorError> {
        let http = reqwest::Client::builder().no_proxy().build().ok();
        let mut probe = Probe::new();
        loop {
            if *self.stopped.borrow() {
                return Ok(node);
            }
            if let Some(status) = node.service().exited() {
                node = self.restart(status)?;
                probe = Probe::new();
                continue;
            }
            if let (Some(liveness), Some(http)) = (self.liveness, http.as_ref())
                && probe.next.is_none_or(|next| Instant::now() >= next)
            {
                probe.next = Some(Instant::now() + liveness.period);
                let url = format!("http://{}/healthz", node.admin());
                let alive =
                    http.get(&url).timeout(liveness.timeout).send().await.is_ok_and(|r| r.status().is_success());
                if alive {
                    probe.answered = true;
                    probe.failures = 0;
                } else if probe.answered || probe.started.elapsed() >= liveness.startup_grace {
                    probe.failures += 1;
                    if probe.failures >= liveness.failure_threshold {
                        eprintln!(
                            "supervisor: node {} failed {} liveness probes in a row; killing it",
                            self.launcher.name(),
                            probe.failures
                        );
                        // `kill` reaps the process; its status is SIGKILL's.
                        node.kill();
                        node = self.restart(ExitStatus::from_raw(SIGKILL))?;
                        probe = Probe::new();
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = self.stopped.changed() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// Records `status` and starts the next process, unless the restart cap is reached.
    fn restart(&mut self, status: ExitStatus) -> Result<Node, SupervisorError> {
        let count = {
            let mut exits = self.exits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            exits.push(status);
            exits.len()
        };
        let name = self.launcher.name().to_owned();
        if self.launcher.spawned().saturating_sub(1) >= self.max_restarts {
            return Err(SupervisorError::CrashLoop {
                node: name,
                exits: count,
                max: self.max_restarts,
                last: status.to_string(),
            });
        }
        eprintln!("supervisor: node {name} exited ({status}); restarting it");
        self.launcher.spawn().map_err(|source| SupervisorError::Spawn { node: name, source })
    }
}
