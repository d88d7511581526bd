//! The broker side: one connection and ONE channel with `basic_qos(concurrency, global: true)`, one
//! consumer per loaded extension queue on it, and a delivery task per message (see
//! [`crate::handler`]).
//!
//! RabbitMQ shares a global prefetch across all consumers of the channel, so unacked deliveries, which
//! are the attempts in flight, never exceed `executor.concurrency`, and the broker's priority queues
//! decide which message comes next: a priority-9 task overtakes a backlog.
//!
//! Extensions the operator disabled are not consumed; their consumer is cancelled when they become
//! disabled and started again when enabled. After a connection loss the consumer reconnects with
//! capped backoff (200 ms to 10 s; reset by a session that lasted 30 s); runners of the old
//! connection finish and report, but their deliveries can no longer be acked, which is fine: the
//! broker redelivers them and the control plane fences the redelivery. On stop, consumers are
//! cancelled and deliveries still buffered are requeued.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use legion_common::broker;
use legion_common::settings::TransportSettings;
use legion_proto::v1::ExtensionState;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::handler::{Handler, Settlement};
use crate::state::NodeState;

/// Broker failures while setting up a session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    /// A channel, declaration, qos or consume failed.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
}

/// How often the connection's status is checked when no consumer reports its loss.
const STATUS_CHECK: Duration = Duration::from_secs(1);
/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// How long buffered deliveries may take to be requeued after the consumers are cancelled.
const CANCEL_DRAIN: Duration = Duration::from_secs(2);

/// An open connection and its channel. Close it with [`Session::close`] once every delivery is
/// settled.
pub struct Session {
    connection: Connection,
    channel: Channel,
}

impl Session {
    /// Closes the channel (the broker requeues anything still unacked) and the connection.
    pub async fn close(self) {
        if let Err(e) = self.channel.close(200, "executor stopping".into()).await {
            tracing::debug!(error = %e, "closing the broker channel failed");
        }
        if let Err(e) = self.connection.close(200, "executor stopping".into()).await {
            tracing::debug!(error = %e, "closing the broker connection failed");
        }
    }
}

enum Ended {
    Stopped,
    Lost(String),
}

/// What to consume and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker.
    pub transport: TransportSettings,
    /// The node name, part of the connection name and consumer tags.
    pub node: String,
    /// Most unacked deliveries on the channel (`executor.concurrency`).
    pub prefetch: u16,
    /// The loaded extensions, whose queues are declared and consumed.
    pub extensions: Vec<String>,
}

/// The consumer of every loaded extension's queue.
pub struct Consumer {
    transport: TransportSettings,
    node: String,
    prefetch: u16,
    extensions: Vec<String>,
    handler: Arc<Handler>,
    state: Arc<NodeState>,
    disabled: watch::Receiver<BTreeSet<String>>,
    tracker: TaskTracker,
}

impl Consumer {
    /// A consumer as `options` say, each delivery handled by `handler` in a task of `tracker`;
    /// `disabled` names the extensions not to consume.
    pub fn new(
        options: Options,
        handler: Arc<Handler>,
        state: Arc<NodeState>,
        disabled: watch::Receiver<BTreeSet<String>>,
        tracker: TaskTracker,
    ) -> Self {
        let Options { transport, node, prefetch, extensions } = options;
        Self { transport, node, prefetch, extensions, handler, state, disabled, tracker }
    }

    /// Consumes until `stop` is cancelled, reconnecting after connection loss. Returns the open
    /// session, its consumers cancelled, so that the caller can settle in-flight deliveries before
    /// closing it; `None` when stopped while disconnected.
    pub async fn run(mut self, stop: CancellationToken) -> Option<Session> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let opened = tokio::select! {
                () = stop.cancelled() => return None,
                opened = self.open() => opened,
            };
            let session = match opened {
                Ok(session) => session,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "broker unavailable, retrying");
                    self.state.set_not_consuming(&self.disabled.borrow());
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            let opened_at = tokio::time::Instant::now();
            match self.serve(&session, &stop).await {
                Ended::Stopped => return Some(session),
                Ended::Lost(reason) => {
                    self.state.set_not_consuming(&self.disabled.borrow());
                    // A channel-level failure leaves the connection open: close it before reconnecting.
                    let _ = tokio::time::timeout(Duration::from_secs(1), session.close()).await;
                    // A session that lived a while starts the backoff over; one that failed at once
                    // (e.g. a consume refused) keeps backing off, so that it does not spin.
                    if opened_at.elapsed() >= STABLE_SESSION {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(reason = %reason, retry_in_ms = delay.as_millis(), "broker connection lost, reconnecting");
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn open(&self) -> Result<Session, Error> {
        let connection = broker::connect(&self.transport, &format!("legion-executor {}", self.node))
            .await
            .map_err(|e| Error::Connect(format!("{e:#}")))?;
        let channel = connection.create_channel().await?;
        broker::declare_topology(&channel).await?;
        for extension in &self.extensions {
            broker::declare_extension_queue(&channel, extension).await?;
        }
        channel.basic_qos(self.prefetch, BasicQosOptions { global: true }).await?;
        tracing::info!(prefetch = self.prefetch, extensions = ?self.extensions, "connected to the broker");
        Ok(Session { connection, channel })
    }

    async fn serve(&mut self, session: &Session, stop: &CancellationToken) -> Ended {
        let (lost_tx, mut lost_rx) = mpsc::channel::<String>(self.extensions.len() + 1);
        let mut streams = JoinSet::new();
        let mut tags: HashMap<String, String> = HashMap::new();
        let mut disabled = self.disabled.borrow_and_update().clone();
        for extension in self.extensions.clone() {
            if disabled.contains(&extension) {
                self.state.set_extension(&extension, ExtensionState::Disabled);
                continue;
            }
            match self.consume(session, &extension, &mut streams, &lost_tx).await {
                Ok(tag) => {
                    tags.insert(extension, tag);
                }
                Err(e) => return Ended::Lost(e.to_string()),
            }
        }
        let mut check = tokio::time::interval(STATUS_CHECK);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    for (extension, tag) in tags.drain() {
                        cancel(session, &extension, &tag).await;
                    }
                    // Buffered deliveries reach their stream loop, which requeues them while draining.
                    let drained = tokio::time::timeout(CANCEL_DRAIN, async {
                        while streams.join_next().await.is_some() {}
                    });
                    if drained.await.is_err() {
                        tracing::debug!("consumer streams did not end in time; their deliveries requeue at channel close");
                    }
                    return Ended::Stopped;
                }
                Ok(()) = self.disabled.changed() => {
                    let now = self.disabled.borrow_and_update().clone();
                    for extension in self.extensions.clone() {
                        let (was, is) = (disabled.contains(&extension), now.contains(&extension));
                        if !was && is {
                            if let Some(tag) = tags.remove(&extension) {
                                cancel(session, &extension, &tag).await;
                            }
                            self.state.set_extension(&extension, ExtensionState::Disabled);
                            tracing::info!(%extension, "extension disabled, stopped consuming its queue");
                        } else if was && !is {
                            match self.consume(session, &extension, &mut streams, &lost_tx).await {
                                Ok(tag) => {
                                    tags.insert(extension.clone(), tag);
                                    tracing::info!(%extension, "extension enabled, consuming its queue again");
                                }
                                Err(e) => return Ended::Lost(e.to_string()),
                            }
                        }
                    }
                    disabled = now;
                }
                Some(reason) = lost_rx.recv() => return Ended::Lost(reason),
                _ = check.tick() => {
                    if !session.connection.status().connected() || !session.channel.status().connected() {
                        return Ended::Lost("connection or channel closed".into());
                    }
                }
            }
        }
    }

    /// Starts consuming `extension`'s queue; returns the consumer tag.
    async fn consume(
        &self,
        session: &Session,
        extension: &str,
        streams: &mut JoinSet<()>,
        lost: &mpsc::Sender<String>,
    ) -> Result<String, Error> {
        let short = uuid::Uuid::new_v4().simple().to_string();
        let tag = format!("{}.{extension}.{}", self.node, &short[..8]);
        let queue = broker::extension_queue(extension);
        let mut consumer = session
            .channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.state.set_extension(extension, ExtensionState::Running);
        tracing::info!(%extension, %queue, consumer_tag = %tag, "consuming");
        let handler = self.handler.clone();
        let state = self.state.clone();
        let tracker = self.tracker.clone();
        let lost = lost.clone();
        let extension: Arc<str> = Arc::from(extension);
        streams.spawn(async move {
            while let Some(next) = consumer.next().await {
                match next {
                    Ok(delivery) if state.draining() => {
                        handler.settle(&delivery.acker, Settlement::Requeue, delivery.delivery_tag).await;
                    }
                    Ok(delivery) => {
                        tracker.spawn(handler.clone().handle(delivery, extension.clone()));
                    }
                    Err(e) => {
                        let _ = lost.send(format!("consumer of {extension}: {e}")).await;
                        return;
                    }
                }
            }
        });
        Ok(tag)
    }
}

async fn cancel(session: &Session, extension: &str, tag: &str) {
    if let Err(e) = session.channel.basic_cancel(tag.into(), BasicCancelOptions::default()).await {
        tracing::warn!(%extension, consumer_tag = %tag, error = %e, "cancelling consumer failed");
    }
}
