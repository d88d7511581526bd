use prost_types::Timestamp;

use super::*;

fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn proto_task() -> v1::Task {
    v1::Task {
        id: "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e".into(),
        function: "http.request.get".into(),
        status: v1::TaskStatus::TimedOut as i32,
        args: Some(legion_proto::json_to_value(&serde_json::json!({"url": "http://x", "n": 3}))),
        result: None,
        error: Some("attempt 2 timed out after 500 ms".into()),
        attempt: 2,
        max_attempts: 2,
        priority: 7,
        chain: Some("nightly".into()),
        root_id: Some("0190f5c8-0000-7000-8000-000000000001".into()),
        parent_id: None,
        relationship_id: None,
        node: Some("exec-1".into()),
        created_at: ts(1_767_225_600, 0),
        started_at: ts(1_767_225_601, 250_000_000),
        finished_at: None,
        timeout_ms: 500,
        region: Some("eu".into()),
        idempotency_key: Some("k".into()),
        not_before: None,
    }
}

#[test]
fn a_task_converts_to_the_rest_shape() {
    let json = serde_json::to_value(Task::from(&proto_task())).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "id": "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e",
            "function": "http.request.get",
            "status": "timed_out",
            "args": {"url": "http://x", "n": 3},
            "result": null,
            "error": "attempt 2 timed out after 500 ms",
            "attempt": 2,
            "max_attempts": 2,
            "priority": 7,
            "chain": "nightly",
            "root_id": "0190f5c8-0000-7000-8000-000000000001",
            "parent_id": null,
            "relationship_id": null,
            "node": "exec-1",
            "region": "eu",
            "created_at": "2026-01-01T00:00:00Z",
            "started_at": "2026-01-01T00:00:01.250Z",
            "finished_at": null,
            "timeout_ms": 500
        })
    );
}

#[test]
fn region_follows_node_and_is_null_without_one() {
    let text = serde_json::to_string(&Task::from(&proto_task())).expect("serializes");
    assert!(text.contains(r#""node":"exec-1","region":"eu","created_at""#), "{text}");
    let task = v1::Task { region: None, ..proto_task() };
    let json = serde_json::to_value(Task::from(&task)).expect("serializes");
    assert_eq!(json["region"], serde_json::Value::Null);
    assert!(json.as_object().is_some_and(|o| o.contains_key("region")), "region is always present");
}

#[test]
fn every_status_has_its_contract_name_and_round_trips() {
    let names: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "pending",
            "scheduled",
            "queued",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "timed_out",
            "dead_lettered",
            "skipped"
        ]
    );
    for status in TaskStatus::ALL {
        assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
        assert_eq!(TaskStatus::from_proto(status.to_proto() as i32), status);
        assert_eq!(serde_json::to_value(status).expect("json"), serde_json::json!(status.as_str()));
    }
    assert_eq!(TaskStatus::parse("unspecified"), None, "not a status callers may filter on");
    assert_eq!(TaskStatus::parse("SUCCEEDED"), None);
    assert_eq!(TaskStatus::from_proto(99), TaskStatus::Unspecified);
}

#[test]
fn terminal_statuses_are_the_contract_ones() {
    let terminal: Vec<&str> = TaskStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
    assert_eq!(terminal, ["succeeded", "failed", "cancelled", "timed_out", "dead_lettered", "skipped"]);
}

#[test]
fn an_empty_page_token_is_null() {
    let page = TaskPage::from(&v1::ListTasksResponse { tasks: vec![proto_task()], next_page_token: String::new() });
    assert_eq!(page.next_page_token, None);
    assert_eq!(page.tasks.len(), 1);
    let page = TaskPage::from(&v1::ListTasksResponse { tasks: vec![], next_page_token: "abc".into() });
    assert_eq!(page.next_page_token.as_deref(), Some("abc"));
}

#[test]
fn an_event_carries_status_attempt_time_and_snapshot() {
    let mut task = proto_task();
    task.status = v1::TaskStatus::Succeeded as i32;
    task.result = Some(legion_proto::json_to_value(&serde_json::json!({"status": 200})));
    let event = v1::TaskEvent {
        task_id: task.id.clone(),
        status: v1::TaskStatus::Succeeded as i32,
        attempt: 2,
        at: ts(1_767_225_602, 0),
        task: Some(task),
    };
    let json = serde_json::to_value(TaskEvent::from(&event)).expect("serializes");
    assert_eq!(json["status"], "succeeded");
    assert_eq!(json["attempt"], 2);
    assert_eq!(json["at"], "2026-01-01T00:00:02Z");
    assert_eq!(json["task"]["result"], serde_json::json!({"status": 200}));
    let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["at", "attempt", "status", "task"]);
}

#[test]
fn catalog_states_and_node_statuses_are_lowercase() {
    let extension = v1::Extension {
        name: "http".into(),
        version: "0.1.0".into(),
        disabled: true,
        runners: vec![v1::Runner {
            name: "request".into(),
            functions: vec![v1::Function { name: "get".into(), description: "HTTP GET".into() }],
        }],
        nodes: vec![v1::NodeExtension {
            node: "exec-1".into(),
            state: v1::ExtensionState::Disabled as i32,
            updated_at: ts(1_767_225_600, 0),
        }],
    };
    let json = serde_json::to_value(Extension::from(&extension)).expect("serializes");
    assert_eq!(json["nodes"][0]["state"], "disabled");
    assert_eq!(json["runners"][0]["functions"][0]["name"], "get");
    assert_eq!(json["disabled"], true);

    let node = v1::Node {
        name: "exec-1".into(),
        region: "eu".into(),
        version: "0.1.0".into(),
        status: v1::NodeStatus::Draining as i32,
        concurrency: 16,
        started_at: ts(1_767_225_600, 0),
        last_heartbeat: None,
        extensions: [("core".to_owned(), v1::ExtensionState::Running as i32)].into_iter().collect(),
    };
    let json = serde_json::to_value(Node::from(&node)).expect("serializes");
    assert_eq!(json["status"], "draining");
    assert_eq!(json["extensions"], serde_json::json!({"core": "running"}));
    assert_eq!(json["last_heartbeat"], serde_json::Value::Null);
}

#[test]
fn attempts_keep_their_duration_and_error() {
    let attempt = v1::TaskAttempt {
        task_id: "t".into(),
        attempt: 1,
        node: "exec-1".into(),
        status: "lost".into(),
        error: Some("node lost".into()),
        started_at: ts(1_767_225_600, 0),
        finished_at: ts(1_767_225_630, 0),
        duration_ms: None,
    };
    let json = serde_json::to_value(TaskAttempt::from(&attempt)).expect("serializes");
    assert_eq!(json["status"], "lost");
    assert_eq!(json["error"], "node lost");
    assert_eq!(json["duration_ms"], serde_json::Value::Null);
    assert_eq!(json["finished_at"], "2026-01-01T00:00:30Z");
}
