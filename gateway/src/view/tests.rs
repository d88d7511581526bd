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
        retry: Some(v1::RetryPolicy {
            initial_backoff_ms: Some(1000),
            multiplier: Some(2.0),
            max_backoff_ms: Some(60_000),
            jitter: Some(0.2),
        }),
        replays: 1,
        owner: "api-key/k1".into(),
        depth: 2,
        chain_version: Some(3),
        fanout_index: Some(1),
    }
}

#[test]
fn a_task_converts_to_the_rest_shape() {
    let json = serde_json::to_value(Task::try_from(&proto_task()).expect("converts")).expect("serializes");
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
            "chain_version": 3,
            "root_id": "0190f5c8-0000-7000-8000-000000000001",
            "parent_id": null,
            "relationship_id": null,
            "depth": 2,
            "fanout_index": 1,
            "node": "exec-1",
            "region": "eu",
            "created_at": "2026-01-01T00:00:00Z",
            "started_at": "2026-01-01T00:00:01.250Z",
            "finished_at": null,
            "timeout_ms": 500,
            "owner": "api-key/k1",
            "retry": {"initial_backoff_ms": 1000, "multiplier": 2.0, "max_backoff_ms": 60000, "jitter": 0.2},
            "replays": 1
        })
    );
}

#[test]
fn chain_position_fields_are_always_present() {
    let task =
        v1::Task { chain: None, root_id: None, chain_version: None, fanout_index: None, depth: 0, ..proto_task() };
    let json = serde_json::to_value(Task::try_from(&task).expect("converts")).expect("serializes");
    assert_eq!(
        (&json["depth"], &json["chain_version"], &json["fanout_index"]),
        (&0.into(), &None::<i64>.into(), &None::<u32>.into())
    );
    // A task object from an older gateway, without them, still deserializes.
    let mut old = json;
    for key in ["depth", "chain_version", "fanout_index"] {
        old.as_object_mut().expect("object").remove(key);
    }
    let back: Task = serde_json::from_value(old).expect("deserializes");
    assert_eq!((back.depth, back.chain_version, back.fanout_index), (0, None, None));
}

#[test]
fn region_follows_node_and_is_null_without_one() {
    let text = serde_json::to_string(&Task::try_from(&proto_task()).expect("converts")).expect("serializes");
    assert!(text.contains(r#""node":"exec-1","region":"eu","created_at""#), "{text}");
    let task = v1::Task { region: None, ..proto_task() };
    let json = serde_json::to_value(Task::try_from(&task).expect("converts")).expect("serializes");
    assert_eq!(json["region"], serde_json::Value::Null);
    assert!(json.as_object().is_some_and(|o| o.contains_key("region")), "region is always present");
}

#[test]
fn an_unspecified_or_unknown_enum_value_is_an_error() {
    for status in [v1::TaskStatus::Unspecified as i32, 99] {
        let task = v1::Task { status, ..proto_task() };
        let err = Task::try_from(&task).expect_err("no REST status");
        assert!(err.to_string().starts_with("invalid control plane response: protobuf task status"), "{err}");
        let page = v1::ListTasksResponse { tasks: vec![proto_task(), task.clone()], next_page_token: String::new() };
        assert!(TaskPage::try_from(&page).is_err());
        let event =
            v1::TaskEvent { status: v1::TaskStatus::Running as i32, task: Some(task), ..v1::TaskEvent::default() };
        assert!(TaskEvent::try_from(&event).is_err(), "the snapshot's status counts too");
    }
    let event = v1::TaskEvent { status: 0, ..v1::TaskEvent::default() };
    assert!(TaskEvent::try_from(&event).is_err());
    let node = v1::Node { status: v1::NodeStatus::Active as i32, ..v1::Node::default() };
    assert!(Node::try_from(&node).is_ok());
    let node = v1::Node { extensions: [("core".to_owned(), 0)].into_iter().collect(), ..node };
    assert!(Node::try_from(&node).is_err());
    assert!(Node::try_from(&v1::Node::default()).is_err(), "unspecified node status");
    let extension = v1::Extension { nodes: vec![v1::NodeExtension::default()], ..v1::Extension::default() };
    assert!(Extension::try_from(&extension).is_err(), "unspecified extension state");
}

#[test]
fn an_empty_page_token_is_null() {
    let page = TaskPage::try_from(&v1::ListTasksResponse { tasks: vec![proto_task()], next_page_token: String::new() })
        .expect("converts");
    assert_eq!(page.next_page_token, None);
    assert_eq!(page.tasks.len(), 1);
    let page =
        TaskPage::try_from(&v1::ListTasksResponse { tasks: vec![], next_page_token: "abc".into() }).expect("converts");
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
    let json = serde_json::to_value(TaskEvent::try_from(&event).expect("converts")).expect("serializes");
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
    let json = serde_json::to_value(Extension::try_from(&extension).expect("converts")).expect("serializes");
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
    let json = serde_json::to_value(Node::try_from(&node).expect("converts")).expect("serializes");
    assert_eq!(json["status"], "draining");
    assert_eq!(json["extensions"], serde_json::json!({"core": "running"}));
    assert_eq!(json["last_heartbeat"], serde_json::Value::Null);
}

#[test]
fn the_node_list_shows_the_control_planes_and_the_lease() {
    let response = v1::ListNodesResponse {
        nodes: vec![v1::Node { name: "exec-1".into(), status: v1::NodeStatus::Active as i32, ..v1::Node::default() }],
        control_planes: vec![
            v1::ControlPlane {
                name: "cp-a/1f2e".into(),
                version: "0.1.0".into(),
                started_at: ts(1_767_225_600, 0),
                last_seen: ts(1_767_225_660, 250_000_000),
                leader: true,
            },
            v1::ControlPlane { name: "cp-b/9c8d".into(), version: "0.1.0".into(), ..v1::ControlPlane::default() },
        ],
        leadership: Some(v1::Leadership {
            holder: "cp-a/1f2e".into(),
            epoch: 3,
            acquired_at: ts(1_767_225_600, 0),
            expires_at: ts(1_767_225_615, 0),
        }),
    };
    let json = serde_json::to_value(NodeList::try_from(&response).expect("converts")).expect("serializes");
    assert_eq!(json["nodes"][0]["name"], "exec-1");
    assert_eq!(
        json["control_planes"],
        serde_json::json!([
            {"name": "cp-a/1f2e", "version": "0.1.0", "started_at": "2026-01-01T00:00:00Z",
             "last_seen": "2026-01-01T00:01:00.250Z", "leader": true},
            {"name": "cp-b/9c8d", "version": "0.1.0", "started_at": null, "last_seen": null, "leader": false}
        ])
    );
    assert_eq!(
        json["leadership"],
        serde_json::json!({"holder": "cp-a/1f2e", "epoch": 3, "acquired_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-01T00:00:15Z"})
    );
    let before_any_leader = v1::ListNodesResponse::default();
    let json = serde_json::to_value(NodeList::try_from(&before_any_leader).expect("converts")).expect("serializes");
    assert_eq!(json, serde_json::json!({"nodes": [], "control_planes": [], "leadership": null}));
    let unknown_status = v1::ListNodesResponse { nodes: vec![v1::Node::default()], ..before_any_leader };
    assert!(NodeList::try_from(&unknown_status).is_err(), "a node without a status has no REST shape");
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

#[test]
fn api_keys_show_their_secret_only_when_created() {
    let key = v1::ApiKey {
        id: "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e".into(),
        name: "ci".into(),
        policies: vec!["ops".into()],
        created_at: ts(1_767_225_600, 0),
        expires_at: None,
        revoked_at: ts(1_767_225_660, 0),
        created_by: String::new(),
    };
    let json = serde_json::to_value(ApiKey::from(&key)).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "id": "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e", "name": "ci", "policies": ["ops"],
            "expires_at": null, "created_at": "2026-01-01T00:00:00Z", "revoked_at": "2026-01-01T00:01:00Z",
            "created_by": null
        })
    );
    let created = CreatedApiKey::new(&key, "lgn_secret".into());
    let json = serde_json::to_value(&created).expect("serializes");
    let keys: Vec<&String> = json.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["created_at", "expires_at", "id", "key", "name", "policies"]);
    assert_eq!(json["key"], "lgn_secret");
    assert!(!format!("{created:?}").contains("lgn_secret"));
    let token = Token::from(&v1::IssueTokenResponse { token: "a.b.c".into(), expires_at: ts(1_767_225_600, 0) });
    assert!(!format!("{token:?}").contains("a.b.c"));
    assert_eq!(
        serde_json::to_value(&token).expect("json"),
        serde_json::json!({"token": "a.b.c", "expires_at": "2026-01-01T00:00:00Z"})
    );
}

#[test]
fn audit_records_use_null_for_absent_values() {
    let detail = prost_types::Struct {
        fields: [("reason".to_owned(), legion_proto::json_to_value(&serde_json::json!("no rule")))]
            .into_iter()
            .collect(),
    };
    let record = v1::AuditRecord {
        id: 7,
        at: ts(1_767_225_600, 0),
        action: "policy.put".into(),
        principal: "api-key/1".into(),
        resource: "policies/ops".into(),
        capability: String::new(),
        decision: "allow".into(),
        request_id: String::new(),
        source: "127.0.0.1:5000".into(),
        detail: Some(detail),
        hash: "ab".into(),
        prev_hash: "cd".into(),
    };
    let json = serde_json::to_value(AuditRecord::from(&record)).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "id": 7, "at": "2026-01-01T00:00:00Z", "action": "policy.put", "principal": "api-key/1",
            "resource": "policies/ops", "capability": null, "decision": "allow", "request_id": null,
            "source": "127.0.0.1:5000", "detail": {"reason": "no rule"}, "hash": "ab", "prev_hash": "cd"
        })
    );
    let page = AuditPage::from(&v1::ListAuditResponse { records: vec![record], next_page_token: String::new() });
    assert_eq!(page.next_page_token, None);
    let json = serde_json::to_value(AuditRecord::from(&v1::AuditRecord::default())).expect("serializes");
    assert_eq!(json["detail"], serde_json::Value::Null);

    let broken =
        v1::VerifyAuditResponse { valid: false, checked: 12, first_broken: Some(5), reason: "hash mismatch".into() };
    assert_eq!(
        serde_json::to_value(AuditVerification::from(&broken)).expect("json"),
        serde_json::json!({"valid": false, "checked": 12, "first_broken": 5, "reason": "hash mismatch"})
    );
    let valid = v1::VerifyAuditResponse { valid: true, checked: 12, first_broken: None, reason: String::new() };
    assert_eq!(
        serde_json::to_value(AuditVerification::from(&valid)).expect("json"),
        serde_json::json!({"valid": true, "checked": 12, "first_broken": null, "reason": null})
    );
}

#[test]
fn policies_capabilities_and_settings_convert_to_plain_json() {
    let policy = v1::Policy {
        name: "ops".into(),
        rules: vec![v1::PolicyRule { path: "tasks/*".into(), capabilities: vec!["read".into(), "list".into()] }],
        created_at: ts(1_767_225_600, 0),
        updated_at: ts(1_767_225_600, 0),
    };
    let json =
        serde_json::to_value(PolicyList::from(&v1::ListPoliciesResponse { policies: vec![policy] })).expect("json");
    assert_eq!(
        json["policies"][0]["rules"],
        serde_json::json!([{"path": "tasks/*", "capabilities": ["read", "list"]}])
    );
    let caps = v1::CapabilitiesResponse {
        capabilities: [("audit".to_owned(), v1::Capabilities { capabilities: vec!["deny".into()] })]
            .into_iter()
            .collect(),
    };
    assert_eq!(
        serde_json::to_value(CapabilityMap::from(&caps)).expect("json"),
        serde_json::json!({"capabilities": {"audit": ["deny"]}})
    );
    let settings = serde_json::json!({"limits": {"max_attempts": 25, "ratio": 0.5}, "crypt": {"jwt": {"hs_secret": "[REDACTED]"}}});
    let serde_json::Value::Object(members) = &settings else { panic!("object") };
    let s = prost_types::Struct {
        fields: members.iter().map(|(k, v)| (k.clone(), legion_proto::json_to_value(v))).collect(),
    };
    assert_eq!(struct_to_json(&s), settings);
}
