//! The reporter: coalesces `StartTask` items and, separately, `CompleteTask` items into batched calls,
//! as docs/architecture.md ("Batching") describes.
//!
//! A batch is sent when it holds `max_batch` items or `linger` after its first item, whichever comes
//! first; up to `max_in_flight` calls of each kind are in flight, and items that arrive meanwhile wait
//! for the next batch (group commit). Each caller awaits its own item's answer. A transient failure
//! ([`crate::client::is_transient`]) is retried with capped backoff, keeping every item: a completion
//! is never dropped. Items whose callers went away (their delivery was requeued at shutdown) are left
//! out of the retries. A batch the control plane refuses outright is split and its items sent one by
//! one, so that one bad item refuses only its own caller. A batch also stops at
//! [`Options::max_batch_bytes`] of encoded items ([`MAX_BATCH_BYTES`] by default, well under the
//! control plane's 64 MiB message limit even with results of `limits.max_result_bytes`), always
//! holding at least one item.
//!
//! With a spool ([`Reporter::spawn_with_spool`]), a completion is not retried forever: once every
//! `CompleteTask` call has failed with a transient error for `executor.spool_after_ms` (0: at the first
//! failure), the completions of a failing batch are written to the spool and their callers answered
//! [`Completed::Spooled`]; the spool replays them later ([`crate::spool::replay`]). A completion that
//! does not fit in the spool keeps being retried (its message stays unacked) and is offered to the
//! spool again after each failure.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use legion_proto::v1::{CompleteTaskRequest, Completion, CompletionAck, StartItem, StartResult, StartTaskRequest};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use crate::backoff::Backoff;
use crate::client::{ControlPlane, is_transient};
use crate::metrics::{Metrics, label};
use crate::spool::Spool;

/// Most bytes of encoded items in one report call: 16 MiB, a quarter of the control plane's gRPC
/// message limit (`server::MAX_MESSAGE_BYTES`, 64 MiB), so that four results of the largest size
/// `limits.max_result_bytes` allows (4 MiB) still travel together.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Why a report got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The control plane refused the item (a non-transient status).
    #[error("control plane refused the report: {code:?}: {message}")]
    Refused {
        /// The gRPC code.
        code: tonic::Code,
        /// The control plane's message.
        message: String,
    },
    /// The answer does not follow the protocol (wrong count or order of results).
    #[error("control plane answered out of protocol: {0}")]
    Protocol(String),
    /// The reporter stopped.
    #[error("reporter stopped")]
    Closed,
}

/// Batching and retry settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most items per call. Default 256.
    pub max_batch: usize,
    /// Longest wait after a batch's first item before it is sent (`executor.report_linger_ms`).
    pub linger: Duration,
    /// Calls of one kind in flight at once. Default 4.
    pub max_in_flight: usize,
    /// First retry delay. Default 50 ms.
    pub retry_initial: Duration,
    /// Longest retry delay. Default 5 s.
    pub retry_max: Duration,
    /// Most bytes of encoded items per call; a call always holds at least one item. Default
    /// [`MAX_BATCH_BYTES`].
    pub max_batch_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_batch: 256,
            linger: Duration::from_millis(2),
            max_in_flight: 4,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            max_batch_bytes: MAX_BATCH_BYTES,
        }
    }
}

/// How a completion was taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Completed {
    /// The control plane answered (accepted or stale).
    Answered(CompletionAck),
    /// The control plane could not be reached for `executor.spool_after_ms`: the completion is on disk
    /// in the spool, which replays it later.
    Spooled {
        /// The task.
        task_id: String,
    },
}

/// Items and answers carry their task id, so that answers can be checked against the items.
pub trait Keyed {
    /// The task id.
    fn task_id(&self) -> &str;
}

/// Items know their encoded size, for [`Options::max_batch_bytes`].
pub trait EncodedSize {
    /// Bytes of the item encoded in a request.
    fn size(&self) -> usize;
}

impl Keyed for StartItem {
    fn task_id(&self) -> &str {
        &self.task_id
    }
}
impl EncodedSize for StartItem {
    fn size(&self) -> usize {
        self.encoded_len()
    }
}
impl Keyed for StartResult {
    fn task_id(&self) -> &str {
        &self.task_id
    }
}
impl Keyed for Completion {
    fn task_id(&self) -> &str {
        &self.task_id
    }
}
impl EncodedSize for Completion {
    fn size(&self) -> usize {
        self.encoded_len()
    }
}
impl Keyed for Completed {
    fn task_id(&self) -> &str {
        match self {
            Self::Answered(ack) => &ack.task_id,
            Self::Spooled { task_id } => task_id,
        }
    }
}

type SendFn<I, R> = Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Result<Vec<R>, Status>> + Send + Sync>;
type Pending<I, R> = (I, oneshot::Sender<Result<R, Error>>);
/// Writes items to the spool: per item, its answer when it is on disk, `None` when it is not.
type SpoolFn<I, R> = Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Vec<Option<R>>> + Send + Sync>;

/// Where a kind of item goes when the control plane stays unreachable.
struct Fallback<I, R> {
    spool: SpoolFn<I, R>,
    /// `executor.spool_after_ms`.
    after: Duration,
    /// Since when every call of this kind has failed with a transient error; `None` after a success.
    outage: Mutex<Option<Instant>>,
}

impl<I, R> Fallback<I, R> {
    fn succeeded(&self) {
        *self.outage.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Records a transient failure; returns how long until items should be spooled (zero: now).
    fn failed(&self) -> Duration {
        let now = Instant::now();
        let since = *self.outage.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(now);
        self.after.saturating_sub(now.duration_since(since))
    }
}

/// The reporter. Cheap to clone; the batching loops stop when every clone is dropped.
#[derive(Clone)]
pub struct Reporter {
    starts: mpsc::UnboundedSender<Pending<StartItem, StartResult>>,
    completions: mpsc::UnboundedSender<Pending<Completion, Completed>>,
}

impl Reporter {
    /// Starts the two batching loops, calling `control_plane`; completions are retried until the
    /// control plane answers.
    pub fn spawn(control_plane: Arc<dyn ControlPlane>, options: Options, metrics: Metrics) -> Self {
        Self::build(control_plane, options, metrics, None)
    }

    /// As [`Reporter::spawn`], but completions that fail with transient errors for `spool_after` go to
    /// `spool` (see the module docs).
    pub fn spawn_with_spool(
        control_plane: Arc<dyn ControlPlane>,
        options: Options,
        metrics: Metrics,
        spool: Spool,
        spool_after: Duration,
    ) -> Self {
        let write: SpoolFn<Completion, Completed> = Arc::new(move |items: Vec<Completion>| {
            let spool = spool.clone();
            Box::pin(async move {
                let results = spool.append(&items).await;
                items
                    .into_iter()
                    .zip(results)
                    .map(|(item, result)| match result {
                        Ok(()) => Some(Completed::Spooled { task_id: item.task_id }),
                        Err(e) => {
                            tracing::warn!(task_id = %item.task_id, error = %e, "cannot spool the completion, it keeps waiting for the control plane");
                            None
                        }
                    })
                    .collect()
            })
        });
        let fallback = Fallback { spool: write, after: spool_after, outage: Mutex::new(None) };
        Self::build(control_plane, options, metrics, Some(Arc::new(fallback)))
    }

    fn build(
        control_plane: Arc<dyn ControlPlane>,
        options: Options,
        metrics: Metrics,
        fallback: Option<Arc<Fallback<Completion, Completed>>>,
    ) -> Self {
        let cp = control_plane.clone();
        let start: SendFn<StartItem, StartResult> = Arc::new(move |items| {
            let cp = cp.clone();
            Box::pin(async move { Ok(cp.start_tasks(StartTaskRequest { items }).await?.results) })
        });
        let cp = control_plane;
        let complete: SendFn<Completion, Completed> = Arc::new(move |items| {
            let cp = cp.clone();
            Box::pin(async move {
                Ok(cp
                    .complete_tasks(CompleteTaskRequest { items })
                    .await?
                    .acks
                    .into_iter()
                    .map(Completed::Answered)
                    .collect())
            })
        });
        let (starts, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop("start", rx, start, None, options.clone(), metrics.clone()));
        let (completions, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop("complete", rx, complete, fallback, options, metrics));
        Self { starts, completions }
    }

    /// Asks the control plane whether to run a delivery; waits for the batch's answer.
    ///
    /// # Errors
    /// [`Error`]; transient failures are retried, never returned.
    pub async fn start(&self, item: StartItem) -> Result<StartResult, Error> {
        let (tx, rx) = oneshot::channel();
        self.starts.send((item, tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Reports an attempt's outcome; waits until the control plane answered (accepted or stale) or,
    /// with a spool, until the completion is on disk in the spool.
    ///
    /// # Errors
    /// [`Error`]; transient failures are retried (or spooled), never returned.
    pub async fn complete(&self, item: Completion) -> Result<Completed, Error> {
        let (tx, rx) = oneshot::channel();
        self.completions.send((item, tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

async fn batch_loop<I, R>(
    kind: &'static str,
    mut rx: mpsc::UnboundedReceiver<Pending<I, R>>,
    send: SendFn<I, R>,
    fallback: Option<Arc<Fallback<I, R>>>,
    options: Options,
    metrics: Metrics,
) where
    I: Keyed + EncodedSize + Clone + Send + 'static,
    R: Keyed + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let max_batch = options.max_batch.max(1);
    // An item that did not fit in the previous batch's bytes: the first of the next one.
    let mut carried: Option<Pending<I, R>> = None;
    loop {
        // Wait for a free call slot first: items keep queueing meanwhile and go out together.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let mut bytes = first.0.size();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + options.linger;
        while batch.len() < max_batch {
            let next = match rx.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(item)) => item,
                    Ok(None) | Err(_) => break,
                },
            };
            let size = next.0.size();
            if bytes + size > options.max_batch_bytes {
                carried = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        let send = send.clone();
        let fallback = fallback.clone();
        let options = options.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            deliver(kind, batch, &send, fallback.as_deref(), &options, &metrics).await;
            drop(permit);
        });
    }
}

/// Sends one batch until it is answered, refused or spooled (see the module docs).
fn deliver<'a, I, R>(
    kind: &'static str,
    mut pending: Vec<Pending<I, R>>,
    send: &'a SendFn<I, R>,
    fallback: Option<&'a Fallback<I, R>>,
    options: &'a Options,
    metrics: &'a Metrics,
) -> BoxFuture<'a, ()>
where
    I: Keyed + EncodedSize + Clone + Send + 'static,
    R: Keyed + Send + 'static,
{
    Box::pin(async move {
        let mut backoff = Backoff::new(options.retry_initial, options.retry_max);
        loop {
            pending.retain(|(_, tx)| !tx.is_closed());
            if pending.is_empty() {
                return;
            }
            let items: Vec<I> = pending.iter().map(|(item, _)| item.clone()).collect();
            #[allow(clippy::cast_precision_loss)]
            metrics.report_batch.get_or_create(&label("kind", kind)).observe(items.len() as f64);
            match send(items).await {
                Ok(results) => {
                    if let Some(fallback) = fallback {
                        fallback.succeeded();
                    }
                    return answer(kind, pending, results);
                }
                Err(status) if is_transient(&status) => {
                    metrics.report_retries.get_or_create(&label("kind", kind)).inc();
                    let mut delay = backoff.next_delay();
                    if let Some(fallback) = fallback {
                        let until_spool = fallback.failed();
                        if until_spool.is_zero() {
                            pending = spool(kind, pending, fallback, &status).await;
                            if pending.is_empty() {
                                return;
                            }
                        } else {
                            delay = delay.min(until_spool);
                        }
                    }
                    tracing::warn!(
                        kind, items = pending.len(), code = ?status.code(), error = %status.message(),
                        retry_in_ms = delay.as_millis(), "report failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(status) if pending.len() > 1 => {
                    tracing::warn!(
                        kind, items = pending.len(), code = ?status.code(), error = %status.message(),
                        "report batch refused, sending its items one by one"
                    );
                    for single in pending {
                        deliver(kind, vec![single], send, fallback, options, metrics).await;
                    }
                    return;
                }
                Err(status) => {
                    let error = Error::Refused { code: status.code(), message: status.message().to_owned() };
                    for (_, tx) in pending {
                        let _ = tx.send(Err(error.clone()));
                    }
                    return;
                }
            }
        }
    })
}

/// Writes `pending` to the spool; answers the callers of the items on disk and returns the others.
async fn spool<I, R>(
    kind: &'static str,
    pending: Vec<Pending<I, R>>,
    fallback: &Fallback<I, R>,
    status: &Status,
) -> Vec<Pending<I, R>>
where
    I: Keyed + Clone,
{
    let items: Vec<I> = pending.iter().map(|(item, _)| item.clone()).collect();
    let count = items.len();
    let answers = (fallback.spool)(items).await;
    let mut left = Vec::new();
    for ((item, tx), answer) in pending.into_iter().zip(answers.into_iter().chain(std::iter::repeat_with(|| None))) {
        match answer {
            Some(answer) => {
                let _ = tx.send(Ok(answer));
            }
            None => left.push((item, tx)),
        }
    }
    tracing::warn!(
        kind, spooled = count - left.len(), waiting = left.len(), code = ?status.code(), error = %status.message(),
        "control plane unreachable for executor.spool_after_ms, completions spooled"
    );
    left
}

/// Hands each caller its own answer, checking count and order.
fn answer<I: Keyed, R: Keyed>(kind: &'static str, pending: Vec<Pending<I, R>>, results: Vec<R>) {
    if results.len() != pending.len() {
        let error = Error::Protocol(format!("{} answers for {} {kind} items", results.len(), pending.len()));
        tracing::error!(kind, error = %error, "report answer out of protocol");
        for (_, tx) in pending {
            let _ = tx.send(Err(error.clone()));
        }
        return;
    }
    for ((item, tx), result) in pending.into_iter().zip(results) {
        let outcome = if result.task_id().eq_ignore_ascii_case(item.task_id()) {
            Ok(result)
        } else {
            tracing::error!(kind, expected = %item.task_id(), got = %result.task_id(), "report answer out of order");
            Err(Error::Protocol(format!("answer for task {} where {} was expected", result.task_id(), item.task_id())))
        };
        let _ = tx.send(outcome);
    }
}

#[cfg(test)]
mod tests;
