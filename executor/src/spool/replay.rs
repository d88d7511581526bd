//! Replay: a background task that sends spooled completions to the control plane, oldest file first
//! and in line order, in `CompleteTask` batches (at most [`Options::max_batch`] items and
//! [`crate::reporter::MAX_BATCH_BYTES`] of encoded items, always at least one), retrying transient
//! failures with capped backoff until the control plane answers. A file is deleted once every line of
//! it was answered, accepted or stale: after a crash between an answer and the deletion, the lines
//! are sent again and are stale, which changes nothing.
//!
//! A batch the control plane refuses outright is sent item by item; an item refused alone is, when it
//! carries a result, sent once more as the failure naming the refusal (as the handler does for live
//! completions), and otherwise dropped with an error log (`legion_executor_spool_refused_total`):
//! retrying a refused item forever would stop the spool behind it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use legion_proto::v1::{CompleteTaskRequest, Completion, FailureKind, completion};
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::Spool;
use super::codec::Spooled;
use crate::backoff::Backoff;
use crate::client::{ControlPlane, is_transient};
use crate::reporter::MAX_BATCH_BYTES;

/// Batching and retry of the replay.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most completions per call. Default 256.
    pub max_batch: usize,
    /// First retry delay. Default 100 ms.
    pub retry_initial: Duration,
    /// Longest retry delay. Default 1 s: spooled completions arrive within about a second of the control
    /// plane's return, and a call a second to an unreachable control plane costs nothing.
    pub retry_max: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { max_batch: 256, retry_initial: Duration::from_millis(100), retry_max: Duration::from_secs(1) }
    }
}

/// Stopped before everything was answered.
struct Stopped;

/// Replays `spool` into `control_plane` until `stop` is cancelled: what is spooled at start first,
/// then whatever is appended later.
pub async fn run(spool: Spool, control_plane: Arc<dyn ControlPlane>, options: Options, stop: CancellationToken) {
    let replayer = Replayer { spool, control_plane, options, stop };
    loop {
        let files = replayer.spool.seal();
        if files.is_empty() {
            tokio::select! {
                () = replayer.stop.cancelled() => return,
                () = replayer.spool.appended() => continue,
            }
        }
        for seq in files {
            if replayer.file(seq).await.is_err() {
                return;
            }
        }
    }
}

struct Replayer {
    spool: Spool,
    control_plane: Arc<dyn ControlPlane>,
    options: Options,
    stop: CancellationToken,
}

impl Replayer {
    /// Replays one sealed file and deletes it.
    async fn file(&self, seq: u64) -> Result<(), Stopped> {
        let mut backoff = Backoff::new(self.options.retry_initial, self.options.retry_max);
        let records = loop {
            match self.spool.read(seq, Utc::now()).await {
                Ok(records) => break records,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a spool file, retrying");
                    self.pause(&mut backoff).await?;
                }
            }
        };
        let count = records.len();
        let mut rest = records.as_slice();
        while !rest.is_empty() {
            let take = batch_len(rest, self.options.max_batch);
            let (batch, tail) = rest.split_at(take);
            self.send(batch.to_vec()).await?;
            rest = tail;
        }
        loop {
            match self.spool.remove(seq) {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot delete a replayed spool file, retrying");
                    self.pause(&mut backoff).await?;
                }
            }
        }
        if count > 0 {
            tracing::info!(file = seq, completions = count, "spooled completions replayed");
        }
        Ok(())
    }

    /// Sends `batch` until each completion is answered (or refused alone).
    async fn send(&self, mut batch: Vec<Spooled>) -> Result<(), Stopped> {
        let mut backoff = Backoff::new(self.options.retry_initial, self.options.retry_max);
        loop {
            let now = Utc::now();
            batch.retain(|s| !self.spool.expired(s, now));
            if batch.is_empty() {
                return Ok(());
            }
            let items: Vec<Completion> = batch.iter().map(|s| s.completion.clone()).collect();
            let answer = tokio::select! {
                () = self.stop.cancelled() => return Err(Stopped),
                answer = self.control_plane.complete_tasks(CompleteTaskRequest { items: items.clone() }) => answer,
            };
            match answer {
                Ok(response) if answered_in_order(&items, &response.acks) => {
                    let stale = response.acks.iter().filter(|a| !a.accepted).count();
                    tracing::debug!(items = items.len(), stale, "spooled completions answered");
                    self.spool.metrics().spool_replayed.inc_by(items.len() as u64);
                    return Ok(());
                }
                Ok(response) => {
                    tracing::error!(
                        items = items.len(),
                        acks = response.acks.len(),
                        "control plane answered a spool replay out of protocol, retrying"
                    );
                }
                Err(status) if is_transient(&status) => {
                    tracing::debug!(code = ?status.code(), error = %status.message(), "spool replay failed, retrying");
                }
                Err(status) if items.len() > 1 => {
                    tracing::warn!(
                        items = items.len(), code = ?status.code(), error = %status.message(),
                        "spool replay batch refused, sending its items one by one"
                    );
                    for item in items {
                        self.send_alone(item).await?;
                    }
                    return Ok(());
                }
                Err(status) => {
                    return match items.into_iter().next() {
                        Some(item) => self.refused(item, status.message()).await,
                        None => Ok(()),
                    };
                }
            }
            self.pause(&mut backoff).await?;
        }
    }

    /// Sends one completion until it is answered or refused.
    async fn send_alone(&self, item: Completion) -> Result<(), Stopped> {
        let mut backoff = Backoff::new(self.options.retry_initial, self.options.retry_max);
        loop {
            let answer = tokio::select! {
                () = self.stop.cancelled() => return Err(Stopped),
                answer = self.control_plane.complete_tasks(CompleteTaskRequest { items: vec![item.clone()] }) => answer,
            };
            match answer {
                Ok(response) if answered_in_order(std::slice::from_ref(&item), &response.acks) => {
                    self.spool.metrics().spool_replayed.inc();
                    return Ok(());
                }
                Ok(_) => {
                    tracing::error!(task_id = %item.task_id, "control plane answered a spool replay out of protocol, retrying")
                }
                Err(status) if is_transient(&status) => {}
                Err(status) => return Box::pin(self.refused(item, status.message())).await,
            }
            self.pause(&mut backoff).await?;
        }
    }

    /// A completion refused alone: a result is reported once more as the failure naming the refusal;
    /// anything else is dropped with an error log and counted.
    async fn refused(&self, mut item: Completion, reason: &str) -> Result<(), Stopped> {
        if matches!(item.outcome, Some(completion::Outcome::ResultJson(_))) {
            tracing::warn!(task_id = %item.task_id, error = %reason, "control plane refused a spooled result, reporting a failure instead");
            item.outcome = Some(completion::Outcome::Failure(legion_proto::v1::Failure {
                kind: FailureKind::Error as i32,
                message: format!("control plane refused the result: {reason}"),
            }));
            return Box::pin(self.send_alone(item)).await;
        }
        self.spool.metrics().spool_refused.inc();
        tracing::error!(task_id = %item.task_id, attempt = item.attempt, error = %reason, "control plane refused a spooled completion, dropping it");
        Ok(())
    }

    async fn pause(&self, backoff: &mut Backoff) -> Result<(), Stopped> {
        tokio::select! {
            () = self.stop.cancelled() => Err(Stopped),
            () = tokio::time::sleep(backoff.next_delay()) => Ok(()),
        }
    }
}

/// How many of `records` go in the next call: at most `max_batch`, at most
/// [`MAX_BATCH_BYTES`] encoded, at least one.
fn batch_len(records: &[Spooled], max_batch: usize) -> usize {
    let mut bytes = 0usize;
    let mut count = 0usize;
    for record in records.iter().take(max_batch.max(1)) {
        let size = record.completion.encoded_len();
        if count > 0 && bytes + size > MAX_BATCH_BYTES {
            break;
        }
        bytes += size;
        count += 1;
    }
    count.max(1)
}

fn answered_in_order(items: &[Completion], acks: &[legion_proto::v1::CompletionAck]) -> bool {
    items.len() == acks.len() && items.iter().zip(acks).all(|(i, a)| i.task_id.eq_ignore_ascii_case(&a.task_id))
}
