//! The lease sweeper (DESIGN.md section 5, item 6): a node silent for `control_plane.node_lease_ms` is
//! `lost`; the running attempts of lost nodes are marked `lost` and their tasks dispatched again (or
//! dead-lettered past `transport.delivery_limit`). A lost node that heartbeats again becomes `active`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::store::Store;

/// Tasks recovered per transaction.
pub const BATCH: u32 = 500;

/// How often to sweep for a lease of `lease`: a third of it, at most once a second, at least every 50 ms.
pub fn interval(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// The sweeper's settings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// `control_plane.node_lease_ms`.
    pub lease: Duration,
    /// `transport.delivery_limit`.
    pub delivery_limit: u32,
}

/// Sweeps until `shutdown` is cancelled. `wake` is the publisher's.
pub async fn run(
    store: Arc<dyn Store>,
    settings: LeaseSettings,
    wake: Arc<Notify>,
    events: Events,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let every = interval(settings.lease);
    let mut backoff = Backoff::new(every, Duration::from_secs(5));
    loop {
        let delay = match sweep(store.as_ref(), settings, &wake, &events, &metrics).await {
            Ok(more) => {
                backoff.reset();
                if more { Duration::ZERO } else { every }
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

/// One sweep; returns whether a full batch was recovered (more may wait).
async fn sweep(
    store: &dyn Store,
    settings: LeaseSettings,
    wake: &Notify,
    events: &Events,
    metrics: &Metrics,
) -> Result<bool, crate::store::Error> {
    for node in store.expire_nodes(settings.lease).await? {
        tracing::warn!(node = %node, lease_ms = settings.lease.as_millis(), "node stopped sending heartbeats, marked lost");
    }
    let changes = store.recover_lost_attempts(settings.delivery_limit, BATCH).await?;
    if !changes.is_empty() {
        tracing::warn!(tasks = changes.len(), "running attempts of lost nodes marked lost; tasks dispatched again");
        metrics.redispatched.inc_by(changes.len() as u64);
        wake.notify_one();
        events.publish(&changes);
    }
    Ok(changes.len() >= BATCH as usize)
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
}
