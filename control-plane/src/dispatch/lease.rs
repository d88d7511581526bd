//! The lease sweeper (DESIGN.md section 5, item 6): a node silent for `control_plane.node_lease_ms` is
//! `lost`, and in the same transaction its running attempts are marked `lost` and their tasks dispatched
//! again (or dead-lettered past `transport.delivery_limit`).
//!
//! "Silent" means the node could have called and did not. Every call of a node (RegisterNode,
//! Heartbeat, StartTask, CompleteTask) refreshes its `last_heartbeat` and makes a lost node `active`
//! again. While the control plane itself was down or could not reach PostgreSQL, no node could call,
//! so the sweeper declares no node lost until it has been able to listen to nodes for a whole lease:
//! [`LeaseSettings::lease`] after the start of the process (its gRPC listener), and again after every
//! sweep that found the database unreachable. A node's attempts are swept once per loss: only nodes that
//! become `lost` in a sweep have their attempts recovered, in that sweep.
//!
//! Each sweep also enforces the attempt deadline ([`crate::delivery::deadline`]): a `running` attempt
//! that started more than its task's `timeout_ms` plus the lease ago ends `timed_out`, whatever happened
//! to its executor, in batches of [`DEADLINE_BATCH`]. The same grace applies: executors may hold
//! completions in their spool while the control plane was down, and must be given a lease to deliver
//! them before their attempts are declared overdue.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::store::{self, Expiry, Store};

/// Overdue attempts ended per transaction; a full batch is followed at once by another.
pub const DEADLINE_BATCH: u32 = 500;

/// How often to sweep for a lease of `lease`: a third of it, at most once a second, at least every 50 ms.
pub fn interval(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Whether the sweeper may declare nodes lost: it has been able to hear from nodes (the process
/// listening and the database reachable) for at least one lease, since `listening_since`.
pub fn grace_over(listening_since: Instant, now: Instant, lease: Duration) -> bool {
    now.saturating_duration_since(listening_since) >= lease
}

/// The sweeper's settings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// `control_plane.node_lease_ms`.
    pub lease: Duration,
    /// `transport.delivery_limit`.
    pub delivery_limit: u32,
}

/// The lease sweeper. Build with [`Sweeper::new`], run with [`Sweeper::run`].
pub struct Sweeper {
    store: Arc<dyn Store>,
    settings: LeaseSettings,
    wake: Arc<Notify>,
    events: Events,
    metrics: Metrics,
    /// Since when nodes could reach this process and it could record their calls.
    listening_since: Instant,
}

impl Sweeper {
    /// A sweeper for a control plane that started listening at `started` (its gRPC listener bound).
    /// `wake` is the outbox publisher's.
    pub fn new(
        store: Arc<dyn Store>,
        settings: LeaseSettings,
        started: Instant,
        wake: Arc<Notify>,
        events: Events,
        metrics: Metrics,
    ) -> Self {
        Self { store, settings, wake, events, metrics, listening_since: started }
    }

    /// Sweeps until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let every = interval(self.settings.lease);
        let mut backoff = Backoff::new(every, Duration::from_secs(5));
        loop {
            let delay = match self.sweep().await {
                Ok(_) => {
                    backoff.reset();
                    every
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "lease sweep failed");
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One sweep: nothing before the grace is over, else the nodes declared lost now and their tasks;
    /// then the overdue attempts.
    ///
    /// # Errors
    /// Storage errors. An unreachable database restarts the grace: nodes could not record their calls
    /// meanwhile.
    pub async fn sweep(&mut self) -> Result<Expiry, store::Error> {
        if !grace_over(self.listening_since, Instant::now(), self.settings.lease) {
            return Ok(Expiry::default());
        }
        let expiry = match self.store.expire_nodes(self.settings.lease, self.settings.delivery_limit).await {
            Ok(expiry) => expiry,
            Err(e) => {
                if matches!(e, store::Error::Unavailable(_)) {
                    self.listening_since = Instant::now();
                }
                return Err(e);
            }
        };
        for node in &expiry.nodes {
            tracing::warn!(node = %node, lease_ms = self.settings.lease.as_millis(), "node stopped calling, marked lost");
        }
        if !expiry.changes.is_empty() {
            tracing::warn!(
                tasks = expiry.changes.len(),
                "running attempts of lost nodes marked lost; tasks dispatched again"
            );
            self.metrics.redispatched.inc_by(expiry.changes.len() as u64);
            self.wake.notify_one();
            self.events.publish(&expiry.changes);
        }
        self.expire_attempts().await?;
        Ok(expiry)
    }

    /// Ends overdue attempts, a batch at a time, until a batch is not full.
    async fn expire_attempts(&mut self) -> Result<(), store::Error> {
        loop {
            let changes = match self.store.expire_attempts(self.settings.lease, DEADLINE_BATCH).await {
                Ok(changes) => changes,
                Err(e) => {
                    if matches!(e, store::Error::Unavailable(_)) {
                        self.listening_since = Instant::now();
                    }
                    return Err(e);
                }
            };
            if changes.is_empty() {
                return Ok(());
            }
            tracing::warn!(
                tasks = changes.len(),
                lease_ms = self.settings.lease.as_millis(),
                "attempts ran past their timeout plus the lease without a report; ended timed_out"
            );
            self.wake.notify_one();
            self.events.publish(&changes);
            if changes.len() < DEADLINE_BATCH as usize {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_interval_follows_the_lease() {
        assert_eq!(interval(Duration::from_secs(30)), Duration::from_secs(1));
        assert_eq!(interval(Duration::from_millis(900)), Duration::from_millis(300));
        assert_eq!(interval(Duration::from_millis(30)), Duration::from_millis(50));
    }

    #[test]
    fn no_node_is_lost_before_the_control_plane_listened_for_a_lease() {
        let lease = Duration::from_secs(30);
        let started = Instant::now();
        // Restarted after a 35 s outage: the nodes' last calls are old, but they could not call.
        assert!(!grace_over(started, started, lease));
        assert!(!grace_over(started, started + Duration::from_secs(29), lease));
        assert!(grace_over(started, started + lease, lease));
        assert!(grace_over(started, started + Duration::from_secs(3600), lease));
        // A clock read before the start (another thread) is not over either.
        assert!(!grace_over(started + Duration::from_secs(1), started, lease));
    }
}
