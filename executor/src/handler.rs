//! One delivery, from the broker message to its settlement, following docs/architecture.md
//! ("Delivery protocol"): decode the [`TaskMessage`]; `StartTask`; on `DROP` ack; on `RUN(attempt)`
//! run it in the pool, report `CompleteTask`, and ack only once the completion was answered (accepted
//! or stale) or is on disk in the spool.
//!
//! A delivery of a message whose `(task_id, dispatch)` is already in flight here (typically the
//! broker's redelivery after the connection dropped while the attempt kept running) neither starts nor
//! runs: it is attached to the attempt in flight and settled like it, so that the redelivery is acked
//! once that attempt's completion is answered. The rule and its races are in [`crate::deliveries`].
//!
//! Settlements:
//! - malformed message → reject without requeue, so the broker dead-letters it;
//! - a completion the control plane could not take for `executor.spool_after_ms` (transient errors)
//!   and that is now on disk in the spool → ack (DESIGN.md section 5, step 4);
//! - a start or completion the control plane refuses (not a transient error, which the reporter
//!   retries or spools) → requeue after [`REQUEUE_DELAY`]: the redelivery is fenced by the control plane, which
//!   dead-letters a task past `transport.delivery_limit` takeovers;
//! - hard stop (shutdown grace over) → requeue at once, abandoning the runner;
//! - a function this executor does not have → the attempt fails as `FAILURE_KIND_REJECTED`.

use std::sync::Arc;
use std::time::Duration;

use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use legion_common::broker::TaskMessage;
use legion_proto::v1::{Completion, FailureKind, StartDecision, StartItem, completion};
use tokio_util::sync::CancellationToken;

use crate::deliveries::{Claim, Deliveries};
use crate::extensions::Registry;
use crate::metrics::{Metrics, label};
use crate::pool::{Job, Outcome, Pool};
use crate::reporter::{self, Completed, Reporter};

/// How long a delivery is held before it is requeued after a refused report, so that a control
/// plane that keeps refusing does not make the message spin.
pub const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// What to tell the broker about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Processed (or dropped by the control plane): ack.
    Ack,
    /// Unprocessable: reject without requeue (dead-lettered).
    DeadLetter,
    /// Requeue now (shutdown).
    Requeue,
    /// Requeue after [`REQUEUE_DELAY`] (a refused report).
    RequeueLater,
}

/// Processes deliveries. Shared as `Arc` by every delivery task.
pub struct Handler {
    registry: Arc<Registry>,
    pool: Pool,
    reporter: Reporter,
    metrics: Metrics,
    default_timeout: Duration,
    hard_stop: CancellationToken,
    drain: CancellationToken,
    deliveries: Deliveries<Settlement>,
}

/// Decrements the in-flight gauge when an attempt leaves the pool, however it leaves.
struct InFlight(Metrics);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl Handler {
    /// A handler running functions of `registry` in `pool`, reporting through `reporter`. Messages
    /// with `timeout_ms` 0 get `default_timeout` (`limits.default_timeout_ms`). Once `hard_stop` is
    /// cancelled, unfinished deliveries are requeued and their runners aborted.
    pub fn new(
        registry: Arc<Registry>,
        pool: Pool,
        reporter: Reporter,
        metrics: Metrics,
        default_timeout: Duration,
        hard_stop: CancellationToken,
    ) -> Self {
        Self {
            registry,
            pool,
            reporter,
            metrics,
            default_timeout,
            hard_stop,
            drain: CancellationToken::new(),
            deliveries: Deliveries::default(),
        }
    }

    /// The same handler with `drain`, cancelled when the executor starts draining: a delivery still
    /// waiting for its `StartTask` answer then is handed back to the broker at once (nothing of it ran
    /// here), instead of holding the drain until the control plane answers or the grace runs out.
    pub fn with_drain(mut self, drain: CancellationToken) -> Self {
        self.drain = drain;
        self
    }

    /// Processes one delivery and settles it with the broker.
    pub async fn handle(self: Arc<Self>, delivery: Delivery, extension: Arc<str>) {
        self.metrics.deliveries.get_or_create(&label("extension", &*extension)).inc();
        let settlement = self.process(&delivery.data, delivery.redelivered).await;
        self.settle(&delivery.acker, settlement, delivery.delivery_tag).await;
    }

    /// Settles a delivery: ack, reject or nack with requeue. A failure is logged, not returned: the
    /// broker redelivers an unsettled message when the channel closes, and the control plane fences
    /// the redelivery.
    pub async fn settle(&self, acker: &Acker, settlement: Settlement, delivery_tag: u64) {
        let result = match settlement {
            Settlement::Ack => acker.ack(BasicAckOptions::default()).await,
            Settlement::DeadLetter => acker.reject(BasicRejectOptions { requeue: false }).await,
            Settlement::Requeue | Settlement::RequeueLater => {
                if settlement == Settlement::RequeueLater {
                    tokio::select! {
                        () = tokio::time::sleep(REQUEUE_DELAY) => {}
                        () = self.hard_stop.cancelled() => {}
                    }
                }
                self.metrics.requeued.inc();
                acker.nack(BasicNackOptions { requeue: true, multiple: false }).await
            }
        };
        match result {
            Ok(true) => {}
            Ok(false) => tracing::debug!(delivery_tag, ?settlement, "delivery channel gone; the broker redelivers it"),
            Err(e) => {
                tracing::warn!(delivery_tag, ?settlement, error = %e, "settling delivery failed; the broker redelivers it")
            }
        }
    }

    /// Decodes, starts, runs and completes one message body; returns how to settle it. A body whose
    /// `(task_id, dispatch)` is already in flight here is not started again: it waits for the delivery
    /// in flight and returns its settlement (see [`crate::deliveries`]).
    pub async fn process(&self, body: &[u8], redelivered: bool) -> Settlement {
        let message: TaskMessage = match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.malformed.inc();
                tracing::warn!(error = %e, bytes = body.len(), "malformed task message, dead-lettering it");
                return Settlement::DeadLetter;
            }
        };
        loop {
            match self.deliveries.claim((message.task_id, message.dispatch)) {
                Claim::Owner(owner) => {
                    let settlement = self.start_and_run(&message, redelivered).await;
                    let attached = owner.finish(settlement);
                    if attached > 0 {
                        tracing::info!(
                            task_id = %message.task_id, dispatch = message.dispatch, attached, ?settlement,
                            "settling the deliveries attached to the attempt"
                        );
                    }
                    return settlement;
                }
                Claim::Attached(settled) => {
                    self.metrics.attached.inc();
                    tracing::info!(
                        task_id = %message.task_id, dispatch = message.dispatch, redelivered,
                        "task already in flight on this executor, attaching the delivery to it instead of running it again"
                    );
                    match settled.await {
                        Ok(settlement) => return settlement,
                        // The owner ended without a settlement: go through StartTask ourselves.
                        Err(_) => continue,
                    }
                }
            }
        }
    }

    /// Starts, runs and completes a decoded message; returns how to settle it.
    async fn start_and_run(&self, message: &TaskMessage, redelivered: bool) -> Settlement {
        let task_id = message.task_id.to_string();
        let item = StartItem { task_id: task_id.clone(), dispatch: message.dispatch, redelivered };
        let start = tokio::select! {
            biased;
            () = self.hard_stop.cancelled() => return Settlement::Requeue,
            () = self.drain.cancelled() => {
                tracing::debug!(%task_id, "draining before the start was answered, handing the delivery back");
                return Settlement::Requeue;
            }
            start = self.reporter.start(item) => start,
        };
        let attempt = match start {
            Ok(result) => match result.decision() {
                StartDecision::Run => {
                    self.metrics.starts.get_or_create(&label("decision", "run")).inc();
                    result.attempt
                }
                StartDecision::Drop => {
                    self.metrics.starts.get_or_create(&label("decision", "drop")).inc();
                    tracing::debug!(%task_id, dispatch = message.dispatch, reason = %result.reason, "task dropped");
                    return Settlement::Ack;
                }
                StartDecision::Refuse => {
                    self.metrics.starts.get_or_create(&label("decision", "refuse")).inc();
                    tracing::warn!(%task_id, reason = %result.reason, "control plane refused the start, requeueing");
                    return Settlement::RequeueLater;
                }
                StartDecision::Unspecified => {
                    self.metrics.starts.get_or_create(&label("decision", "error")).inc();
                    tracing::error!(%task_id, "control plane answered start without a decision, requeueing");
                    return Settlement::RequeueLater;
                }
            },
            Err(e) => return self.refused("start", &task_id, &e),
        };
        let outcome = self.run(message, attempt).await;
        let Some((outcome, duration)) = outcome else { return Settlement::Requeue };
        self.metrics.runs.get_or_create(&label("outcome", outcome.label())).inc();
        self.metrics.run_duration.observe(duration.as_secs_f64());
        tracing::debug!(%task_id, attempt, outcome = outcome.label(), duration_ms = duration.as_millis(), "attempt finished");
        let completion = Completion {
            task_id,
            attempt,
            outcome: Some(match outcome {
                Outcome::Success(bytes) => completion::Outcome::ResultJson(bytes),
                Outcome::Failure { kind, message } => {
                    completion::Outcome::Failure(legion_proto::v1::Failure { kind: kind as i32, message })
                }
            }),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        };
        self.complete(completion).await
    }

    /// Runs the attempt; `None` on hard stop.
    async fn run(&self, message: &TaskMessage, attempt: u32) -> Option<(Outcome, Duration)> {
        let Some(function) = self.registry.get(&message.function) else {
            let reason = format!("function {} is not loaded on this executor", message.function);
            return Some((Outcome::failure(FailureKind::Rejected, reason), Duration::ZERO));
        };
        let timeout = match message.timeout_ms {
            0 => self.default_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let job = Job { task_id: message.task_id, attempt, function, args: message.args.clone(), timeout };
        self.metrics.in_flight.inc();
        let _in_flight = InFlight(self.metrics.clone());
        tokio::select! {
            biased;
            () = self.hard_stop.cancelled() => None,
            finished = self.pool.run(job) => Some((finished.outcome, finished.duration)),
        }
    }

    /// Reports the completion; a refused result is reported once more as a failure naming the refusal.
    async fn complete(&self, mut completion: Completion) -> Settlement {
        loop {
            let answer = tokio::select! {
                biased;
                () = self.hard_stop.cancelled() => return Settlement::Requeue,
                answer = self.reporter.complete(completion.clone()) => answer,
            };
            match answer {
                Ok(Completed::Answered(ack)) => {
                    if !ack.accepted {
                        tracing::debug!(task_id = %ack.task_id, attempt = completion.attempt, reason = %ack.reason, "completion stale");
                    }
                    return Settlement::Ack;
                }
                Ok(Completed::Spooled { task_id }) => {
                    // On disk in the spool, which replays it: the message may go (DESIGN.md section 5, step 4).
                    tracing::debug!(%task_id, attempt = completion.attempt, "completion spooled, acking the message");
                    return Settlement::Ack;
                }
                Err(reporter::Error::Refused { message, .. })
                    if matches!(completion.outcome, Some(completion::Outcome::ResultJson(_))) =>
                {
                    tracing::warn!(task_id = %completion.task_id, error = %message, "control plane refused the result, reporting a failure instead");
                    completion.outcome = Some(completion::Outcome::Failure(legion_proto::v1::Failure {
                        kind: FailureKind::Error as i32,
                        message: format!("control plane refused the result: {message}"),
                    }));
                }
                Err(e) => return self.refused("completion", &completion.task_id, &e),
            }
        }
    }

    fn refused(&self, what: &'static str, task_id: &str, error: &reporter::Error) -> Settlement {
        if what == "start" {
            self.metrics.starts.get_or_create(&label("decision", "error")).inc();
        }
        if matches!(error, reporter::Error::Closed) {
            return Settlement::Requeue;
        }
        tracing::error!(%task_id, report = what, error = %error, "report refused, requeueing the message");
        Settlement::RequeueLater
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
