//! The group-commit submit writer (docs/architecture.md, delivery protocol step 1).
//!
//! `SubmitTask` calls hand their validated task to a channel; a writer drains up to
//! `control_plane.submit_batch` waiting submits and writes them in one transaction (tasks plus outbox
//! rows), then answers each caller. While a batch commits, the next one gathers, so the cost of a commit
//! is shared by every submit that arrived meanwhile. A few batches may commit at once (`writers`).
//! A call returns only after its commit: an accepted task is durable.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::idempotency::same_parameters;
use super::validate::{InvalidArgument, SubmitSpec};
use crate::dispatch::message;
use crate::events::{Events, StatusChange};
use crate::metrics::Metrics;
use crate::store::{self, Inserted, NewTask, Store};

/// Why a submit was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is not acceptable (e.g. an unknown function).
    #[error(transparent)]
    Invalid(#[from] InvalidArgument),
    /// The function's extension is disabled by an operator.
    #[error("function: extension {extension:?} is disabled")]
    Disabled {
        /// The disabled extension.
        extension: String,
    },
    /// Storage failed; nothing was written for this submit.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The idempotency key belongs to a task submitted with other parameters
    /// ([`super::idempotency::same_parameters`]).
    #[error("idempotency_key: already used by task {existing} with other parameters")]
    IdempotencyConflict {
        /// The task that holds the key.
        existing: Uuid,
    },
    /// The writer stopped (the process is shutting down).
    #[error("the control plane is shutting down")]
    ShuttingDown,
}

impl Error {
    /// The meaning of the error for gRPC and REST callers.
    pub fn code(&self) -> legion_common::ErrorCode {
        use legion_common::ErrorCode;
        match self {
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Disabled { .. } => ErrorCode::FailedPrecondition,
            Self::IdempotencyConflict { .. } => ErrorCode::AlreadyExists,
            Self::Store(e) => e.code(),
            Self::ShuttingDown => ErrorCode::Unavailable,
        }
    }
}

/// What the writer signals after a commit.
#[derive(Clone)]
pub struct Signals {
    /// Wakes the outbox publisher.
    pub wake: Arc<Notify>,
    /// Status changes for watchers.
    pub events: Events,
    /// Metrics.
    pub metrics: Metrics,
}

struct Pending {
    task: NewTask,
    reply: oneshot::Sender<Result<Inserted, Error>>,
}

/// The entry point of submits. Cheap to clone.
#[derive(Clone)]
pub struct Submitter {
    sender: mpsc::Sender<Pending>,
}

impl Submitter {
    /// Starts the writer. `batch` is `control_plane.submit_batch`; `writers` batches may commit at once.
    /// The writer stops when every `Submitter` is dropped or `shutdown` is cancelled, after answering
    /// every submit it received.
    pub fn spawn(
        store: Arc<dyn Store>,
        batch: usize,
        writers: usize,
        signals: Signals,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(batch.max(1) * writers.max(1) * 2);
        let writer = tokio::spawn(write_loop(receiver, store, batch.max(1), writers.max(1), signals, shutdown));
        (Self { sender }, writer)
    }

    /// Submits a validated task and waits for its commit. A task whose idempotency key exists is not
    /// written: the existing task is returned (`created = false`) if it has the same parameters.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown function, [`Error::Disabled`], [`Error::IdempotencyConflict`],
    /// [`Error::Store`], [`Error::ShuttingDown`].
    pub async fn submit(&self, spec: SubmitSpec) -> Result<Inserted, Error> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Pending { task: new_task(spec), reply }).await.map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// The task to insert for a validated submit: a new UUIDv7, its routing key (with the region, if any)
/// and the broker message of dispatch 1.
pub fn new_task(spec: SubmitSpec) -> NewTask {
    let id = Uuid::now_v7();
    let function = spec.function.to_string();
    let routing_key = legion_common::broker::routing_key(&spec.function, spec.region.as_deref());
    let payload =
        if spec.delay_ms == 0 { message::payload(id, 1, &function, &spec.args, spec.timeout_ms) } else { Vec::new() };
    NewTask {
        id,
        function,
        args: spec.args,
        args_json: spec.args_json,
        priority: spec.priority,
        max_attempts: spec.max_attempts,
        timeout_ms: spec.timeout_ms,
        delay_ms: spec.delay_ms,
        idempotency_key: spec.idempotency_key,
        region: spec.region,
        routing_key,
        payload,
        owner: spec.owner,
        chain: spec.chain,
        chain_version: spec.chain_version,
        retry: spec.retry,
    }
}

async fn write_loop(
    mut receiver: mpsc::Receiver<Pending>,
    store: Arc<dyn Store>,
    batch: usize,
    writers: usize,
    signals: Signals,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(writers));
    let mut in_flight = JoinSet::new();
    let mut closing = false;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let first = if closing {
            receiver.recv().await
        } else {
            tokio::select! {
                biased;
                pending = receiver.recv() => pending,
                () = shutdown.cancelled() => {
                    // Refuse new submits; answer those already queued.
                    receiver.close();
                    closing = true;
                    receiver.recv().await
                }
            }
        };
        let Some(first) = first else { break };
        let mut items = vec![first];
        while items.len() < batch {
            match receiver.try_recv() {
                Ok(pending) => items.push(pending),
                Err(_) => break,
            }
        }
        let store = store.clone();
        let signals = signals.clone();
        in_flight.spawn(async move {
            write_batch(store.as_ref(), items, &signals).await;
            drop(permit);
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    tracing::debug!("submit writer stopped");
}

/// Checks the batch's functions against the catalog, inserts the rest in one transaction, answers all.
async fn write_batch(store: &dyn Store, items: Vec<Pending>, signals: &Signals) {
    let mut names: Vec<String> = items.iter().map(|p| p.task.function.clone()).collect();
    names.sort_unstable();
    names.dedup();
    let catalog = match store.function_status(&names).await {
        Ok(catalog) => catalog,
        Err(e) => {
            tracing::warn!(error = %e, submits = items.len(), "cannot check submitted functions");
            let message = e.to_string();
            let code = e.code();
            for pending in items {
                let _ = pending.reply.send(Err(Error::Store(rebuild(code, &message))));
            }
            return;
        }
    };
    let mut tasks = Vec::with_capacity(items.len());
    let mut replies = Vec::with_capacity(items.len());
    for Pending { task, reply } in items {
        match check_catalog(&catalog, &task.function) {
            Ok(()) => {
                tasks.push(task);
                replies.push(reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
    if tasks.is_empty() {
        return;
    }
    match store.insert_tasks(&tasks).await {
        Ok(results) => answer(&tasks, results, replies, signals),
        Err(e) if tasks.len() > 1 && !matches!(e, store::Error::Unavailable(_)) => {
            // One bad task must not fail the others: write each alone.
            tracing::warn!(error = %e, submits = tasks.len(), "batch insert failed, inserting one by one");
            for (task, reply) in tasks.into_iter().zip(replies) {
                match store.insert_tasks(std::slice::from_ref(&task)).await {
                    Ok(results) => answer(std::slice::from_ref(&task), results, vec![reply], signals),
                    Err(e) => {
                        let _ = reply.send(Err(Error::Store(e)));
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, submits = tasks.len(), "cannot insert submitted tasks");
            let message = e.to_string();
            let code = e.code();
            for reply in replies {
                let _ = reply.send(Err(Error::Store(rebuild(code, &message))));
            }
        }
    }
}

/// Answers each submit of a committed batch: its task, or [`Error::IdempotencyConflict`] when its key
/// found a task with other parameters.
fn answer(
    tasks: &[NewTask],
    results: Vec<Inserted>,
    replies: Vec<oneshot::Sender<Result<Inserted, Error>>>,
    signals: &Signals,
) {
    let changes: Vec<StatusChange> = results
        .iter()
        .filter(|r| r.created)
        .map(|r| StatusChange { task_id: r.task.id, status: r.task.status, attempt: 0 })
        .collect();
    signals.metrics.submitted.inc_by(changes.len() as u64);
    signals.metrics.observe_batch("submit", results.len());
    if !changes.is_empty() {
        signals.wake.notify_one();
        signals.events.publish(&changes);
    }
    for ((task, result), reply) in tasks.iter().zip(results).zip(replies) {
        let _ = reply.send(check_reuse(task, result));
    }
}

/// The answer to a submit whose insert returned `inserted`: a reused key must carry the same parameters.
fn check_reuse(task: &NewTask, inserted: Inserted) -> Result<Inserted, Error> {
    if inserted.created || same_parameters(task, &inserted.task) {
        return Ok(inserted);
    }
    tracing::debug!(
        task_id = %inserted.task.id,
        idempotency_key = task.idempotency_key.as_deref().unwrap_or_default(),
        "idempotency key reused with other parameters"
    );
    Err(Error::IdempotencyConflict { existing: inserted.task.id })
}

/// Whether a function may be submitted: known to the catalog and its extension not disabled.
fn check_catalog(catalog: &HashMap<String, bool>, function: &str) -> Result<(), Error> {
    match catalog.get(function) {
        None => Err(InvalidArgument::new("function", format!("unknown function {function:?}")).into()),
        Some(true) => Err(Error::Disabled { extension: function.split('.').next().unwrap_or(function).to_owned() }),
        Some(false) => Ok(()),
    }
}

/// A store error for each caller of a failed batch (store errors are not `Clone`).
fn rebuild(code: legion_common::ErrorCode, message: &str) -> store::Error {
    use legion_common::ErrorCode;
    match code {
        ErrorCode::Unavailable => store::Error::Unavailable(message.to_owned()),
        ErrorCode::InvalidArgument => store::Error::InvalidData(message.to_owned()),
        _ => store::Error::Database(message.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use legion_common::ErrorCode;
    use legion_common::settings::Limits;
    use legion_proto::v1::SubmitTaskRequest;

    use super::*;
    use crate::tasks::validate::validate_submit;

    #[test]
    fn unknown_and_disabled_functions_are_refused() {
        let catalog: HashMap<String, bool> =
            [("core.util.echo".to_owned(), false), ("http.request.get".to_owned(), true)].into_iter().collect();
        assert!(check_catalog(&catalog, "core.util.echo").is_ok());
        let unknown = check_catalog(&catalog, "x.y.z").expect_err("unknown");
        assert_eq!(unknown.to_string(), "function: unknown function \"x.y.z\"");
        assert_eq!(unknown.code(), ErrorCode::InvalidArgument);
        let disabled = check_catalog(&catalog, "http.request.get").expect_err("disabled");
        assert_eq!(disabled.code(), ErrorCode::FailedPrecondition);
        assert_eq!(disabled.to_string(), "function: extension \"http\" is disabled");
    }

    #[test]
    fn a_new_task_carries_its_first_dispatch() {
        let req = SubmitTaskRequest { function: "core.util.echo".into(), ..SubmitTaskRequest::default() };
        let task = new_task(validate_submit(&req, &Limits::default()).expect("valid"));
        let message: legion_common::broker::TaskMessage = serde_json::from_slice(&task.payload).expect("message");
        assert_eq!((message.task_id, message.dispatch, message.timeout_ms), (task.id, 1, 30_000));
        let delayed = SubmitTaskRequest { delay_ms: 10, ..req.clone() };
        assert!(new_task(validate_submit(&delayed, &Limits::default()).expect("valid")).payload.is_empty());
        assert_eq!(task.routing_key, "core.util.echo");
        let regional = SubmitTaskRequest { region: Some("eu-west".into()), ..req };
        let regional = new_task(validate_submit(&regional, &Limits::default()).expect("valid"));
        assert_eq!(regional.routing_key, "core.util.echo.eu-west");
    }

    #[test]
    fn a_reused_key_with_other_parameters_is_a_conflict() {
        let req = SubmitTaskRequest {
            function: "core.util.echo".into(),
            idempotency_key: Some("k".into()),
            ..SubmitTaskRequest::default()
        };
        let first = new_task(validate_submit(&req, &Limits::default()).expect("valid"));
        let stored = Inserted {
            task: crate::store::Task {
                id: first.id,
                function: first.function.clone(),
                status: legion_common::TaskStatus::Pending,
                args: first.args.clone(),
                result: None,
                error: None,
                attempt: 0,
                failures: 0,
                max_attempts: first.max_attempts,
                dispatch: 1,
                redeliveries: 0,
                priority: first.priority,
                timeout_ms: first.timeout_ms,
                chain: None,
                root_id: None,
                parent_id: None,
                relationship_id: None,
                depth: 0,
                chain_version: None,
                fanout_index: None,
                node: None,
                region: None,
                idempotency_key: first.idempotency_key.clone(),
                owner: String::new(),
                not_before: None,
                created_at: chrono::Utc::now(),
                started_at: None,
                finished_at: None,
                retry: None,
                replays: 0,
            },
            created: false,
        };
        let again = new_task(validate_submit(&req, &Limits::default()).expect("valid"));
        assert_eq!(check_reuse(&again, stored.clone()).expect("same parameters").task.id, first.id);
        let other =
            new_task(validate_submit(&SubmitTaskRequest { priority: 5, ..req }, &Limits::default()).expect("valid"));
        let err = check_reuse(&other, stored).expect_err("other parameters");
        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        assert_eq!(
            err.to_string(),
            format!("idempotency_key: already used by task {} with other parameters", first.id)
        );
    }
}
