//! The heartbeat loop: every `executor.heartbeat_ms` (or the interval the control plane asked for at
//! registration) it sends `Heartbeat{name, running, free_slots, draining, extensions, stopped}` and applies the
//! answer: it aborts the attempts named in `abort`, each a `(task_id, attempt)` pair, and only those
//! (their completion, the failure `aborted`, is then stale at the control plane and the message is
//! acked), and publishes `disabled_extensions` to the consumer, which stops or resumes consuming their
//! queues.
//!
//! The last heartbeat of a node, after its drain ([`Heartbeat::beat_stopped`]), carries `stopped:
//! true`: the control plane then removes the node. No other heartbeat does.
//!
//! A failed heartbeat is logged and the next one is sent on schedule; the control plane declares the
//! node lost only after `control_plane.node_lease_ms` of silence. A `NOT_FOUND` answer (the control
//! plane does not know the node) makes the node register again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use legion_proto::v1::{HeartbeatRequest, HeartbeatResponse, RegisterNodeRequest, RunningAttempt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::client::ControlPlane;
use crate::pool::Pool;
use crate::state::NodeState;

/// Sends heartbeats and applies their answers. Shared as `Arc`.
pub struct Heartbeat {
    control_plane: Arc<dyn ControlPlane>,
    registration: RegisterNodeRequest,
    pool: Pool,
    state: Arc<NodeState>,
    disabled: watch::Sender<BTreeSet<String>>,
    interval: Duration,
}

impl Heartbeat {
    /// A heartbeat for the node registered with `registration`, every `interval`.
    pub fn new(
        control_plane: Arc<dyn ControlPlane>,
        registration: RegisterNodeRequest,
        pool: Pool,
        state: Arc<NodeState>,
        disabled: watch::Sender<BTreeSet<String>>,
        interval: Duration,
    ) -> Self {
        Self { control_plane, registration, pool, state, disabled, interval }
    }

    /// The heartbeat as of now.
    pub fn request(&self) -> HeartbeatRequest {
        let mut running: Vec<RunningAttempt> = self
            .pool
            .running()
            .into_iter()
            .map(|(task_id, attempt)| RunningAttempt { task_id: task_id.to_string(), attempt })
            .collect();
        running.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        HeartbeatRequest {
            name: self.registration.name.clone(),
            running,
            free_slots: u32::try_from(self.pool.free_slots()).unwrap_or(u32::MAX),
            draining: self.state.draining(),
            extensions: self.state.extension_statuses(),
            stopped: false,
        }
    }

    /// Sends one heartbeat and applies the answer.
    ///
    /// # Errors
    /// The call's status.
    pub async fn beat(&self) -> Result<(), Status> {
        let answer = self.send(self.request()).await?;
        match answer {
            Ok(response) => {
                self.apply(&response);
                Ok(())
            }
            Err(status) if status.code() == Code::NotFound => {
                tracing::warn!(node = %self.registration.name, "control plane does not know this node, registering again");
                self.control_plane.register(self.registration.clone()).await.map(|_| ())
            }
            Err(status) => Err(status),
        }
    }

    /// Sends the node's last heartbeat, `stopped: true`, once the drain is over (every in-flight task
    /// finished or was requeued). The answer is not applied: nothing runs any more.
    ///
    /// # Errors
    /// The call's status.
    pub async fn beat_stopped(&self) -> Result<(), Status> {
        let request = HeartbeatRequest { stopped: true, ..self.request() };
        self.send(request).await?.map(|_| ())
    }

    /// One `Heartbeat` call, bounded by the interval (at least 1 s) as its gRPC deadline, and by that
    /// plus a second here for a client that does not enforce it.
    async fn send(&self, request: HeartbeatRequest) -> Result<Result<HeartbeatResponse, Status>, Status> {
        let deadline = self.interval.max(Duration::from_secs(1));
        tokio::time::timeout(deadline + Duration::from_secs(1), self.control_plane.heartbeat(request, deadline))
            .await
            .map_err(|_| Status::deadline_exceeded("heartbeat took longer than the heartbeat interval"))
    }

    /// Applies a heartbeat answer: aborts and disabled extensions. Each entry of `abort` names one
    /// `(task_id, attempt)`: exactly that attempt is aborted, never another attempt of the same task
    /// (after a takeover, the stale attempt and the current one may both have run here).
    pub fn apply(&self, response: &HeartbeatResponse) {
        for named in &response.abort {
            match Uuid::parse_str(&named.task_id) {
                Ok(task_id) => {
                    if self.pool.abort(task_id, named.attempt) {
                        tracing::info!(%task_id, attempt = named.attempt, "aborting runner at the control plane's request");
                    } else {
                        tracing::debug!(%task_id, attempt = named.attempt, "abort for an attempt not running here");
                    }
                }
                Err(_) => tracing::warn!(task_id = %named.task_id, "control plane asked to abort a malformed task id"),
            }
        }
        let disabled: BTreeSet<String> = response.disabled_extensions.iter().cloned().collect();
        self.disabled.send_if_modified(|current| {
            if *current == disabled {
                return false;
            }
            *current = disabled;
            true
        });
    }

    /// Beats every interval, and at once when an extension's state changes (consuming started, the
    /// broker lost, draining), until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
                () = self.state.changed() => {}
            }
            if let Err(status) = self.beat().await {
                tracing::warn!(node = %self.registration.name, code = ?status.code(), error = %status.message(), "heartbeat failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use legion_common::admin::Readiness;
    use legion_proto::v1::ExtensionState;

    use super::*;
    use crate::extensions::core::Sleep;
    use crate::fake::Fake;
    use crate::pool::{ABORTED, Job, Outcome};

    fn heartbeat(fake: Arc<Fake>, pool: Pool) -> (Heartbeat, watch::Receiver<BTreeSet<String>>) {
        let state = Arc::new(NodeState::new(&["core".into(), "http".into()], Readiness::default()));
        state.set_extension("core", ExtensionState::Running);
        let (tx, rx) = watch::channel(BTreeSet::new());
        let registration = RegisterNodeRequest { name: "exec-1".into(), ..RegisterNodeRequest::default() };
        (Heartbeat::new(fake, registration, pool, state, tx, Duration::from_millis(20)), rx)
    }

    #[tokio::test]
    async fn heartbeats_carry_running_attempts_and_extension_states() {
        let fake = Arc::new(Fake::default());
        let pool = Pool::new(3, 1024);
        let (hb, _rx) = heartbeat(fake.clone(), pool.clone());
        let task_id = Uuid::now_v7();
        let run = tokio::spawn({
            let pool = pool.clone();
            async move {
                let job = Job {
                    task_id,
                    attempt: 2,
                    function: Arc::new(Sleep),
                    args: serde_json::json!({"ms": 60_000}),
                    timeout: Duration::from_secs(120),
                };
                pool.run(job).await
            }
        });
        while pool.running().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let request = hb.request();
        assert_eq!(request.name, "exec-1");
        assert_eq!(request.running, vec![RunningAttempt { task_id: task_id.to_string(), attempt: 2 }]);
        assert_eq!(request.free_slots, 2);
        assert!(!request.draining);
        let states: Vec<(String, ExtensionState)> =
            request.extensions.iter().map(|e| (e.name.clone(), e.state())).collect();
        assert_eq!(states, vec![("core".into(), ExtensionState::Running), ("http".into(), ExtensionState::Loaded)]);

        // The answer aborts the runner; its outcome is the failure `aborted`.
        fake.abort.lock().expect("lock").push(RunningAttempt { task_id: task_id.to_string(), attempt: 2 });
        hb.beat().await.expect("beat");
        let done = run.await.expect("join");
        assert_eq!(done.outcome, Outcome::failure(legion_proto::v1::FailureKind::Error, ABORTED));
    }

    fn sleep_forever(pool: &Pool, task_id: Uuid, attempt: u32) -> tokio::task::JoinHandle<crate::pool::Finished> {
        let pool = pool.clone();
        tokio::spawn(async move {
            let job = Job {
                task_id,
                attempt,
                function: Arc::new(Sleep),
                args: serde_json::json!({"ms": 60_000}),
                timeout: Duration::from_secs(120),
            };
            pool.run(job).await
        })
    }

    /// Regression (operator repro): after a takeover on the same node, the abort meant for the stale
    /// attempt 1 killed attempt 2, and the task ended `failed: aborted`.
    #[tokio::test]
    async fn an_abort_for_a_stale_attempt_spares_the_current_one() {
        let fake = Arc::new(Fake::default());
        let pool = Pool::new(3, 1024);
        let (hb, _rx) = heartbeat(fake.clone(), pool.clone());
        let task_id = Uuid::now_v7();
        let stale = sleep_forever(&pool, task_id, 1);
        let current = sleep_forever(&pool, task_id, 2);
        while pool.running().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fake.abort.lock().expect("lock").push(RunningAttempt { task_id: task_id.to_string(), attempt: 1 });
        hb.beat().await.expect("beat");
        assert_eq!(stale.await.expect("join").outcome.label(), "aborted");
        assert_eq!(hb.request().running, vec![RunningAttempt { task_id: task_id.to_string(), attempt: 2 }]);
        assert!(!current.is_finished(), "attempt 2 keeps running");
        // An abort naming an attempt that is not running here changes nothing.
        fake.abort.lock().expect("lock").push(RunningAttempt { task_id: task_id.to_string(), attempt: 3 });
        hb.beat().await.expect("beat");
        assert_eq!(pool.running(), vec![(task_id, 2)]);
        current.abort();
    }

    #[tokio::test]
    async fn only_the_final_heartbeat_says_stopped() {
        let fake = Arc::new(Fake::default());
        let (hb, _rx) = heartbeat(fake.clone(), Pool::new(1, 1024));
        hb.beat().await.expect("beat");
        assert!(!hb.request().stopped);
        hb.beat_stopped().await.expect("final beat");
        let beats = fake.heartbeats.lock().expect("lock").clone();
        assert_eq!(beats.iter().map(|b| b.stopped).collect::<Vec<_>>(), vec![false, true]);
        assert_eq!(beats[1].name, "exec-1");
    }

    #[tokio::test]
    async fn disabled_extensions_are_published_once_per_change() {
        let fake = Arc::new(Fake::default());
        let (hb, mut rx) = heartbeat(fake.clone(), Pool::new(1, 1024));
        fake.disabled.lock().expect("lock").push("http".into());
        hb.beat().await.expect("beat");
        assert!(rx.has_changed().expect("open"));
        assert_eq!(*rx.borrow_and_update(), BTreeSet::from(["http".to_owned()]));
        hb.beat().await.expect("beat");
        assert!(!rx.has_changed().expect("open"), "no change, no wake-up");
        fake.disabled.lock().expect("lock").clear();
        hb.beat().await.expect("beat");
        assert!(rx.borrow_and_update().is_empty());
    }

    #[tokio::test]
    async fn the_loop_beats_until_stopped() {
        let fake = Arc::new(Fake::default());
        let (hb, _rx) = heartbeat(fake.clone(), Pool::new(1, 1024));
        let stop = CancellationToken::new();
        let task = tokio::spawn(Arc::new(hb).run(stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while fake.heartbeats.lock().expect("lock").len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "fewer than 3 heartbeats at a 20 ms interval");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        task.await.expect("join");
        let beats = fake.heartbeats.lock().expect("lock").len();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(fake.heartbeats.lock().expect("lock").len(), beats, "no heartbeat after stop");
    }
}
