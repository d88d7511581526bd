//! `legion task …`: the task commands over gRPC, printing the REST shapes of
//! [`legion_gateway::view`] so that the CLI and the REST API show the same objects.
//!
//! Objects are printed as pretty JSON; `watch` and `submit --wait` print one compact JSON line per
//! status change (`{"status","attempt","at","task"}`) and return exit code 0 if the task ended
//! `succeeded`, 2 if it ended otherwise. `tree` prints the tasks of a chain run ([`crate::tree`]).

use std::io::Write;
use std::time::Duration;

use legion_common::TaskStatus;
use legion_gateway::view::{Task, TaskEvent, TaskPage};
use legion_proto::v1;
use legion_proto::v1::task_service_client::TaskServiceClient;
use serde::Serialize;

use crate::args::{List, Submit, TaskCommand};
use crate::connect::AuthChannel;
use crate::error::{EXIT_TASK_DID_NOT_SUCCEED, Error};
use crate::tree::TaskTree;

/// Reconnections a watch attempts after losing the control plane before it gives up.
pub const WATCH_RECONNECTS: u32 = 10;

/// Runs one task command, writing its output to `out`. Returns the exit code: 0, or 2 when a followed
/// task ended other than `succeeded`.
///
/// # Errors
/// [`Error::Grpc`] when the control plane refuses a call or cannot be reached; [`Error::WatchEnded`]
/// when a watch loses the control plane for good; [`Error::Response`] when the control plane sends a
/// task without a known status; [`Error::Output`].
pub async fn run(
    command: TaskCommand,
    client: TaskServiceClient<AuthChannel>,
    out: &mut impl Write,
) -> Result<u8, Error> {
    let mut client = client;
    match command {
        TaskCommand::Submit(submit) => {
            let wait = submit.wait;
            let response = client.submit_task(submit_request(submit)).await?.into_inner();
            let task = response.task.ok_or_else(|| tonic::Status::internal("submit response lacks the task"))?;
            if wait {
                return follow(&mut client, &task.id, true, out).await;
            }
            print_pretty(out, &Task::try_from(&task)?)?;
        }
        TaskCommand::Get { id } => {
            let task = client.get_task(v1::GetTaskRequest { id }).await?.into_inner();
            print_pretty(out, &Task::try_from(&task)?)?;
        }
        TaskCommand::List(list) => {
            let response = client.list_tasks(list_request(list)).await?.into_inner();
            print_pretty(out, &TaskPage::try_from(&response)?)?;
        }
        TaskCommand::Watch { id } => return follow(&mut client, &id, false, out).await,
        TaskCommand::Cancel { id } => {
            let task = client.cancel_task(v1::CancelTaskRequest { id }).await?.into_inner();
            print_pretty(out, &Task::try_from(&task)?)?;
        }
        TaskCommand::Tree { id, json } => {
            let tasks = crate::tree::fetch_run(&mut client, &id).await?;
            let tree = TaskTree::build(tasks, &id)
                .ok_or_else(|| tonic::Status::internal(format!("task {id} is missing from its own run")))?;
            if json {
                print_pretty(out, &tree.json())?;
            } else {
                tree.write_text(out)?;
                out.flush()?;
            }
        }
    }
    Ok(0)
}

/// The gRPC request of `task submit`; `--args` defaults to `{}`, and the `--retry-*` flags make its
/// retry policy (absent when none is given).
pub fn submit_request(submit: Submit) -> v1::SubmitTaskRequest {
    let retry = retry_policy(&submit);
    let args = submit.args.unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
    v1::SubmitTaskRequest {
        function: submit.function,
        args: Some(legion_proto::json_to_value(&args)),
        chain: submit.chain,
        priority: submit.priority.unwrap_or(0),
        max_attempts: submit.max_attempts,
        timeout_ms: submit.timeout_ms,
        delay_ms: submit.delay_ms.unwrap_or(0),
        idempotency_key: submit.idempotency_key,
        region: submit.region,
        retry,
    }
}

/// The retry policy of the `--retry-*` flags; `None` when none is given (the settings apply). The
/// control plane checks the ranges.
fn retry_policy(submit: &Submit) -> Option<v1::RetryPolicy> {
    let policy = v1::RetryPolicy {
        initial_backoff_ms: submit.retry_initial_backoff_ms,
        multiplier: submit.retry_multiplier,
        max_backoff_ms: submit.retry_max_backoff_ms,
        jitter: submit.retry_jitter,
    };
    (policy != v1::RetryPolicy::default()).then_some(policy)
}

/// The gRPC request of `task list`.
pub fn list_request(list: List) -> v1::ListTasksRequest {
    v1::ListTasksRequest {
        status: list.status.map(|s| s.to_proto().into()),
        function: list.function,
        chain: list.chain,
        root_id: list.root_id,
        page_size: list.limit.unwrap_or(0),
        page_token: list.page_token.unwrap_or_default(),
    }
}

/// Follows a task with `WatchTask` until it ends, printing each status change once as a JSON line.
/// A stream lost to an `UNAVAILABLE` control plane is re-opened (up to [`WATCH_RECONNECTS`] times in a
/// row, with backoff); the first event of a re-opened stream is printed only if it is a change. The
/// first call fails at once unless `known_to_exist` (the task was just submitted).
async fn follow(
    client: &mut TaskServiceClient<AuthChannel>,
    id: &str,
    known_to_exist: bool,
    out: &mut impl Write,
) -> Result<u8, Error> {
    let mut last: Option<(TaskStatus, u32)> = None;
    let mut failures = 0u32;
    loop {
        let interruption = match client.watch_task(v1::WatchTaskRequest { id: id.to_owned() }).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            failures = 0;
                            let view = TaskEvent::try_from(&event)?;
                            if last != Some((view.status, view.attempt)) {
                                last = Some((view.status, view.attempt));
                                print_line(out, &view)?;
                            }
                            if view.status.is_terminal() {
                                return Ok(exit_code_for(view.status));
                            }
                        }
                        Ok(None) => break "the watch stream ended before the task finished".to_owned(),
                        Err(status) if reconnectable(&status) => break status.message().to_owned(),
                        Err(status) => return Err(status.into()),
                    }
                }
            }
            Err(status) if reconnectable(&status) && (known_to_exist || last.is_some()) => status.message().to_owned(),
            Err(status) => return Err(status.into()),
        };
        failures += 1;
        if failures > WATCH_RECONNECTS {
            return Err(Error::WatchEnded(format!(
                "lost the control plane while watching task {id} ({WATCH_RECONNECTS} reconnections failed): {interruption}"
            )));
        }
        tokio::time::sleep(reconnect_delay(failures)).await;
    }
}

fn reconnectable(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
}

/// Backoff before reconnection `n` (1-based): 250 ms doubling, at most 5 s.
pub fn reconnect_delay(n: u32) -> Duration {
    Duration::from_millis((250u64 << n.saturating_sub(1).min(5)).min(5000))
}

/// 0 for `succeeded`, 2 for any other terminal status.
pub fn exit_code_for(status: TaskStatus) -> u8 {
    if status == TaskStatus::Succeeded { 0 } else { EXIT_TASK_DID_NOT_SUCCEED }
}

/// Writes `value` as pretty JSON and a newline.
///
/// # Errors
/// [`Error::Output`].
pub fn print_pretty(out: &mut impl Write, value: &impl Serialize) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Writes `value` as one compact JSON line, flushed at once so that a reader sees each change as it
/// happens.
///
/// # Errors
/// [`Error::Output`].
pub fn print_line(out: &mut impl Write, value: &impl Serialize) -> Result<(), Error> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followed_tasks_exit_0_only_when_they_succeeded() {
        for status in TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            let expected = if status == TaskStatus::Succeeded { 0 } else { 2 };
            assert_eq!(exit_code_for(status), expected, "{status}");
        }
    }

    #[test]
    fn reconnect_delay_doubles_up_to_five_seconds() {
        let delays: Vec<u64> = (1..=8).map(|n| reconnect_delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    fn task_in(region: Option<&str>) -> v1::Task {
        v1::Task {
            id: "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e".into(),
            function: "core.util.echo".into(),
            status: v1::TaskStatus::Queued as i32,
            node: Some("exec-1".into()),
            region: region.map(str::to_owned),
            ..v1::Task::default()
        }
    }

    /// `task get`, `task list` and `task submit` print the shared view, which has `region` after `node`.
    #[test]
    fn printed_tasks_carry_their_region() {
        let mut out = Vec::new();
        print_pretty(&mut out, &Task::try_from(&task_in(Some("eu-west"))).expect("converts")).expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("\"node\": \"exec-1\",\n  \"region\": \"eu-west\",\n"), "{text}");

        let page =
            v1::ListTasksResponse { tasks: vec![task_in(None), task_in(Some("us"))], next_page_token: String::new() };
        let mut out = Vec::new();
        print_pretty(&mut out, &TaskPage::try_from(&page).expect("converts")).expect("writes");
        let json: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(json["tasks"][0]["region"], serde_json::Value::Null);
        assert_eq!(json["tasks"][1]["region"], "us");
    }

    #[test]
    fn events_print_as_single_json_lines_and_objects_as_pretty_json() {
        let event = TaskEvent { status: TaskStatus::Running, attempt: 1, at: None, task: None };
        let mut out = Vec::new();
        print_line(&mut out, &event).expect("writes");
        print_line(&mut out, &event).expect("writes");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], r#"{"status":"running","attempt":1,"at":null,"task":null}"#);

        let mut out = Vec::new();
        print_pretty(&mut out, &serde_json::json!({"a": 1})).expect("writes");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "{\n  \"a\": 1\n}\n");
    }
}
