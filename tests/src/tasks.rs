//! Task helpers on a [`TestEnv`]: submit over gRPC, read, list attempts, wait for a status.

use std::time::{Duration, Instant};

use legion_proto::v1::{GetTaskRequest, ListTaskAttemptsRequest, SubmitTaskRequest, Task, TaskAttempt, TaskStatus};
use serde_json::Value;

use crate::TestEnv;
use crate::grpc;
use crate::status::{TaskStatusExt, from_wire};
use crate::wait;

impl TestEnv {
    /// Submits `function` with `args` over gRPC with defaults for everything else.
    ///
    /// # Errors
    /// The control plane's status.
    pub async fn submit(&self, function: &str, args: Value) -> Result<Task, tonic::Status> {
        self.submit_request(SubmitTaskRequest {
            function: function.to_owned(),
            args: Some(legion_proto::json_to_value(&args)),
            ..SubmitTaskRequest::default()
        })
        .await
    }

    /// Submits `request` over gRPC and returns the task.
    ///
    /// # Errors
    /// The control plane's status.
    pub async fn submit_request(&self, request: SubmitTaskRequest) -> Result<Task, tonic::Status> {
        let response = self.tasks().submit_task(grpc::request(request)).await?.into_inner();
        response.task.ok_or_else(|| tonic::Status::internal("SubmitTaskResponse without a task"))
    }

    /// `GetTask`.
    ///
    /// # Errors
    /// The control plane's status.
    pub async fn get_task(&self, id: &str) -> Result<Task, tonic::Status> {
        Ok(self.tasks().get_task(grpc::request(GetTaskRequest { id: id.to_owned() })).await?.into_inner())
    }

    /// `ListTaskAttempts`.
    ///
    /// # Errors
    /// The control plane's status.
    pub async fn attempts(&self, id: &str) -> Result<Vec<TaskAttempt>, tonic::Status> {
        let request = ListTaskAttemptsRequest { task_id: id.to_owned() };
        Ok(self.tasks().list_task_attempts(grpc::request(request)).await?.into_inner().attempts)
    }

    /// Polls `GetTask` until the task's status is `wanted`, and returns it.
    ///
    /// # Errors
    /// [`wait::Timeout`] naming the last status seen; an early terminal status other than `wanted`
    /// fails at once.
    pub async fn wait_for_status(
        &self,
        id: &str,
        wanted: TaskStatus,
        timeout: Duration,
    ) -> Result<Task, wait::Timeout> {
        let what = format!("task {id} {}", wanted.rest_name());
        let started = Instant::now();
        let result = wait::eventually(&what, timeout, || async {
            let task = self.get_task(id).await.map_err(|s| format!("GetTask: {s}"))?;
            let status = from_wire(task.status);
            if status == wanted {
                Ok(Ok(task))
            } else if status.is_terminal() {
                Ok(Err(format!("ended {} instead (error: {:?})", status.rest_name(), task.error)))
            } else {
                Err(format!("status {}", status.rest_name()))
            }
        })
        .await?;
        result.map_err(|last| wait::Timeout { what, verdict: "not reached", waited: started.elapsed(), last })
    }

    /// Polls `GetTask` until the task is terminal, and returns it.
    ///
    /// # Errors
    /// [`wait::Timeout`] naming the last status seen.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Result<Task, wait::Timeout> {
        wait::eventually(&format!("task {id} terminal"), timeout, || async {
            let task = self.get_task(id).await.map_err(|s| format!("GetTask: {s}"))?;
            let status = from_wire(task.status);
            if status.is_terminal() { Ok(task) } else { Err(format!("status {}", status.rest_name())) }
        })
        .await
    }
}
