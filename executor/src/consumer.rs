//! The broker side: one connection and ONE channel with `basic_qos(concurrency, global: true)`, one
//! consumer per queue on it, and a delivery task per message (see [`crate::handler`]).
//!
//! Queues: for every loaded extension, its region-free queue `legion.ext.<ext>` and the queue of this
//! executor's region `legion.ext.<ext>.<executor.region>` (tasks submitted for that region), each
//! declared before it is consumed. RabbitMQ shares a global prefetch across all consumers of the
//! channel, so unacked deliveries, which are the attempts in flight, never exceed
//! `executor.concurrency` whatever the number of queues, and the broker's priority queues decide which
//! message comes next: a priority-9 task overtakes a backlog.
//!
//! Extensions the operator disabled are not consumed; their consumers are cancelled when they become
//! disabled and started again when enabled. A consumer the broker cancels (its queue was deleted, for
//! instance) is noticed by the end of its stream without our own cancel: its extension is reported
//! `stopped` (so the node is not ready), and the queue is declared and consumed again after a capped
//! backoff (200 ms to 10 s, reset by a consumer that lasted 30 s), then the extension is `running`
//! again. After a connection loss the consumer reconnects with capped backoff (200 ms to 10 s; reset by
//! a session that lasted 30 s); runners of the old connection finish and report, but their deliveries
//! can no longer be acked: the broker redelivers them, and a redelivery that reaches this executor
//! while its attempt still runs is attached to that attempt (see [`crate::deliveries`]); elsewhere the
//! control plane fences it. On stop, consumers are cancelled and deliveries still buffered are
//! requeued.

use std::collections::BTreeSet;
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

mod subscriptions;

use subscriptions::{Queue, Status, Subscriptions};

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
    /// Whether both the connection and the channel are open.
    pub fn connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

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
    /// `executor.region`: the region queue of each extension is consumed too.
    pub region: String,
    /// AMQP heartbeat timeout to ask for, in s ([`broker::heartbeat_for_lease`] of the control plane's
    /// node lease); `None` leaves the broker's default. `transport.url`'s `heartbeat` wins.
    pub heartbeat_s: Option<u16>,
}

/// The consumer of every loaded extension's queue.
pub struct Consumer {
    transport: TransportSettings,
    node: String,
    prefetch: u16,
    extensions: Vec<String>,
    region: String,
    heartbeat_s: Option<u16>,
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
        let Options { transport, node, prefetch, extensions, region, heartbeat_s } = options;
        Self { transport, node, prefetch, extensions, region, heartbeat_s, handler, state, disabled, tracker }
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
        let connection = broker::connect_with_heartbeat(
            &self.transport,
            &format!("legion-executor {}", self.node),
            self.heartbeat_s,
        )
        .await
        .map_err(|e| Error::Connect(format!("{e:#}")))?;
        let channel = connection.create_channel().await?;
        broker::declare_topology(&channel).await?;
        channel.basic_qos(self.prefetch, BasicQosOptions { global: true }).await?;
        tracing::info!(
            prefetch = self.prefetch, extensions = ?self.extensions, region = %self.region,
            "connected to the broker"
        );
        Ok(Session { connection, channel })
    }

    async fn serve(&mut self, session: &Session, stop: &CancellationToken) -> Ended {
        let (events_tx, mut events) = mpsc::unbounded_channel::<StreamEvent>();
        let mut streams = JoinSet::new();
        let mut subs = Subscriptions::new(&self.extensions, &self.region);
        let mut disabled = self.disabled.borrow_and_update().clone();
        for extension in self.extensions.clone() {
            if disabled.contains(&extension) {
                self.state.set_extension(&extension, ExtensionState::Disabled);
                continue;
            }
            if let Err(e) = self.consume_extension(session, &extension, &mut subs, &mut streams, &events_tx).await {
                return Ended::Lost(e.to_string());
            }
        }
        let mut check = tokio::time::interval(STATUS_CHECK);
        loop {
            let next_due = subs.next_due();
            tokio::select! {
                () = stop.cancelled() => {
                    for (queue, tag) in subs.consumers() {
                        cancel(session, &queue, &tag).await;
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
                            for (queue, tag) in subs.turn_off(&extension) {
                                cancel(session, &queue, &tag).await;
                            }
                            self.state.set_extension(&extension, ExtensionState::Disabled);
                            tracing::info!(%extension, "extension disabled, stopped consuming its queues");
                        } else if was && !is {
                            if let Err(e) =
                                self.consume_extension(session, &extension, &mut subs, &mut streams, &events_tx).await
                            {
                                return Ended::Lost(e.to_string());
                            }
                            tracing::info!(%extension, "extension enabled, consuming its queues again");
                        }
                    }
                    disabled = now;
                }
                Some(event) = events.recv() => {
                    if let Err(reason) = self.on_stream_end(session, &mut subs, event) {
                        return Ended::Lost(reason);
                    }
                }
                () = sleep_until(next_due) => {
                    for queue in subs.due(tokio::time::Instant::now()) {
                        if let Err(e) = self.resubscribe(session, &queue, &mut subs, &mut streams, &events_tx).await {
                            return Ended::Lost(e);
                        }
                    }
                }
                _ = check.tick() => {
                    if !session.connected() {
                        return Ended::Lost("connection or channel closed".into());
                    }
                }
            }
        }
    }

    /// Handles the end of a consumer stream.
    ///
    /// # Errors
    /// The reason, when the session is lost (the stream failed, or ended with its channel).
    fn on_stream_end(&self, session: &Session, subs: &mut Subscriptions, event: StreamEvent) -> Result<(), String> {
        let StreamEvent { queue, tag, error } = event;
        let now = tokio::time::Instant::now();
        if let Some(error) = error {
            return Err(format!("consumer of {queue}: {error}"));
        }
        if !subs.consumer_ended(&queue, &tag, now) {
            return Ok(()); // cancelled by us, or an old consumer of the queue
        }
        if !session.connected() {
            return Err(format!("consumer of {queue} ended with its channel"));
        }
        let Some(q) = subs.queue(&queue) else { return Ok(()) };
        let delay = subs.status(&queue).and_then(|s| match s {
            Status::Waiting { due } => Some(due.saturating_duration_since(now)),
            _ => None,
        });
        self.state.set_extension(&q.extension, subs.extension_state(&q.extension));
        tracing::warn!(
            extension = %q.extension, %queue, consumer_tag = %tag, retry_in_ms = delay.unwrap_or_default().as_millis(),
            "the broker cancelled the consumer (queue deleted?), consuming the queue again after a delay"
        );
        Ok(())
    }

    /// Declares and consumes a queue whose consumer the broker cancelled; on failure, schedules the
    /// next try. Returns the reason when the session is lost.
    async fn resubscribe(
        &self,
        session: &Session,
        queue: &Queue,
        subs: &mut Subscriptions,
        streams: &mut JoinSet<()>,
        events: &mpsc::UnboundedSender<StreamEvent>,
    ) -> Result<(), String> {
        match self.subscribe(session, queue, streams, events).await {
            Ok(tag) => {
                subs.consuming(&queue.name, tag, tokio::time::Instant::now());
                self.state.set_extension(&queue.extension, subs.extension_state(&queue.extension));
                tracing::info!(extension = %queue.extension, queue = %queue.name, "consuming the queue again");
                Ok(())
            }
            Err(e) if session.connected() => {
                let delay = subs.retry_later(&queue.name, tokio::time::Instant::now());
                tracing::warn!(
                    extension = %queue.extension, queue = %queue.name, error = %e, retry_in_ms = delay.as_millis(),
                    "consuming the queue again failed, retrying"
                );
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Starts consuming every queue of `extension` and reports it `running`.
    async fn consume_extension(
        &self,
        session: &Session,
        extension: &str,
        subs: &mut Subscriptions,
        streams: &mut JoinSet<()>,
        events: &mpsc::UnboundedSender<StreamEvent>,
    ) -> Result<(), Error> {
        for queue in subs.queues_of(extension) {
            let tag = self.subscribe(session, &queue, streams, events).await?;
            subs.consuming(&queue.name, tag, tokio::time::Instant::now());
        }
        self.state.set_extension(extension, subs.extension_state(extension));
        Ok(())
    }

    /// Declares `queue` (it may have been deleted) and consumes it; returns the consumer tag. Each
    /// delivery is handled in its own task; the end of the stream is sent to `events`.
    async fn subscribe(
        &self,
        session: &Session,
        queue: &Queue,
        streams: &mut JoinSet<()>,
        events: &mpsc::UnboundedSender<StreamEvent>,
    ) -> Result<String, Error> {
        broker::declare_extension_queue(&session.channel, &queue.extension, queue.region.as_deref()).await?;
        let short = uuid::Uuid::new_v4().simple().to_string();
        let tag = format!("{}.{}.{}", self.node, queue.name.trim_start_matches("legion.ext."), &short[..8]);
        let mut consumer = session
            .channel
            .basic_consume(
                queue.name.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(extension = %queue.extension, queue = %queue.name, consumer_tag = %tag, "consuming");
        let handler = self.handler.clone();
        let state = self.state.clone();
        let tracker = self.tracker.clone();
        let events = events.clone();
        let extension: Arc<str> = Arc::from(queue.extension.as_str());
        let (queue_name, stream_tag) = (queue.name.clone(), tag.clone());
        streams.spawn(async move {
            let mut error = None;
            while let Some(next) = consumer.next().await {
                match next {
                    Ok(delivery) if state.draining() => {
                        handler.settle(&delivery.acker, Settlement::Requeue, delivery.delivery_tag).await;
                    }
                    Ok(delivery) => {
                        tracker.spawn(handler.clone().handle(delivery, extension.clone()));
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            let _ = events.send(StreamEvent { queue: queue_name, tag: stream_tag, error });
        });
        Ok(tag)
    }
}

/// The end of a consumer stream: the broker cancelled it or we did (`error` none), or the channel
/// failed.
#[derive(Debug)]
struct StreamEvent {
    queue: String,
    tag: String,
    error: Option<String>,
}

/// Sleeps until `deadline`; never resolves for `None`.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn cancel(session: &Session, queue: &str, tag: &str) {
    if let Err(e) = session.channel.basic_cancel(tag.into(), BasicCancelOptions::default()).await {
        tracing::warn!(%queue, consumer_tag = %tag, error = %e, "cancelling consumer failed");
    }
}
