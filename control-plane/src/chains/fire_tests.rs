use std::collections::HashMap;

use legion_common::TaskStatus;
use legion_common::settings::Limits;
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::chains::compiled::CompiledChain;
use crate::chains::{Definition, Relationship};

fn relationship(trigger: &str, action: &str) -> Relationship {
    Relationship {
        id: Uuid::now_v7(),
        trigger: trigger.into(),
        action: action.into(),
        conditions: None,
        transformation: None,
        delay_ms: 0,
        active: true,
        priority: None,
        max_attempts: None,
        timeout_ms: None,
        retry: Default::default(),
    }
}

fn chain(relationships: Vec<Relationship>, max_depth: Option<u32>) -> CompiledChain {
    let definition = Definition { description: String::new(), max_depth, relationships };
    CompiledChain::compile(7, &definition).expect("valid chain")
}

fn parent(result: Value) -> Parent {
    let id = Uuid::now_v7();
    Parent {
        id,
        function: "http.request.get".into(),
        args: json!({"url": "http://example.test/"}),
        result,
        chain: "web-alert".into(),
        chain_version: 7,
        root_id: id,
        parent_id: None,
        relationship_id: None,
        depth: 0,
        attempt: 1,
        priority: 4,
        region: Some("eu-west".into()),
        owner: "api-key/abc".into(),
        created_at: chrono::Utc::now(),
        started_at: None,
    }
}

fn only_rel(chain: &CompiledChain) -> &CompiledRelationship {
    &chain.relationships[0]
}

#[test]
fn the_context_holds_results_args_and_task() {
    let p = parent(json!({"status": 500}));
    let context = p.context();
    assert_eq!(context["results"]["status"], 500);
    assert_eq!(context["args"]["url"], "http://example.test/");
    assert_eq!(context["task"]["id"], json!(p.id));
    assert_eq!(context["task"]["function"], "http.request.get");
    assert_eq!(context["task"]["depth"], 0);
    assert_eq!(context["task"]["chain"], "web-alert");
}

#[test]
fn only_active_relationships_of_the_trigger_fire_in_order() {
    let mut inactive = relationship("http.request.get", "core.util.noop");
    inactive.active = false;
    let c = chain(
        vec![
            relationship("http.request.get", "core.util.echo"),
            relationship("core.util.echo", "core.util.sleep"),
            inactive,
            relationship("http.request.get", "log.entry.write"),
        ],
        None,
    );
    let p = parent(json!({}));
    let steps = decide(&p, &c, &p.context(), &Limits::default());
    let actions: Vec<&str> = steps
        .iter()
        .map(|s| match s {
            Step::Run(r) | Step::Skip(r, _) => r.relationship.action.as_str(),
        })
        .collect();
    assert_eq!(actions, ["core.util.echo", "log.entry.write"]);
}

#[test]
fn a_false_condition_skips_with_the_reason() {
    let mut r = relationship("http.request.get", "http.request.post");
    r.conditions = Some(json!({"all": [{"fact": "results.status", "operator": "not_equal", "value": 200}]}));
    let c = chain(vec![r], None);
    let ok = parent(json!({"status": 200}));
    let steps = decide(&ok, &c, &ok.context(), &Limits::default());
    assert!(matches!(&steps[0], Step::Skip(_, reason) if reason.starts_with("conditions not met: ")), "{steps:?}");
    let failing = parent(json!({"status": 500}));
    let steps = decide(&failing, &c, &failing.context(), &Limits::default());
    assert!(matches!(&steps[0], Step::Run(_)), "{steps:?}");
}

#[test]
fn the_depth_cap_is_the_smaller_of_the_chain_and_the_setting() {
    let limits = Limits { max_chain_depth: 5, ..Limits::default() };
    let own = chain(vec![relationship("http.request.get", "http.request.get")], Some(3));
    assert_eq!(depth_cap(&own, &limits), 3);
    let none = chain(vec![relationship("a.b.c", "d.e.f")], None);
    assert_eq!(depth_cap(&none, &limits), 5);
    let above = chain(vec![relationship("a.b.c", "d.e.f")], Some(50));
    assert_eq!(depth_cap(&above, &limits), 5);
    let mut deep = parent(json!({}));
    deep.depth = 2;
    assert!(matches!(decide(&deep, &own, &deep.context(), &limits)[0], Step::Run(_)));
    deep.depth = 3;
    let steps = decide(&deep, &own, &deep.context(), &limits);
    assert!(matches!(&steps[0], Step::Skip(_, reason) if reason.contains("depth 4 exceeds")), "{steps:?}");
}

#[test]
fn an_object_output_is_one_pending_child_with_its_first_dispatch() {
    let c = chain(vec![relationship("http.request.get", "http.request.post")], None);
    let p = parent(json!({}));
    let children =
        expand(&p, only_rel(&c), Ok(json!({"url": "http://hook.test/", "body": {"a": 1}})), &Limits::default());
    assert_eq!(children.len(), 1);
    let child = &children[0];
    assert_eq!(child.status, TaskStatus::Pending);
    assert_eq!(child.function, "http.request.post");
    assert_eq!((child.parent_id, child.root_id, child.depth, child.fanout_index), (p.id, p.root_id, 1, 0));
    assert_eq!(child.relationship_id, c.relationships[0].relationship.id);
    assert_eq!((child.chain.as_str(), child.chain_version), ("web-alert", 7));
    assert_eq!((child.owner.as_str(), child.region.as_deref(), child.priority), ("api-key/abc", Some("eu-west"), 4));
    assert_eq!(child.routing_key, "http.request.post.eu-west");
    assert_eq!((child.max_attempts, child.timeout_ms), (1, Limits::default().default_timeout_ms));
    let message: legion_common::broker::TaskMessage = serde_json::from_slice(&child.payload).expect("message");
    assert_eq!((message.task_id, message.dispatch), (child.id, 1));
    assert_eq!(serde_json::from_str::<Value>(&child.args_json).expect("json"), child.args);
}

#[test]
fn relationship_settings_override_the_defaults() {
    let mut r = relationship("http.request.get", "core.util.echo");
    r.priority = Some(9);
    r.max_attempts = Some(3);
    r.timeout_ms = Some(1234);
    r.delay_ms = 5000;
    let c = chain(vec![r], None);
    let children = expand(&parent(json!({})), only_rel(&c), Ok(json!({})), &Limits::default());
    let child = &children[0];
    assert_eq!((child.priority, child.max_attempts, child.timeout_ms), (9, 3, 1234));
    assert_eq!((child.status, child.delay_ms), (TaskStatus::Scheduled, 5000));
    assert!(child.payload.is_empty(), "a scheduled child is dispatched when due");
}

#[test]
fn an_array_fans_out_one_child_per_object() {
    let c = chain(vec![relationship("http.request.get", "core.util.echo")], None);
    let items: Vec<Value> = (0..50).map(|i| json!({"n": i})).collect();
    let children = expand(&parent(json!({})), only_rel(&c), Ok(Value::Array(items)), &Limits::default());
    assert_eq!(children.len(), 50);
    for (i, child) in children.iter().enumerate() {
        assert_eq!(child.fanout_index, u32::try_from(i).expect("small"));
        assert_eq!(child.args, json!({"n": i}));
        assert_eq!(child.status, TaskStatus::Pending);
    }
    let mut ids: Vec<Uuid> = children.iter().map(|c| c.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 50);
}

#[test]
fn fan_out_edge_cases_fail_or_skip_only_the_child() {
    let c = chain(vec![relationship("http.request.get", "core.util.echo")], None);
    let rel = only_rel(&c);
    let p = parent(json!({}));
    let limits = Limits { max_fanout: 3, ..Limits::default() };

    let empty = expand(&p, rel, Ok(json!([])), &limits);
    assert_eq!((empty.len(), empty[0].status), (1, TaskStatus::Skipped));
    assert!(empty[0].error.as_deref().is_some_and(|e| e.contains("empty array")));

    let too_many = expand(&p, rel, Ok(json!([{}, {}, {}, {}])), &limits);
    assert_eq!((too_many.len(), too_many[0].status), (1, TaskStatus::Failed));
    assert_eq!(too_many[0].error.as_deref(), Some("transformation produced 4 items, more than limits.max_fanout (3)"));

    let mixed = expand(&p, rel, Ok(json!([{"a": 1}, 2, "x"])), &limits);
    let statuses: Vec<TaskStatus> = mixed.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [TaskStatus::Pending, TaskStatus::Failed, TaskStatus::Failed]);
    assert_eq!(
        mixed[1].error.as_deref(),
        Some("transformation item 1 is a number; the args of a task must be an object")
    );

    for scalar in [json!(1), json!("s"), json!(null), json!(true)] {
        let children = expand(&p, rel, Ok(scalar.clone()), &limits);
        assert_eq!((children.len(), children[0].status), (1, TaskStatus::Failed), "{scalar}");
        assert!(children[0].payload.is_empty());
    }

    let error = expand(&p, rel, Err("jq: cannot index number".into()), &limits);
    assert_eq!(error[0].status, TaskStatus::Failed);
    assert_eq!(error[0].error.as_deref(), Some("transformation failed: jq: cannot index number"));
}

#[test]
fn args_beyond_the_limits_fail_the_child() {
    let c = chain(vec![relationship("http.request.get", "core.util.echo")], None);
    let p = parent(json!({}));
    let limits = Limits { max_payload_bytes: 16, max_json_depth: 3, ..Limits::default() };
    let big = expand(&p, only_rel(&c), Ok(json!({"text": "more than sixteen bytes"})), &limits);
    assert_eq!(big[0].status, TaskStatus::Failed);
    assert!(big[0].error.as_deref().is_some_and(|e| e.contains("limits.max_payload_bytes")), "{:?}", big[0].error);
    let shallow = Limits { max_json_depth: 3, ..Limits::default() };
    let deep = expand(&p, only_rel(&c), Ok(json!({"a": {"b": {"c": {}}}})), &shallow);
    assert!(deep[0].error.as_deref().is_some_and(|e| e.contains("limits.max_json_depth")), "{:?}", deep[0].error);
    let nul = expand(&p, only_rel(&c), Ok(json!({"a": "x\u{0}"})), &Limits::default());
    assert_eq!(nul[0].status, TaskStatus::Failed);
}

#[test]
fn without_a_transformation_the_result_is_passed_on() {
    assert_eq!(default_args(&parent(json!({"a": 1}))), json!({"a": 1}));
    assert_eq!(default_args(&parent(json!([1, 2]))), json!({"result": [1, 2]}));
    assert_eq!(default_args(&parent(json!(null))), json!({"result": null}));
}

#[test]
fn a_run_stays_within_max_run_tasks() {
    let c = chain(
        vec![relationship("http.request.get", "core.util.echo"), relationship("http.request.get", "core.util.noop")],
        None,
    );
    let p = parent(json!({}));
    let mut children = expand(&p, &c.relationships[0], Ok(json!([{}, {}, {}])), &Limits::default());
    children.extend(expand(&p, &c.relationships[1], Ok(json!([{}, {}])), &Limits::default()));
    // The run holds 4 tasks; 3 more fit under 7, the next group of 2 does not.
    let sizes: HashMap<Uuid, u32> = [(p.root_id, 4)].into_iter().collect();
    let (kept, added) = cap_run(children, &sizes, 7);
    assert_eq!(kept.len(), 4);
    assert!(kept[..3].iter().all(|c| c.status == TaskStatus::Pending && c.function == "core.util.echo"));
    let marker = &kept[3];
    assert_eq!(
        (marker.function.as_str(), marker.status, marker.fanout_index),
        ("core.util.noop", TaskStatus::Failed, 0)
    );
    assert_eq!(marker.error.as_deref(), Some("the run has 7 tasks; 2 more would pass limits.max_run_tasks (7)"));
    assert!(marker.payload.is_empty());
    assert_eq!(added.get(&p.root_id), Some(&4));
    // Within the cap nothing changes.
    let again = expand(&p, &c.relationships[0], Ok(json!([{}, {}])), &Limits::default());
    let (kept, added) = cap_run(again.clone(), &HashMap::new(), 10);
    assert_eq!(kept, again);
    assert_eq!(added.get(&p.root_id), Some(&2));
}
