use std::collections::HashSet;

use legion_common::settings::Limits;
use serde_json::json;

use super::*;

fn rel(trigger: &str, action: &str) -> RelationshipSpec {
    RelationshipSpec { trigger: trigger.into(), action: action.into(), ..RelationshipSpec::default() }
}

fn spec(relationships: Vec<RelationshipSpec>) -> ChainSpec {
    ChainSpec { name: "web-alert".into(), relationships, ..ChainSpec::default() }
}

fn error(spec: &ChainSpec) -> String {
    validate(spec, &Limits::default()).expect_err("must be refused").to_string()
}

#[test]
fn a_valid_chain_gets_defaults_and_ids() {
    let mut r = rel("http.request.get", "http.request.post");
    r.conditions = Some(json!({"all": [{"fact": "results.status", "operator": "not_equal", "value": 200}]}));
    r.transformation = Some(json!({"engine": "static", "value": {"url": "http://hook.test/"}}));
    let definition =
        validate(&spec(vec![r, rel("http.request.post", "log.entry.write")]), &Limits::default()).expect("valid");
    assert_eq!(definition.relationships.len(), 2);
    assert!(definition.relationships.iter().all(|r| r.active && r.delay_ms == 0));
    assert_ne!(definition.relationships[0].id, definition.relationships[1].id);
    assert_eq!(functions(&definition), ["http.request.get", "http.request.post", "log.entry.write"]);
}

#[test]
fn each_bad_field_is_named_with_its_relationship() {
    let limits = Limits::default();
    let with = |f: fn(&mut RelationshipSpec)| {
        let mut r = rel("http.request.get", "http.request.post");
        f(&mut r);
        spec(vec![rel("core.util.echo", "core.util.noop"), r])
    };
    let cases: Vec<(ChainSpec, &str)> = vec![
        (ChainSpec { name: "Bad Name".into(), ..spec(vec![rel("a.b.c", "d.e.f")]) }, "name: "),
        (spec(vec![]), "relationships: must hold 1 to 100"),
        (with(|r| r.trigger = "nope".into()), "relationships[1].trigger: "),
        (with(|r| r.action = String::new()), "relationships[1].action: "),
        (
            with(|r| {
                r.conditions = Some(json!({"all": [{"fact": "results.status", "operator": "equals", "value": 1}]}))
            }),
            "relationships[1].conditions.all[0].operator: ",
        ),
        (
            with(|r| r.conditions = Some(json!({"all": [{"operator": "equal", "value": 1}]}))),
            "relationships[1].conditions.all[0].fact: ",
        ),
        (
            with(|r| r.conditions = Some(json!({"fact": "results.n", "operator": "between", "value": [1]}))),
            "relationships[1].conditions.value: ",
        ),
        (
            with(|r| r.conditions = Some(json!({"fact": "results.s", "operator": "matches", "value": "(unclosed"}))),
            "relationships[1].conditions.value: ",
        ),
        (
            with(|r| r.transformation = Some(json!({"engine": "jinja", "template": "{% if %}"}))),
            "relationships[1].transformation.template: ",
        ),
        (
            with(|r| r.transformation = Some(json!({"engine": "jq", "expr": ".results | ]"}))),
            "relationships[1].transformation.expr: ",
        ),
        (with(|r| r.transformation = Some(json!({"engine": "lua"}))), "relationships[1].transformation.engine: "),
        (
            with(|r| r.transformation = Some(json!({"engine": "static", "value": "text"}))),
            "relationships[1].transformation.value: must be an object",
        ),
        (
            with(|r| r.transformation = Some(json!({"engine": "static", "value": [{"a": 1}, 2]}))),
            "relationships[1].transformation.value: must be an object",
        ),
        (
            with(|r| {
                let mut rule = json!({"fact": "results.a", "operator": "nil"});
                for _ in 0..17 {
                    rule = json!({"all": [rule]});
                }
                r.conditions = Some(rule);
            }),
            "relationships[1].conditions: nested 35 levels deep, more than limits.max_json_depth (32)",
        ),
        (with(|r| r.delay_ms = u64::MAX), "relationships[1].delay_ms: "),
        (with(|r| r.priority = Some(10)), "relationships[1].priority: must be 0 to 9, got 10"),
        (with(|r| r.max_attempts = Some(0)), "relationships[1].max_attempts: "),
        (with(|r| r.timeout_ms = Some(0)), "relationships[1].timeout_ms: "),
        (ChainSpec { max_depth: Some(0), ..spec(vec![rel("a.b.c", "d.e.f")]) }, "max_depth: "),
        (ChainSpec { max_depth: Some(33), ..spec(vec![rel("a.b.c", "d.e.f")]) }, "max_depth: must be 1 to 32"),
        (ChainSpec { description: "x".repeat(2000), ..spec(vec![rel("a.b.c", "d.e.f")]) }, "description: "),
    ];
    for (spec, prefix) in cases {
        let message = validate(&spec, &limits).expect_err(prefix).to_string();
        assert!(message.starts_with(prefix), "{message:?} should start with {prefix:?}");
    }
}

#[test]
fn too_many_relationships_or_too_large_documents_are_refused() {
    let limits = Limits { max_relationships: 2, max_transformation_bytes: 64, ..Limits::default() };
    let three = spec(vec![rel("a.b.c", "d.e.f"), rel("a.b.c", "d.e.g"), rel("a.b.c", "d.e.h")]);
    let message = validate(&three, &limits).expect_err("too many").to_string();
    assert!(message.contains("limits.max_relationships"), "{message}");
    let mut big = rel("a.b.c", "d.e.f");
    big.conditions =
        Some(json!({"any": (0..20).map(|_| json!({"fact": "results.a", "operator": "nil"})).collect::<Vec<_>>()}));
    let message = validate(&spec(vec![big]), &limits).expect_err("too large").to_string();
    assert!(message.starts_with("relationships[0].conditions: "), "{message}");
    assert!(message.contains("limits.max_transformation_bytes"), "{message}");
}

#[test]
fn a_cycle_needs_an_explicit_depth_cap() {
    let looping = spec(vec![
        rel("http.request.get", "core.util.echo"),
        rel("core.util.echo", "log.entry.write"),
        rel("log.entry.write", "core.util.echo"),
    ]);
    let message = error(&looping);
    assert!(message.starts_with("relationships[2].action: closes a cycle"), "{message}");
    assert!(message.contains("core.util.echo -> log.entry.write -> core.util.echo"), "{message}");
    assert!(message.contains("max_depth"), "{message}");
    validate(&ChainSpec { max_depth: Some(20), ..looping }, &Limits::default()).expect("capped loop");
    // A relationship onto its own trigger is a cycle too.
    let own = spec(vec![rel("core.util.echo", "core.util.echo")]);
    assert!(error(&own).starts_with("relationships[0].action: closes a cycle"));
    // An inactive relationship never fires, so it closes no cycle.
    let mut inactive = rel("log.entry.write", "core.util.echo");
    inactive.active = Some(false);
    let broken = spec(vec![rel("core.util.echo", "log.entry.write"), inactive]);
    validate(&broken, &Limits::default()).expect("no active cycle");
}

#[test]
fn diamonds_are_not_cycles() {
    let diamond =
        spec(vec![rel("a.b.c", "d.e.f"), rel("a.b.c", "g.h.i"), rel("d.e.f", "j.k.l"), rel("g.h.i", "j.k.l")]);
    validate(&diamond, &Limits::default()).expect("a diamond terminates");
    assert_eq!(find_cycle(&validate(&diamond, &Limits::default()).expect("valid").relationships), None);
}

#[test]
fn unknown_functions_are_named() {
    let definition =
        validate(&spec(vec![rel("core.util.echo", "http.request.patch")]), &Limits::default()).expect("valid");
    let known: HashSet<String> = ["core.util.echo".to_owned()].into_iter().collect();
    let message = unknown_functions(&definition, &known).expect_err("unknown").to_string();
    assert!(message.starts_with("relationships[0].action: unknown function \"http.request.patch\""), "{message}");
}

#[test]
fn a_static_fan_out_beyond_the_cap_is_refused() {
    let mut r = rel("a.b.c", "d.e.f");
    r.transformation = Some(json!({"engine": "static", "value": [{}, {}, {}, {}]}));
    let limits = Limits { max_fanout: 3, ..Limits::default() };
    let message = validate(&spec(vec![r]), &limits).expect_err("too many").to_string();
    assert!(
        message.starts_with("relationships[0].transformation.value: 4 items would fan out past limits.max_fanout (3)"),
        "{message}"
    );
}

#[test]
fn an_unchanged_document_is_recognized_whatever_the_limits() {
    let mut r = rel("core.util.echo", "core.util.noop");
    r.conditions = Some(json!({"fact": "results.n", "operator": "nil"}));
    r.priority = Some(3);
    let document = spec(vec![r, rel("core.util.noop", "log.entry.write")]);
    let definition = validate(&document, &Limits::default()).expect("valid");
    assert!(same_as(&document, &definition));
    // Defaults spelled out are the same document; null documents are absent ones.
    let mut explicit = document.clone();
    explicit.relationships[1].active = Some(true);
    explicit.relationships[1].conditions = Some(serde_json::Value::Null);
    assert!(same_as(&explicit, &definition));
    // Any difference is a change.
    let mut other = document.clone();
    other.relationships[0].priority = Some(4);
    assert!(!same_as(&other, &definition));
    let mut fewer = document;
    fewer.relationships.pop();
    assert!(!same_as(&fewer, &definition));
}

#[test]
fn a_relationship_retry_policy_is_checked_and_kept_as_given() {
    use crate::delivery::retry::RetryOverrides;
    let mut r = rel("core.util.echo", "core.util.noop");
    r.retry = RetryOverrides { multiplier: Some(3.0), ..RetryOverrides::default() };
    let document = spec(vec![r.clone()]);
    let definition = validate(&document, &Limits::default()).expect("valid");
    assert_eq!(definition.relationships[0].retry, r.retry);
    assert!(same_as(&document, &definition));
    // Another policy is a change.
    let mut other = document;
    other.relationships[0].retry.jitter = Some(0.5);
    assert!(!same_as(&other, &definition));
    let cases = [
        (RetryOverrides { multiplier: Some(0.9), ..RetryOverrides::default() }, "relationships[0].retry.multiplier: "),
        (RetryOverrides { jitter: Some(f64::NAN), ..RetryOverrides::default() }, "relationships[0].retry.jitter: "),
        (
            RetryOverrides { max_backoff_ms: Some(86_400_001), ..RetryOverrides::default() },
            "relationships[0].retry.max_backoff_ms: ",
        ),
        (
            RetryOverrides { initial_backoff_ms: Some(10), max_backoff_ms: Some(5), ..RetryOverrides::default() },
            "relationships[0].retry.initial_backoff_ms: ",
        ),
    ];
    for (retry, prefix) in cases {
        let mut bad = r.clone();
        bad.retry = retry;
        let message = validate(&spec(vec![bad]), &Limits::default()).expect_err("invalid retry").to_string();
        assert!(message.starts_with(prefix), "{message}");
    }
}

#[test]
fn definitions_stored_before_retry_policies_still_load() {
    let stored = json!({
        "description": "",
        "max_depth": null,
        "relationships": [{
            "id": "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e",
            "trigger": "core.util.echo",
            "action": "core.util.noop",
            "conditions": null,
            "transformation": null,
            "delay_ms": 0,
            "active": true,
            "priority": null,
            "max_attempts": null,
            "timeout_ms": null
        }]
    });
    let definition: crate::chains::Definition = serde_json::from_value(stored.clone()).expect("old definition");
    assert!(definition.relationships[0].retry.is_empty());
    // Written back without the member, so an unchanged chain stays byte-for-byte what it was.
    assert_eq!(serde_json::to_value(&definition).expect("json"), stored);
}
