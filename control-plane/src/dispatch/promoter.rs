//! The promoter: moves `scheduled` tasks whose `not_before` has passed to `pending`, with a new dispatch
//! and an outbox row, in batches (`FOR UPDATE SKIP LOCKED`, so replicas share the work).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::events::Events;
use crate::store::Store;

/// How often due tasks are looked for, which bounds how late a delayed task starts.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// Tasks promoted per transaction.
pub const BATCH: u32 = 500;

/// Promotes due tasks until `shutdown` is cancelled. `wake` is the publisher's.
pub async fn run(store: Arc<dyn Store>, wake: Arc<Notify>, events: Events, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(INTERVAL, Duration::from_secs(5));
    loop {
        let delay = match store.promote_due(BATCH).await {
            Ok(changes) => {
                backoff.reset();
                if !changes.is_empty() {
                    tracing::debug!(promoted = changes.len(), "scheduled tasks are due");
                    wake.notify_one();
                    events.publish(&changes);
                }
                if changes.len() >= BATCH as usize { Duration::ZERO } else { INTERVAL }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "cannot promote scheduled tasks");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
