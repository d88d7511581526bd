//! The operator CLI: `legion task submit … --wait` prints each status change as a JSON line and exits
//! 0 with the result when the task succeeded, 2 when it ended otherwise.

use std::time::Duration;

use legion_proto::v1::TaskStatus;
use legion_tests::status::from_wire;
use serde_json::{Value, json};

use crate::{describe, env_with_executor, result_json};

/// `status` and `result` of a printed line: a task object, or an event carrying one under `task`.
fn status_and_result(line: &Value) -> (Option<&str>, &Value) {
    let status = line["status"].as_str().or_else(|| line["task"]["status"].as_str());
    let result = if line.get("result").is_some() { &line["result"] } else { &line["task"]["result"] };
    (status, result)
}

fn task_id(line: &Value) -> Option<&str> {
    line["id"].as_str().or_else(|| line["task_id"].as_str()).or_else(|| line["task"]["id"].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_prints_the_result() {
    let (env, _executor) = env_with_executor().await;
    let limit = Duration::from_secs(60);

    let args = json!({"message": "from the cli", "n": 3});
    let args_text = args.to_string();
    let output = env
        .legion(&["task", "submit", "core.util.echo", "--args", &args_text, "--wait"], limit)
        .await
        .expect("legion task submit --wait");
    assert_eq!(output.code, Some(0), "stdout: {}\nstderr: {}", output.stdout, output.stderr);
    let lines = output.json_lines();
    let last = lines.last().unwrap_or_else(|| panic!("JSON lines on stdout: {}", output.stdout));
    let (status, result) = status_and_result(last);
    assert_eq!(status, Some("succeeded"), "{last}");
    assert_eq!(result, &args, "{last}");

    // The task the CLI reported is the stored one.
    let id = lines.iter().find_map(task_id).unwrap_or_else(|| panic!("a task id in {}", output.stdout));
    let stored = env.get_task(id).await.expect("GetTask");
    assert_eq!(from_wire(stored.status), TaskStatus::Succeeded, "{}", describe(&stored));
    assert_eq!(result_json(&stored), args);
    let got = env.legion(&["task", "get", id], limit).await.expect("legion task get");
    assert_eq!(got.code, Some(0), "stderr: {}", got.stderr);
    let printed: Value = serde_json::from_str(got.stdout.trim()).expect("task get prints one JSON object");
    assert_eq!(printed["status"], "succeeded", "{printed}");
    assert_eq!(printed["result"], args, "{printed}");

    // A task that ends otherwise exits 2.
    let failed = env
        .legion(&["task", "submit", "core.util.fail", "--args", r#"{"message":"cli boom"}"#, "--wait"], limit)
        .await
        .expect("legion task submit core.util.fail --wait");
    assert_eq!(failed.code, Some(2), "stdout: {}\nstderr: {}", failed.stdout, failed.stderr);
    let last = failed.json_lines().pop().unwrap_or_default();
    assert_eq!(status_and_result(&last).0, Some("failed"), "{}", failed.stdout);
}
