use serde_json::json;

use super::*;
use crate::testing::{legion, serve};

fn task(n: u32, function: &str, status: v1::TaskStatus) -> v1::Task {
    v1::Task {
        id: format!("0190f5c8-0000-7000-8000-{n:012}"),
        function: function.into(),
        status: status as i32,
        error: (status == v1::TaskStatus::DeadLettered)
            .then(|| "dead-lettered: delivered 6 times, more than transport.delivery_limit (5)".into()),
        attempt: 5,
        finished_at: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 }),
        ..v1::Task::default()
    }
}

/// `legion dead-letter list|replay` against a control plane: pages and the function filter as
/// `GET /api/v1/dead-letters` shows them, a replay printed as `legion task get` prints a task, and the
/// control plane's refusals as failed calls.
#[tokio::test]
async fn dead_letters_are_listed_in_pages_and_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tasks = vec![
        task(1, "core.util.echo", v1::TaskStatus::DeadLettered),
        task(2, "core.util.sleep", v1::TaskStatus::DeadLettered),
        task(3, "core.util.echo", v1::TaskStatus::Succeeded),
        task(4, "core.util.echo", v1::TaskStatus::DeadLettered),
    ];
    let (addr, state) = serve(dir.path(), tasks).await;
    let id = |n: u32| format!("0190f5c8-0000-7000-8000-{n:012}");

    let (result, out) = legion(addr, dir.path(), &["dead-letter", "list", "--limit", "2"], b"").await;
    assert_eq!(result.expect("lists"), 0);
    let page: serde_json::Value = serde_json::from_str(&out).expect("json");
    let ids: Vec<&str> =
        page["dead_letters"].as_array().expect("array").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, [id(4), id(2)]);
    assert_eq!(page["next_page_token"], "2");
    assert_eq!(page["dead_letters"][0]["status"], "dead_lettered");
    assert!(page["dead_letters"][0]["error"].as_str().is_some_and(|e| e.contains("delivery_limit")), "{page}");
    let (result, out) =
        legion(addr, dir.path(), &["dead-letter", "list", "--limit", "2", "--page-token", "2"], b"").await;
    assert_eq!(result.expect("lists"), 0);
    let page: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((&page["dead_letters"][0]["id"], &page["next_page_token"]), (&json!(id(1)), &json!(null)));
    let (result, out) = legion(addr, dir.path(), &["dead-letter", "list", "--function", "core.util.sleep"], b"").await;
    assert_eq!(result.expect("lists"), 0);
    let page: DeadLetterPage = serde_json::from_str(&out).expect("the REST shape");
    assert_eq!(page.dead_letters.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), [id(2)]);

    let (result, out) = legion(addr, dir.path(), &["dead-letter", "replay", &id(4)], b"").await;
    assert_eq!(result.expect("replays"), 0);
    let task: Task = serde_json::from_str(&out).expect("a task");
    assert_eq!((task.id.as_str(), task.status.as_str(), task.replays), (id(4).as_str(), "pending", 1));
    assert_eq!(*state.replayed.lock().expect("lock"), [id(4)]);

    let (result, _) = legion(addr, dir.path(), &["dead-letter", "replay", &id(4)], b"").await;
    let error = result.expect_err("a second replay is refused");
    assert_eq!(error.exit_code(), 1);
    assert!(error.to_string().contains("not dead_lettered"), "{error}");
    let (result, _) = legion(addr, dir.path(), &["dead-letter", "replay", &id(9)], b"").await;
    assert!(result.expect_err("unknown").to_string().contains("no task"));
}
