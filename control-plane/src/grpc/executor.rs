//! `legion.v1.ExecutorService`: node certificates only (mTLS).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use legion_common::ExtensionState;
use legion_common::function::validate_segment;
use legion_proto::v1;
use legion_proto::v1::executor_service_server::ExecutorService;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::auth::node_principal;
use super::{invalid, store_status};
use crate::delivery::complete::{CompleteItem, FailureKind, Outcome, ResultLimits, Verdict};
use crate::delivery::start::{Decision, StartItem, is_dead_letter};
use crate::events::Events;
use crate::metrics::{DecisionLabel, Metrics, OutcomeLabel};
use crate::store::{ExtensionManifest, FunctionInfo, Heartbeat, NodeRegistration, ReportedState, RunnerInfo, Store};

/// Longest version string or function description accepted from an executor, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// The settings the executor service applies.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// `transport.delivery_limit`.
    pub delivery_limit: u32,
    /// `control_plane.commit_batch`: most items per transaction.
    pub commit_batch: usize,
    /// The live limits; `limits.max_result_bytes` and `limits.max_json_depth` apply to results.
    pub limits: tokio::sync::watch::Receiver<legion_common::settings::Limits>,
    /// Heartbeat interval told to nodes, in ms.
    pub heartbeat_ms: u32,
    /// `control_plane.node_lease_ms`, told to nodes (they derive their AMQP heartbeat from it).
    pub node_lease_ms: u32,
    /// A StartTask or CompleteTask refreshes the node's `last_heartbeat` once it is older than this
    /// (see `crate::touch_interval`); a lost node is made active by any call.
    pub touch_interval: Duration,
}

/// The executor API over the store.
pub struct ExecutorApi {
    store: Arc<dyn Store>,
    config: ExecutorConfig,
    events: Events,
    wake: Arc<Notify>,
    metrics: Metrics,
}

impl ExecutorApi {
    fn result_limits(&self) -> ResultLimits {
        let limits = self.config.limits.borrow();
        ResultLimits { max_bytes: limits.max_result_bytes, max_depth: limits.max_json_depth }
    }

    /// The service. `wake` is the outbox publisher's.
    pub fn new(
        store: Arc<dyn Store>,
        config: ExecutorConfig,
        events: Events,
        wake: Arc<Notify>,
        metrics: Metrics,
    ) -> Self {
        Self { store, config, events, wake, metrics }
    }

    /// A node's last heartbeat (`stopped`): the node leaves the node list, and any attempt still
    /// recorded as running on it is recovered as a lost node's ([`crate::store::DeliveryStore::stop_node`]).
    async fn stop(&self, node: &str) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let changes = self.store.stop_node(node, self.config.delivery_limit).await.map_err(store_status)?;
        if changes.is_empty() {
            tracing::info!(node = %node, "node stopped; removed from the node list");
        } else {
            tracing::warn!(node = %node, tasks = changes.len(), "node stopped with attempts still running; tasks recovered");
            self.metrics.redispatched.inc_by(changes.len() as u64);
            self.wake.notify_one();
            self.events.publish(&changes);
        }
        Ok(Response::new(v1::HeartbeatResponse::default()))
    }

    /// Records that `node` is alive (it called): one cheap UPDATE per call, see
    /// [`crate::store::CatalogStore::touch_node`].
    async fn touch(&self, node: &str) -> Result<(), Status> {
        if self.store.touch_node(node, self.config.touch_interval).await.map_err(store_status)? {
            tracing::info!(node = %node, "lost node is calling again, marked active");
        }
        Ok(())
    }
}

/// The attempts a heartbeat answers with `abort`: the reported ones the store found stale (`stale`,
/// see [`crate::store::HeartbeatReply::abort`]) and those with a malformed task id, each as reported,
/// in the order of the report.
fn abort_list(running: &[v1::RunningAttempt], stale: &HashSet<(Uuid, u32)>) -> Vec<v1::RunningAttempt> {
    running
        .iter()
        .filter(|reported| match Uuid::parse_str(&reported.task_id) {
            Ok(id) => stale.contains(&(id, reported.attempt)),
            Err(_) => true,
        })
        .cloned()
        .collect()
}

/// Checks that the name in a request is the certificate's.
fn same_node(principal: &str, claimed: &str) -> Result<(), Status> {
    if principal == claimed {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "name: {claimed:?} does not match the node name {principal:?} of the client certificate"
        )))
    }
}

fn text(field: &str, value: &str) -> Result<String, Status> {
    if value.len() > MAX_TEXT_BYTES || value.contains('\0') {
        return Err(invalid(field, format!("must be at most {MAX_TEXT_BYTES} bytes without NUL")));
    }
    Ok(value.to_owned())
}

fn registration(name: String, req: &v1::RegisterNodeRequest) -> Result<NodeRegistration, Status> {
    if req.concurrency == 0 || req.concurrency > u32::from(u16::MAX) {
        return Err(invalid("concurrency", format!("must be 1 to 65535, got {}", req.concurrency)));
    }
    let region = if req.region.is_empty() { "default".to_owned() } else { req.region.clone() };
    legion_common::broker::validate_region(&region).map_err(|e| invalid("region", e))?;
    let mut extensions = Vec::with_capacity(req.extensions.len());
    for (i, ext) in req.extensions.iter().enumerate() {
        validate_segment(&ext.name).map_err(|e| invalid(&format!("extensions[{i}].name"), e))?;
        let mut runners = Vec::with_capacity(ext.runners.len());
        for (j, runner) in ext.runners.iter().enumerate() {
            validate_segment(&runner.name).map_err(|e| invalid(&format!("extensions[{i}].runners[{j}].name"), e))?;
            let mut functions = Vec::with_capacity(runner.functions.len());
            for (k, f) in runner.functions.iter().enumerate() {
                let field = format!("extensions[{i}].runners[{j}].functions[{k}]");
                validate_segment(&f.name).map_err(|e| invalid(&format!("{field}.name"), e))?;
                functions.push(FunctionInfo {
                    name: f.name.clone(),
                    description: text(&format!("{field}.description"), &f.description)?,
                });
            }
            runners.push(RunnerInfo { name: runner.name.clone(), functions });
        }
        extensions.push(ExtensionManifest {
            name: ext.name.clone(),
            version: text(&format!("extensions[{i}].version"), &ext.version)?,
            runners,
        });
    }
    Ok(NodeRegistration {
        name,
        region,
        version: text("version", &req.version)?,
        concurrency: req.concurrency,
        extensions,
    })
}

#[tonic::async_trait]
impl ExecutorService for ExecutorApi {
    #[tracing::instrument(skip_all, fields(node))]
    async fn register_node(
        &self,
        request: Request<v1::RegisterNodeRequest>,
    ) -> Result<Response<v1::RegisterNodeResponse>, Status> {
        let node = node_principal(&request)?;
        tracing::Span::current().record("node", node.as_str());
        let req = request.get_ref();
        same_node(&node, &req.name)?;
        let registration = registration(node, req)?;
        let disabled_extensions = self.store.register_node(&registration).await.map_err(store_status)?;
        tracing::info!(
            node = %registration.name,
            region = %registration.region,
            version = %registration.version,
            concurrency = registration.concurrency,
            extensions = registration.extensions.len(),
            "node registered"
        );
        Ok(Response::new(v1::RegisterNodeResponse {
            heartbeat_ms: self.config.heartbeat_ms,
            disabled_extensions,
            node_lease_ms: self.config.node_lease_ms,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let node = node_principal(&request)?;
        let req = request.get_ref();
        same_node(&node, &req.name)?;
        if req.stopped {
            return self.stop(&node).await;
        }
        let running: Vec<(Uuid, u32)> = req
            .running
            .iter()
            .filter_map(|reported| Uuid::parse_str(&reported.task_id).ok().map(|id| (id, reported.attempt)))
            .collect();
        let mut extensions = Vec::with_capacity(req.extensions.len());
        for (i, status) in req.extensions.iter().enumerate() {
            let state = ExtensionState::from_wire(status.state)
                .map_err(|_| invalid(&format!("extensions[{i}].state"), "must be a known extension state"))?;
            let reason = (!status.reason.is_empty())
                .then(|| text(&format!("extensions[{i}].reason"), &status.reason))
                .transpose()?;
            extensions.push(ReportedState { extension: status.name.clone(), state, reason });
        }
        let heartbeat = Heartbeat { node, draining: req.draining, extensions, running };
        let reply = self.store.heartbeat(&heartbeat).await.map_err(store_status)?;
        let abort = abort_list(&req.running, &reply.abort.into_iter().collect());
        if !abort.is_empty() {
            tracing::info!(node = %heartbeat.node, attempts = abort.len(), "node told to abort attempts");
        }
        Ok(Response::new(v1::HeartbeatResponse { abort, disabled_extensions: reply.disabled_extensions }))
    }

    async fn start_task(
        &self,
        request: Request<v1::StartTaskRequest>,
    ) -> Result<Response<v1::StartTaskResponse>, Status> {
        let node = node_principal(&request)?;
        self.touch(&node).await?;
        let items: Vec<StartItem> = request
            .into_inner()
            .items
            .into_iter()
            .map(|i| StartItem { task_id: i.task_id, dispatch: i.dispatch, redelivered: i.redelivered })
            .collect();
        // A node runs only functions of extensions it registered (role profiles): anything else goes back
        // to the queue for a node that did.
        let request_ids: Vec<String> = items.iter().map(|i| i.task_id.clone()).collect();
        let ids: Vec<uuid::Uuid> = items.iter().filter_map(|i| uuid::Uuid::parse_str(&i.task_id).ok()).collect();
        let refused: std::collections::HashMap<String, String> = self
            .store
            .unregistered_tasks(&node, &ids)
            .await
            .map_err(store_status)?
            .into_iter()
            .map(|u| (u.task_id.to_string(), u.reason(&node)))
            .collect();
        let is_refused: Vec<Option<String>> = items.iter().map(|i| refused.get(&i.task_id).cloned()).collect();
        let items: Vec<StartItem> = items.into_iter().filter(|i| !refused.contains_key(&i.task_id)).collect();
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.config.commit_batch.max(1)) {
            let (decisions, changes) =
                self.store.start(&node, chunk, self.config.delivery_limit).await.map_err(store_status)?;
            self.metrics.observe_batch("start", chunk.len());
            self.events.publish(&changes);
            for (item, decision) in chunk.iter().zip(decisions) {
                results.push(match decision {
                    Decision::Run { attempt } => {
                        self.metrics.starts.get_or_create(&DecisionLabel { decision: "run" }).inc();
                        v1::StartResult {
                            task_id: item.task_id.clone(),
                            decision: v1::StartDecision::Run.into(),
                            attempt,
                            reason: String::new(),
                        }
                    }
                    Decision::Drop { reason } => {
                        let label = if is_dead_letter(&reason) { "dead_letter" } else { "drop" };
                        self.metrics.starts.get_or_create(&DecisionLabel { decision: label }).inc();
                        if label == "dead_letter" {
                            tracing::warn!(task_id = %item.task_id, node = %node, reason = %reason, "task dead-lettered");
                        } else {
                            tracing::debug!(task_id = %item.task_id, node = %node, reason = %reason, "start dropped");
                        }
                        v1::StartResult {
                            task_id: item.task_id.clone(),
                            decision: v1::StartDecision::Drop.into(),
                            attempt: 0,
                            reason,
                        }
                    }
                });
            }
        }
        // Answers go back in the order of the request: the refused ones where they were.
        let mut decided = results.into_iter();
        let mut ordered = Vec::with_capacity(is_refused.len());
        let mut original = request_ids.into_iter();
        for refused_here in is_refused {
            let task_id = original.next().unwrap_or_default();
            if let Some(reason) = refused_here {
                self.metrics.starts.get_or_create(&DecisionLabel { decision: "refuse" }).inc();
                tracing::warn!(%task_id, node = %node, %reason, "start refused: the node does not run the task's extension");
                ordered.push(v1::StartResult {
                    reason,
                    task_id,
                    decision: v1::StartDecision::Refuse.into(),
                    attempt: 0,
                });
            } else if let Some(result) = decided.next() {
                ordered.push(result);
            }
        }
        Ok(Response::new(v1::StartTaskResponse { results: ordered }))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> Result<Response<v1::CompleteTaskResponse>, Status> {
        let node = node_principal(&request)?;
        self.touch(&node).await?;
        let items: Vec<CompleteItem> = request.into_inner().items.into_iter().map(completion).collect();
        let mut acks = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.config.commit_batch.max(1)) {
            let (verdicts, changes) = self.store.complete(chunk, self.result_limits()).await.map_err(store_status)?;
            self.metrics.observe_batch("complete", chunk.len());
            // A retry, or a chain child created by a success, waits in the outbox (`pending`): publish
            // it now rather than at the publisher's next poll.
            if changes.iter().any(|c| c.status == legion_common::TaskStatus::Pending) {
                self.wake.notify_one();
            }
            self.events.publish(&changes);
            for (item, verdict) in chunk.iter().zip(verdicts) {
                self.metrics.completions.get_or_create(&OutcomeLabel { outcome: verdict.label() }).inc();
                if let Verdict::Stale(reason) = &verdict {
                    tracing::debug!(task_id = %item.task_id, attempt = item.attempt, node = %node, reason = %reason, "stale completion ignored");
                }
                acks.push(v1::CompletionAck {
                    task_id: item.task_id.clone(),
                    accepted: verdict.accepted(),
                    reason: verdict.reason().to_owned(),
                });
            }
        }
        Ok(Response::new(v1::CompleteTaskResponse { acks }))
    }
}

fn completion(item: v1::Completion) -> CompleteItem {
    let outcome = match item.outcome {
        Some(v1::completion::Outcome::ResultJson(bytes)) => Outcome::Result(bytes),
        Some(v1::completion::Outcome::Failure(failure)) => Outcome::Failure {
            kind: match v1::FailureKind::try_from(failure.kind) {
                Ok(v1::FailureKind::Timeout) => FailureKind::Timeout,
                Ok(v1::FailureKind::Panic) => FailureKind::Panic,
                Ok(v1::FailureKind::Rejected) => FailureKind::Rejected,
                Ok(v1::FailureKind::Permanent) => FailureKind::Permanent,
                _ => FailureKind::Error,
            },
            message: failure.message,
        },
        None => Outcome::Missing,
    };
    CompleteItem { task_id: item.task_id, attempt: item.attempt, outcome, duration_ms: item.duration_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_must_name_the_certificate_node() {
        assert!(same_node("n1", "n1").is_ok());
        let err = same_node("n1", "n2").expect_err("mismatch");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn registrations_are_validated_field_by_field() {
        let ok = v1::RegisterNodeRequest {
            name: "n1".into(),
            region: String::new(),
            version: "1.0".into(),
            concurrency: 4,
            extensions: vec![v1::ExtensionManifest {
                name: "core".into(),
                version: "1".into(),
                runners: vec![v1::Runner {
                    name: "util".into(),
                    functions: vec![v1::Function { name: "echo".into(), description: "echo".into() }],
                }],
            }],
        };
        let reg = registration("n1".into(), &ok).expect("valid");
        assert_eq!(reg.region, "default");
        assert_eq!(reg.extensions[0].runners[0].functions[0].name, "echo");
        let mut bad = ok.clone();
        bad.extensions[0].runners[0].functions[0].name = "Echo".into();
        let err = registration("n1".into(), &bad).expect_err("bad function");
        assert!(err.message().starts_with("extensions[0].runners[0].functions[0].name: "), "{}", err.message());
        let err = registration("n1".into(), &v1::RegisterNodeRequest { concurrency: 0, ..ok }).expect_err("slots");
        assert!(err.message().starts_with("concurrency: "));
    }

    #[test]
    fn heartbeats_abort_the_named_attempts_only() {
        let task = Uuid::now_v7();
        let reported = |task_id: &str, attempt: u32| v1::RunningAttempt { task_id: task_id.into(), attempt };
        let running = vec![
            reported(&task.to_string(), 1),
            reported(&task.to_string(), 2),
            reported("not-a-uuid", 7),
            reported(&Uuid::now_v7().to_string(), 1),
        ];
        // Attempt 1 of the task was superseded by attempt 2, which runs on the same node.
        let stale: HashSet<(Uuid, u32)> = [(task, 1)].into_iter().collect();
        assert_eq!(abort_list(&running, &stale), vec![reported(&task.to_string(), 1), reported("not-a-uuid", 7)]);
        assert!(abort_list(&[], &stale).is_empty());
    }

    #[test]
    fn completions_map_their_outcome() {
        let failure = v1::Completion {
            task_id: "t".into(),
            attempt: 2,
            outcome: Some(v1::completion::Outcome::Failure(v1::Failure {
                kind: v1::FailureKind::Timeout.into(),
                message: "slow".into(),
            })),
            duration_ms: 5,
        };
        assert_eq!(
            completion(failure).outcome,
            Outcome::Failure { kind: FailureKind::Timeout, message: "slow".into() }
        );
        let permanent = v1::Completion {
            task_id: "t".into(),
            attempt: 1,
            outcome: Some(v1::completion::Outcome::Failure(v1::Failure {
                kind: v1::FailureKind::Permanent.into(),
                message: "bad url".into(),
            })),
            duration_ms: 1,
        };
        assert_eq!(
            completion(permanent).outcome,
            Outcome::Failure { kind: FailureKind::Permanent, message: "bad url".into() }
        );
        let missing = v1::Completion { task_id: "t".into(), attempt: 1, outcome: None, duration_ms: 0 };
        assert_eq!(completion(missing).outcome, Outcome::Missing);
    }
}
