//! The outbox publisher (docs/architecture.md, delivery protocol step 2).
//!
//! Each round claims up to `transport.publish_batch` outbox rows (oldest first, `FOR UPDATE SKIP
//! LOCKED`, so replicas share the work), publishes them all on a confirm-mode channel without waiting
//! between publishes (persistent, mandatory, with the task's priority), then awaits every confirm. In
//! the claim's transaction, confirmed rows are deleted and their tasks move `pending → queued`; a
//! nacked or cut-off message keeps its row with `failures += 1` and `last_error`, and is published
//! again by a later round. Nothing is skipped or lost: a row leaves the outbox only after the broker
//! confirmed it, or after it ended its task `dead_lettered` (below).
//!
//! Before the first publish to a queue, the publisher declares it (idempotently): the extension's
//! queue for region-free routing keys, or the extension's queue of the region
//! (`legion.ext.<extension>.<region>`) for a task bound to a region. Declared queues are remembered per
//! `(extension, region)` for the life of the broker connection.
//!
//! A message the broker returns (mandatory publish, no queue bound to its routing key: the queue or
//! its binding was deleted behind the publisher's back) makes the publisher forget that the queue was
//! declared, so the next round declares it again, and keeps its row, marked as returned, for that
//! round. A row returned a second time cannot be routed even so: it is deleted and its task ends
//! `dead_lettered` with the reason `unroutable: no queue bound to routing key <key> on exchange
//! legion.tasks`, in the claim's transaction, if that dispatch is still the task's current one and the
//! task has not finished ([`crate::store::OutboxClaim::finish_with_returns`]).
//!
//! The broker may be down at start or go away at any time: the publisher reconnects with capped
//! exponential backoff and never gives up. Rounds run when a commit wakes the publisher, and at least
//! every `transport.outbox_poll_ms`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use legion_common::settings::TransportSettings;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::store::{self, OutboxRow, Store};

/// How long a round waits for the broker's confirms before it counts the rest as failed and reconnects.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening a broker connection (TCP, TLS, AMQP handshake, topology) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Publisher failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker connection or channel failed; the publisher reconnects.
    #[error("broker: {0}")]
    Broker(String),
    /// The outbox could not be read or updated; the round is retried.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The outbox publisher loop. Build with [`Publisher::new`], run with [`Publisher::run`].
pub struct Publisher {
    store: Arc<dyn Store>,
    transport: TransportSettings,
    wake: Arc<Notify>,
    events: Events,
    metrics: Metrics,
    connected: Arc<AtomicBool>,
}

impl Publisher {
    /// A publisher of `store`'s outbox to `transport.url`. `wake` is notified after commits that write
    /// outbox rows; `connected` reflects whether the broker connection is up (for readiness).
    pub fn new(
        store: Arc<dyn Store>,
        transport: TransportSettings,
        wake: Arc<Notify>,
        events: Events,
        metrics: Metrics,
        connected: Arc<AtomicBool>,
    ) -> Self {
        Self { store, transport, wake, events, metrics, connected }
    }

    /// Publishes until `shutdown` is cancelled; the round in flight finishes first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                opened = tokio::time::timeout(CONNECT_TIMEOUT, Session::open(&self.transport)) => opened
                    .unwrap_or_else(|_| Err(Error::Broker(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())))),
                () = shutdown.cancelled() => break,
            };
            let session = match opened {
                Ok(session) => session,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "cannot connect to the broker");
                    sleep_or_cancel(delay, &shutdown).await;
                    continue;
                }
            };
            tracing::info!("outbox publisher connected to the broker");
            self.connected.store(true, Ordering::Relaxed);
            backoff.reset();
            self.publish_until_broken(session, &shutdown).await;
            self.connected.store(false, Ordering::Relaxed);
        }
        tracing::info!("outbox publisher stopped");
    }

    async fn publish_until_broken(&self, mut session: Session, shutdown: &CancellationToken) {
        let poll = Duration::from_millis(self.transport.outbox_poll_ms.max(1));
        let mut store_backoff = Backoff::new(poll, Duration::from_secs(5));
        loop {
            if shutdown.is_cancelled() {
                session.close().await;
                return;
            }
            if !session.is_connected() {
                tracing::warn!("broker connection lost, reconnecting");
                return;
            }
            match self.round(&mut session).await {
                Ok(published) => {
                    store_backoff.reset();
                    if published >= self.transport.publish_batch as usize {
                        continue;
                    }
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(poll) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(Error::Broker(e)) => {
                    tracing::warn!(error = %e, "broker failed during a publish round, reconnecting");
                    session.close().await;
                    return;
                }
                Err(Error::Store(e)) => {
                    let delay = store_backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "cannot read or update the outbox");
                    sleep_or_cancel(delay, shutdown).await;
                }
            }
        }
    }

    /// One round; returns the number of rows published (confirmed). A full batch means more may wait;
    /// a round with failures is not repeated before the poll interval.
    async fn round(&self, session: &mut Session) -> Result<usize, Error> {
        let claim = self.store.claim_outbox(self.transport.publish_batch).await?;
        let claimed = claim.rows().len();
        if claimed == 0 {
            claim.finish(&[], &[]).await?;
            return Ok(0);
        }
        let mut failed: Vec<(i64, String)> = Vec::new();
        let mut returned: Vec<i64> = Vec::new();
        let mut broken: Option<String> = None;
        let mut ready: Vec<&OutboxRow> = Vec::with_capacity(claimed);
        let mut refused: HashSet<QueueKey> = HashSet::new();
        for row in claim.rows() {
            let queue = queue_key(&row.routing_key);
            if !session.declared.contains(&queue)
                && !refused.contains(&queue)
                && let Err(e) = session.declare(&queue).await
            {
                tracing::warn!(extension = %queue.0, region = queue.1.as_deref().unwrap_or(""), error = %e, "cannot declare the queue");
                refused.insert(queue.clone());
            }
            if refused.contains(&queue) {
                let name = legion_common::broker::extension_queue(&queue.0, queue.1.as_deref());
                failed.push((row.id, format!("cannot declare the queue {name}")));
            } else {
                ready.push(row);
            }
        }
        let publishes = join_all(ready.iter().map(|row| {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_priority(row.priority)
                .with_content_type("application/json".into())
                .with_message_id(row.task_id.to_string().into());
            session.channel.basic_publish(
                row.exchange.as_str().into(),
                row.routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                &row.payload,
                properties,
            )
        }))
        .await;
        let mut pending = Vec::with_capacity(ready.len());
        for (row, publish) in ready.iter().zip(publishes) {
            match publish {
                Ok(confirm) => pending.push((*row, confirm)),
                Err(e) => {
                    failed.push((row.id, format!("publish failed: {e}")));
                    broken.get_or_insert_with(|| e.to_string());
                }
            }
        }
        let ids: Vec<i64> = pending.iter().map(|(row, _)| row.id).collect();
        let confirms = tokio::time::timeout(
            CONFIRM_TIMEOUT,
            join_all(pending.into_iter().map(|(row, confirm)| async move { (row, confirm.await) })),
        )
        .await;
        let mut published = Vec::with_capacity(claimed);
        match confirms {
            Err(_) => {
                let reason = format!("no confirm from the broker within {} s", CONFIRM_TIMEOUT.as_secs());
                failed.extend(ids.into_iter().map(|id| (id, reason.clone())));
                broken.get_or_insert(reason);
            }
            Ok(results) => {
                for (row, result) in results {
                    match result {
                        Ok(Confirmation::Ack(None)) => published.push(row.id),
                        Ok(Confirmation::Ack(Some(message))) => {
                            // Unroutable: the queue may have been deleted; declare it again next round.
                            let queue = queue_key(&row.routing_key);
                            tracing::warn!(
                                routing_key = %row.routing_key,
                                reply_code = message.reply_code,
                                reply_text = %message.reply_text,
                                "message returned by the broker as unroutable; declaring its queue again"
                            );
                            session.declared.remove(&queue);
                            returned.push(row.id);
                        }
                        Ok(Confirmation::Nack(_)) => failed.push((row.id, "nacked by the broker".into())),
                        Ok(Confirmation::NotRequested) => {
                            failed.push((row.id, "the channel is not in confirm mode".into()));
                            broken.get_or_insert_with(|| "the channel is not in confirm mode".into());
                        }
                        Err(e) => {
                            failed.push((row.id, format!("confirm failed: {e}")));
                            broken.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
            }
        }
        drop(ready);
        let changes = claim.finish_with_returns(&published, &failed, &returned).await?;
        let dead = changes.iter().filter(|c| c.status == legion_common::TaskStatus::DeadLettered).count();
        if dead > 0 {
            tracing::warn!(dead_lettered = dead, "tasks dead-lettered: their messages could not be routed twice");
        }
        self.metrics.published.inc_by(published.len() as u64);
        self.metrics.observe_batch("publish", published.len());
        self.metrics.publish_failures.inc_by(returned.len() as u64);
        if !failed.is_empty() {
            self.metrics.publish_failures.inc_by(failed.len() as u64);
            tracing::warn!(failed = failed.len(), first_error = %failed[0].1, "outbox rows not published; they stay for the next round");
        }
        self.events.publish(&changes);
        match broken {
            Some(e) => Err(Error::Broker(e)),
            None => Ok(published.len()),
        }
    }
}

/// A queue to declare: `(extension, region)`.
type QueueKey = (String, Option<String>);

/// The queue a routing key reaches, see [`super::message::queue_of`].
fn queue_key(routing_key: &str) -> QueueKey {
    let (extension, region) = super::message::queue_of(routing_key);
    (extension.to_owned(), region.map(str::to_owned))
}

async fn sleep_or_cancel(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shutdown.cancelled() => {}
    }
}

/// A broker connection with a confirm-mode publishing channel and a separate channel for declarations
/// (a refused declaration closes its channel; the publishing channel lives on).
struct Session {
    connection: Connection,
    channel: Channel,
    topology: Option<Channel>,
    declared: HashSet<QueueKey>,
}

impl Session {
    async fn open(transport: &TransportSettings) -> Result<Self, Error> {
        let broker = |e: &dyn std::fmt::Display| Error::Broker(e.to_string());
        let connection = legion_common::broker::connect(transport, "legion-control-plane outbox publisher")
            .await
            .map_err(|e| broker(&e))?;
        let channel = connection.create_channel().await.map_err(|e| broker(&e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| broker(&e))?;
        legion_common::broker::declare_topology(&channel).await.map_err(|e| broker(&e))?;
        Ok(Self { connection, channel, topology: None, declared: HashSet::new() })
    }

    fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    async fn declare(&mut self, queue: &QueueKey) -> Result<(), lapin::Error> {
        let channel = match self.topology.take() {
            Some(channel) if channel.status().connected() => channel,
            _ => self.connection.create_channel().await?,
        };
        let result = legion_common::broker::declare_extension_queue(&channel, &queue.0, queue.1.as_deref()).await;
        self.topology = Some(channel);
        result?;
        self.declared.insert(queue.clone());
        Ok(())
    }

    async fn close(self) {
        if self.connection.status().connected() {
            let _ = self.connection.close(200, "shutting down".into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_declared_per_extension_and_region() {
        assert_eq!(queue_key("http.request.get"), ("http".to_owned(), None));
        assert_eq!(queue_key("http.request.get.eu-west"), ("http".to_owned(), Some("eu-west".to_owned())));
        assert_ne!(queue_key("http.request.get"), queue_key("http.request.post.eu-west"));
        assert_eq!(queue_key("http.request.get.eu-west"), queue_key("http.request.post.eu-west"));
    }
}
