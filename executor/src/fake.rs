//! An in-memory [`ControlPlane`] for unit tests: it records every call and answers like the control
//! plane's protocol (one decision or ack per item, in order), with scripted drops, refusals, aborts
//! and disabled extensions. It implements our own trait; PostgreSQL and RabbitMQ are never faked.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use legion_proto::v1::{
    CompleteTaskRequest, CompleteTaskResponse, Completion, CompletionAck, HeartbeatRequest, HeartbeatResponse,
    RegisterNodeRequest, RegisterNodeResponse, RunningAttempt, StartDecision, StartItem, StartResult, StartTaskRequest,
    StartTaskResponse, completion,
};
use tonic::Status;

use crate::client::ControlPlane;

/// The fake's recorded calls and scripted answers.
#[derive(Default)]
pub struct Fake {
    /// Every registration.
    pub registrations: Mutex<Vec<RegisterNodeRequest>>,
    /// Every start item.
    pub starts: Mutex<Vec<StartItem>>,
    /// Every completion.
    pub completions: Mutex<Vec<Completion>>,
    /// Every heartbeat.
    pub heartbeats: Mutex<Vec<HeartbeatRequest>>,
    /// Task ids whose start is answered DROP.
    pub drop: Mutex<HashSet<String>>,
    /// Task ids whose completion is stale.
    pub stale: Mutex<HashSet<String>>,
    /// Refuse (INVALID_ARGUMENT) completions that carry a result.
    pub refuse_results: Mutex<bool>,
    /// Attempts to abort in the next heartbeat answer.
    pub abort: Mutex<Vec<RunningAttempt>>,
    /// Disabled extensions, answered in every heartbeat.
    pub disabled: Mutex<Vec<String>>,
    /// While set, every CompleteTask fails UNAVAILABLE (an unreachable control plane) and records
    /// nothing.
    pub completions_down: Mutex<bool>,
    /// While set, every StartTask fails UNAVAILABLE and records nothing.
    pub starts_down: Mutex<bool>,
    attempts: Mutex<HashMap<String, u32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fake {
    /// The completion recorded last for `task_id`.
    pub fn completion(&self, task_id: &str) -> Option<Completion> {
        lock(&self.completions).iter().rev().find(|c| c.task_id == task_id).cloned()
    }

    /// The result of the last completion of `task_id`, parsed.
    pub fn result(&self, task_id: &str) -> Option<serde_json::Value> {
        match self.completion(task_id)?.outcome? {
            completion::Outcome::ResultJson(bytes) => serde_json::from_slice(&bytes).ok(),
            completion::Outcome::Failure(_) => None,
        }
    }

    /// The failure `(kind, message)` of the last completion of `task_id`.
    pub fn failure(&self, task_id: &str) -> Option<(i32, String)> {
        match self.completion(task_id)?.outcome? {
            completion::Outcome::Failure(f) => Some((f.kind, f.message)),
            completion::Outcome::ResultJson(_) => None,
        }
    }
}

#[async_trait]
impl ControlPlane for Fake {
    async fn register(&self, request: RegisterNodeRequest) -> Result<RegisterNodeResponse, Status> {
        lock(&self.registrations).push(request);
        Ok(RegisterNodeResponse {
            heartbeat_ms: 0,
            disabled_extensions: lock(&self.disabled).clone(),
            node_lease_ms: 0,
        })
    }

    async fn heartbeat(
        &self,
        request: HeartbeatRequest,
        _timeout: std::time::Duration,
    ) -> Result<HeartbeatResponse, Status> {
        lock(&self.heartbeats).push(request);
        Ok(HeartbeatResponse {
            abort: std::mem::take(&mut *lock(&self.abort)),
            disabled_extensions: lock(&self.disabled).clone(),
        })
    }

    async fn start_tasks(&self, request: StartTaskRequest) -> Result<StartTaskResponse, Status> {
        if *lock(&self.starts_down) {
            return Err(Status::unavailable("tcp connect error: connection refused"));
        }
        let mut results = Vec::with_capacity(request.items.len());
        for item in request.items {
            lock(&self.starts).push(item.clone());
            let result = if lock(&self.drop).contains(&item.task_id) {
                StartResult {
                    task_id: item.task_id,
                    decision: StartDecision::Drop as i32,
                    attempt: 0,
                    reason: "dropped by the test".into(),
                }
            } else {
                let mut attempts = lock(&self.attempts);
                let attempt = attempts.entry(item.task_id.clone()).or_default();
                *attempt += 1;
                StartResult {
                    task_id: item.task_id,
                    decision: StartDecision::Run as i32,
                    attempt: *attempt,
                    reason: String::new(),
                }
            };
            results.push(result);
        }
        Ok(StartTaskResponse { results })
    }

    async fn complete_tasks(&self, request: CompleteTaskRequest) -> Result<CompleteTaskResponse, Status> {
        if *lock(&self.completions_down) {
            return Err(Status::unavailable("tcp connect error: connection refused"));
        }
        if *lock(&self.refuse_results)
            && request.items.iter().any(|c| matches!(c.outcome, Some(completion::Outcome::ResultJson(_))))
        {
            return Err(Status::invalid_argument("items.result_json: too large"));
        }
        let mut acks = Vec::with_capacity(request.items.len());
        for item in request.items {
            let accepted = !lock(&self.stale).contains(&item.task_id);
            acks.push(CompletionAck { task_id: item.task_id.clone(), accepted, reason: String::new() });
            lock(&self.completions).push(item);
        }
        Ok(CompleteTaskResponse { acks })
    }
}
