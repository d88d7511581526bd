//! The submit driver: N `SubmitTask` calls, `concurrency` of them in flight at any time, spread over
//! the given clients (one HTTP/2 connection each). Calls are not retried: a failed submit is counted
//! by gRPC code and reported, since a benchmark that hides errors measures nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use legion_proto::v1::SubmitTaskRequest;
use legion_proto::v1::task_service_client::TaskServiceClient;
use uuid::Uuid;

use crate::client::AuthChannel;

/// What to submit.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Number of tasks.
    pub tasks: usize,
    /// Calls in flight at once (at least 1).
    pub concurrency: usize,
    /// `extension.runner.function`.
    pub function: String,
    /// The args of every task (a JSON object).
    pub args: serde_json::Value,
}

/// One accepted submit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Submitted {
    /// The task id the control plane returned.
    pub id: Uuid,
    /// Wall-clock time just before the call was sent.
    pub sent_at: DateTime<Utc>,
    /// Round trip of the call.
    pub rpc: Duration,
}

/// Everything the driver saw.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Accepted submits, in no particular order.
    pub accepted: Vec<Submitted>,
    /// Failed submits by gRPC code name (`Unavailable`, …), or `bad_task_id` for a response whose
    /// task id is not a UUID.
    pub failures: BTreeMap<String, u64>,
    /// The first failure's message, to show what went wrong.
    pub first_error: Option<String>,
    /// Wall time from the first call to the last answer.
    pub elapsed: Duration,
}

struct Worker {
    accepted: Vec<Submitted>,
    failures: BTreeMap<String, u64>,
    first_error: Option<String>,
}

/// Runs `plan` on `clients` (at least one; workers are spread round-robin over them) and returns what
/// happened. Logs progress every two seconds.
pub async fn submit_all(clients: &[TaskServiceClient<AuthChannel>], plan: &Plan) -> Outcome {
    if clients.is_empty() || plan.tasks == 0 {
        return Outcome::default();
    }
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let args = legion_proto::json_to_value(&plan.args);
    let started = Instant::now();
    let progress = tokio::spawn(log_progress(Arc::clone(&done), plan.tasks));

    let workers: Vec<_> = (0..plan.concurrency.clamp(1, plan.tasks))
        .map(|w| {
            let mut client = clients[w % clients.len()].clone();
            let (next, done) = (Arc::clone(&next), Arc::clone(&done));
            let request = SubmitTaskRequest {
                function: plan.function.clone(),
                args: Some(args.clone()),
                ..SubmitTaskRequest::default()
            };
            let total = plan.tasks;
            tokio::spawn(async move {
                let mut worker = Worker { accepted: Vec::new(), failures: BTreeMap::new(), first_error: None };
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let sent_at = Utc::now();
                    let t0 = Instant::now();
                    let result = client.submit_task(request.clone()).await;
                    let rpc = t0.elapsed();
                    done.fetch_add(1, Ordering::Relaxed);
                    let failure = match result {
                        Ok(response) => {
                            let id = response.into_inner().task.map(|t| t.id).unwrap_or_default();
                            match id.parse::<Uuid>() {
                                Ok(id) => {
                                    worker.accepted.push(Submitted { id, sent_at, rpc });
                                    continue;
                                }
                                Err(_) => ("bad_task_id".to_owned(), format!("response task id {id:?} is not a uuid")),
                            }
                        }
                        Err(status) => (format!("{:?}", status.code()), status.message().to_owned()),
                    };
                    *worker.failures.entry(failure.0).or_default() += 1;
                    worker.first_error.get_or_insert(failure.1);
                }
                worker
            })
        })
        .collect();

    let mut outcome = Outcome { accepted: Vec::with_capacity(plan.tasks), ..Outcome::default() };
    for joined in futures_util::future::join_all(workers).await {
        match joined {
            Ok(worker) => {
                outcome.accepted.extend(worker.accepted);
                for (code, n) in worker.failures {
                    *outcome.failures.entry(code).or_default() += n;
                }
                if outcome.first_error.is_none() {
                    outcome.first_error = worker.first_error;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "submit worker died");
                *outcome.failures.entry("worker_panic".into()).or_default() += 1;
            }
        }
    }
    outcome.elapsed = started.elapsed();
    progress.abort();
    if let Some(error) = &outcome.first_error {
        tracing::warn!(failures = ?outcome.failures, first_error = %error, "some submits failed");
    }
    outcome
}

async fn log_progress(done: Arc<AtomicUsize>, total: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tick.tick().await;
        tracing::info!(submitted = done.load(Ordering::Relaxed), total, "submitting");
    }
}
