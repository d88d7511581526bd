//! The reporter: coalesces `StartTask` items and, separately, `CompleteTask` items into batched calls,
//! as docs/architecture.md ("Batching") describes.
//!
//! A batch is sent when it holds `max_batch` items or `linger` after its first item, whichever comes
//! first; up to `max_in_flight` calls of each kind are in flight, and items that arrive meanwhile wait
//! for the next batch (group commit). Each caller awaits its own item's answer. A transient failure
//! ([`crate::client::is_transient`]) is retried with capped backoff, keeping every item: a completion
//! is never dropped. Items whose callers went away (their delivery was requeued at shutdown) are left
//! out of the retries. A batch the control plane refuses outright is split and its items sent one by
//! one, so that one bad item refuses only its own caller.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use legion_proto::v1::{CompleteTaskRequest, Completion, CompletionAck, StartItem, StartResult, StartTaskRequest};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Status;

use crate::backoff::Backoff;
use crate::client::{ControlPlane, is_transient};
use crate::metrics::{Metrics, label};

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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_batch: 256,
            linger: Duration::from_millis(2),
            max_in_flight: 4,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
        }
    }
}

/// Items and answers carry their task id, so that answers can be checked against the items.
pub trait Keyed {
    /// The task id.
    fn task_id(&self) -> &str;
}

impl Keyed for StartItem {
    fn task_id(&self) -> &str {
        &self.task_id
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
impl Keyed for CompletionAck {
    fn task_id(&self) -> &str {
        &self.task_id
    }
}

type SendFn<I, R> = Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, Result<Vec<R>, Status>> + Send + Sync>;
type Pending<I, R> = (I, oneshot::Sender<Result<R, Error>>);

/// The reporter. Cheap to clone; the batching loops stop when every clone is dropped.
#[derive(Clone)]
pub struct Reporter {
    starts: mpsc::UnboundedSender<Pending<StartItem, StartResult>>,
    completions: mpsc::UnboundedSender<Pending<Completion, CompletionAck>>,
}

impl Reporter {
    /// Starts the two batching loops, calling `control_plane`.
    pub fn spawn(control_plane: Arc<dyn ControlPlane>, options: Options, metrics: Metrics) -> Self {
        let cp = control_plane.clone();
        let start: SendFn<StartItem, StartResult> = Arc::new(move |items| {
            let cp = cp.clone();
            Box::pin(async move { Ok(cp.start_tasks(StartTaskRequest { items }).await?.results) })
        });
        let cp = control_plane;
        let complete: SendFn<Completion, CompletionAck> = Arc::new(move |items| {
            let cp = cp.clone();
            Box::pin(async move { Ok(cp.complete_tasks(CompleteTaskRequest { items }).await?.acks) })
        });
        let (starts, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop("start", rx, start, options.clone(), metrics.clone()));
        let (completions, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop("complete", rx, complete, options, metrics));
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

    /// Reports an attempt's outcome; waits until the control plane answered (accepted or stale).
    ///
    /// # Errors
    /// [`Error`]; transient failures are retried, never returned.
    pub async fn complete(&self, item: Completion) -> Result<CompletionAck, Error> {
        let (tx, rx) = oneshot::channel();
        self.completions.send((item, tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

async fn batch_loop<I, R>(
    kind: &'static str,
    mut rx: mpsc::UnboundedReceiver<Pending<I, R>>,
    send: SendFn<I, R>,
    options: Options,
    metrics: Metrics,
) where
    I: Keyed + Clone + Send + 'static,
    R: Keyed + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let max_batch = options.max_batch.max(1);
    loop {
        // Wait for a free call slot first: items keep queueing meanwhile and go out together.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + options.linger;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(item)) => batch.push(item),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        let send = send.clone();
        let options = options.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            deliver(kind, batch, &send, &options, &metrics).await;
            drop(permit);
        });
    }
}

/// Sends one batch until it is answered or refused (see the module docs).
fn deliver<'a, I, R>(
    kind: &'static str,
    mut pending: Vec<Pending<I, R>>,
    send: &'a SendFn<I, R>,
    options: &'a Options,
    metrics: &'a Metrics,
) -> BoxFuture<'a, ()>
where
    I: Keyed + Clone + Send + 'static,
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
                Ok(results) => return answer(kind, pending, results),
                Err(status) if is_transient(&status) => {
                    metrics.report_retries.get_or_create(&label("kind", kind)).inc();
                    let delay = backoff.next_delay();
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
                        deliver(kind, vec![single], send, options, metrics).await;
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
