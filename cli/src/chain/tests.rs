use std::path::PathBuf;

use chrono::{DateTime, Utc};
use legion_gateway::view::Relationship;
use serde_json::{Value, json};

use super::*;
use crate::testing::{legion, serve};

const YAML: &str = r#"
name: nightly
description: reports
max_depth: 3
relationships:
  - trigger: http.request.get
    action: log.entry.write
    conditions:
      all:
        - {fact: results.status, operator: equal, value: 200}
    transformation:
      engine: jinja
      template: '{"message": "{{ results.body }}"}'
    delay_ms: 18446744073709551615
    priority: 9
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write");
    file
}

#[test]
fn yaml_and_json_files_give_the_same_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let from_yaml = read_chain(&write(dir.path(), "c.yaml", YAML), std::io::empty()).expect("yaml");
    assert_eq!((from_yaml.name.as_str(), from_yaml.max_depth), ("nightly", Some(3)));
    let r = &from_yaml.relationships[0];
    assert_eq!(r.conditions, Some(json!({"all": [{"fact": "results.status", "operator": "equal", "value": 200}]})));
    assert_eq!(r.transformation, Some(json!({"engine": "jinja", "template": "{\"message\": \"{{ results.body }}\"}"})));
    assert_eq!((r.delay_ms, r.priority), (Some(u64::MAX), Some(9)));

    let document: Value = serde_yaml_ng::from_str(YAML).expect("yaml");
    let json = document.to_string();
    for name in ["c.json", "c", "c.YML.txt"] {
        let chain = read_chain(&write(dir.path(), name, &json), std::io::empty()).expect(name);
        assert_eq!(chain, from_yaml, "{name}");
    }
    for name in ["c.yml", "c.YAML", "chain"] {
        let chain = read_chain(&write(dir.path(), name, YAML), std::io::empty()).expect(name);
        assert_eq!(chain, from_yaml, "{name}: YAML by extension, or after JSON failed");
    }
    assert_eq!(read_chain(Path::new("-"), YAML.as_bytes()).expect("stdin"), from_yaml);
    assert_eq!(read_chain(Path::new("-"), json.as_bytes()).expect("stdin"), from_yaml);
}

/// The example document of docs/chains.md, whose optional members are spelled out as null.
#[test]
fn the_documented_example_reads_with_its_nulls() {
    let doc = r#"
name: web-alert                 # 1-64 bytes of a-z 0-9 _ - . (as policy names)
description: alert when the site is down
max_depth: null                 # needed only when the relationships form a cycle (see Limits)
relationships:
  - trigger: http.request.get
    action: http.request.post
    conditions:
      all:
        - {fact: results.status, operator: not_equal, value: 200}
    transformation:
      engine: jinja
      template: |
        {"url": "https://hooks.example.com/alert",
         "body": {"text": "{{ args.url }} answered {{ results.status }}", "task": {{ task.id | tojson }}}}
    delay_ms: 0                 # the child waits `scheduled` this long
    active: true                # an inactive relationship never fires
    priority: null              # default: the parent's priority
    max_attempts: null          # default 1
    timeout_ms: null            # default limits.default_timeout_ms
"#;
    let chain = read_chain(Path::new("-"), doc.as_bytes()).expect("reads");
    let request = chain.into_request().chain.expect("chain");
    assert_eq!((request.name.as_str(), request.max_depth), ("web-alert", None));
    let r = &request.relationships[0];
    assert_eq!((r.delay_ms, r.active, r.priority, r.max_attempts, r.timeout_ms), (0, Some(true), None, None, None));
    let template = r.transformation.as_ref().map(legion_proto::value_to_json).expect("transformation");
    assert!(template["template"].as_str().is_some_and(|t| t.ends_with("| tojson }}}}\n")), "{template}");
}

#[test]
fn bad_files_are_usage_errors_naming_the_file_and_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("a.yaml", "name: c\nrelationships: [\n", "a.yaml: not valid YAML: "),
        ("b.json", "{\"name\": ", "b.json: not valid JSON (EOF while parsing"),
        ("c.yaml", "name: c\nrelationships: []\nversion: 2\nowner: x\n", "c.yaml: owner: unknown field"),
        (
            "d.yml",
            "name: c\nrelationships:\n  - {trigger: a.b.c, action: d.e.f, timeout_ms: 4294967296}\n",
            "d.yml: relationships[0].timeout_ms: invalid value: integer `4294967296`, expected u32",
        ),
        (
            "e.yaml",
            "name: c\nrelationships:\n  - {trigger: a.b.c, action: d.e.f, when: x}\n",
            "e.yaml: relationships[0].when: unknown field",
        ),
        ("f.yaml", "relationships: []\n", "f.yaml: name: required"),
        ("g.yaml", "- just\n- a list\n", "g.yaml: body: must be a JSON object, not an array"),
        ("h.yaml", "", "h.yaml: body: must be a JSON object, not null"),
        (
            "i.json",
            "{\"name\":\"c\",\"relationships\":[{\"trigger\":\"a\",\"action\":\"b\",\"priority\":-1}]}",
            "i.json: relationships[0].priority: invalid value: integer `-1`",
        ),
    ];
    for (name, text, expected) in cases {
        let err = read_chain(&write(dir.path(), name, text), std::io::empty()).expect_err(name);
        let message = err.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert_eq!(err.exit_code(), 64, "{name}");
    }
    let err = read_chain(&dir.path().join("missing.yaml"), std::io::empty()).expect_err("missing");
    assert!(err.to_string().starts_with("cannot read ") && err.to_string().contains("missing.yaml"), "{err}");
    assert_eq!(err.exit_code(), 64);
    let err = read_chain(Path::new("-"), &b"{\"name\""[..]).expect_err("stdin");
    assert!(err.to_string().starts_with("standard input: not valid JSON"), "{err}");
}

#[test]
fn the_applied_line_says_what_happened() {
    assert_eq!(applied_line("c", true, true, 1), "chain c created, version 1");
    assert_eq!(applied_line("c", false, true, 4), "chain c changed, version 4");
    assert_eq!(applied_line("c", false, false, 4), "chain c unchanged, version 4");
}

fn chain(name: &str, version: i64, relationships: usize, updated: Option<DateTime<Utc>>, by: Option<&str>) -> Chain {
    let relationship = Relationship {
        id: String::new(),
        trigger: "a.b.c".into(),
        action: "d.e.f".into(),
        conditions: Value::Null,
        transformation: Value::Null,
        delay_ms: 0,
        active: None,
        priority: None,
        max_attempts: None,
        timeout_ms: None,
        retry: None,
    };
    Chain {
        name: name.into(),
        description: None,
        max_depth: None,
        version,
        created_at: updated,
        updated_at: updated,
        updated_by: by.map(str::to_owned),
        relationships: vec![relationship; relationships],
    }
}

#[test]
fn the_list_is_a_padded_table() {
    let at = DateTime::from_timestamp(1_767_225_600, 123_000_000);
    let chains = [chain("nightly-report", 12, 3, at, Some("api-key/ops")), chain("c", 1, 0, None, None)];
    let mut out = Vec::new();
    write_table(&mut out, &chains).expect("writes");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "NAME            VERSION  RELATIONSHIPS  UPDATED_AT            UPDATED_BY\n\
         nightly-report  12       3              2026-01-01T00:00:00Z  api-key/ops\n\
         c               1        0              -                     -\n"
    );
    let mut out = Vec::new();
    write_table(&mut out, &[]).expect("writes");
    assert_eq!(String::from_utf8(out).expect("utf-8"), "NAME  VERSION  RELATIONSHIPS  UPDATED_AT  UPDATED_BY\n");
}

/// The commands against a control plane: apply (created, unchanged, changed; refusals), list across
/// pages, show, delete.
#[tokio::test]
async fn chain_commands_talk_to_the_control_plane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, state) = serve(dir.path(), Vec::new()).await;
    let file = write(dir.path(), "nightly.yaml", YAML);
    let file = file.to_str().expect("utf-8");

    let (result, out) = legion(addr, dir.path(), &["chain", "apply", file], b"").await;
    assert_eq!((result.expect("applies"), out.as_str()), (0, "chain nightly created, version 1\n"));
    let (result, out) = legion(addr, dir.path(), &["chain", "apply", file], b"").await;
    assert_eq!((result.expect("applies"), out.as_str()), (0, "chain nightly unchanged, version 1\n"));
    let changed = YAML.replace("priority: 9", "priority: 8");
    let (result, out) = legion(addr, dir.path(), &["chain", "apply", "-"], changed.as_bytes()).await;
    assert_eq!((result.expect("applies"), out.as_str()), (0, "chain nightly changed, version 2\n"));

    let refused = r#"{"name":"loop","relationships":[{"trigger":"a.b.c","action":"a.b.c"}]}"#;
    let (result, out) = legion(addr, dir.path(), &["chain", "apply", "-"], refused.as_bytes()).await;
    let err = result.expect_err("refused by the control plane");
    assert_eq!(
        (err.to_string().as_str(), err.exit_code(), out.as_str()),
        ("INVALID_ARGUMENT: relationships[0].action: same as the trigger", 1, "")
    );
    let (result, _) = legion(addr, dir.path(), &["chain", "apply", "-"], b"name: x\n").await;
    let err = result.expect_err("refused locally");
    assert_eq!((err.to_string().as_str(), err.exit_code()), ("standard input: relationships: required", 64));

    let (result, out) = legion(addr, dir.path(), &["chain", "show", "nightly"], b"").await;
    assert_eq!(result.expect("shows"), 0);
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (&shown["name"], &shown["version"], &shown["description"]),
        (&json!("nightly"), &json!(2), &json!("reports"))
    );
    assert_eq!(shown["relationships"][0]["priority"], 8);
    assert_eq!(shown["relationships"][0]["conditions"]["all"][0]["operator"], "equal");

    for i in 0..1500 {
        state
            .chains
            .lock()
            .expect("lock")
            .insert(format!("c{i:04}"), v1::Chain { name: format!("c{i:04}"), version: 1, ..v1::Chain::default() });
    }
    state.page_sizes.lock().expect("lock").clear();
    let (result, out) = legion(addr, dir.path(), &["chain", "list"], b"").await;
    assert_eq!(result.expect("lists"), 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1 + 1501, "a header and every chain, across pages");
    assert!(lines[0].starts_with("NAME "), "{}", lines[0]);
    assert!(
        lines[1501].starts_with("nightly  2        1              2026-01-01T00:00:00Z  api-key/test"),
        "{}",
        lines[1501]
    );
    assert_eq!(*state.page_sizes.lock().expect("lock"), [1000, 1000]);

    let (result, out) = legion(addr, dir.path(), &["chain", "delete", "nightly"], b"").await;
    assert_eq!((result.expect("deletes"), out.as_str()), (0, ""));
    let (result, _) = legion(addr, dir.path(), &["chain", "show", "nightly"], b"").await;
    let err = result.expect_err("gone");
    assert_eq!((err.to_string().as_str(), err.exit_code()), ("NOT_FOUND: chain nightly not found", 1));
}

/// Regression: `legion chain show X > f.json && legion chain apply f.json` failed with
/// `created_at, updated_at, updated_by, version: unknown fields`. The shown document applies again,
/// unchanged, and its output-only members (relationship ids, version, times, author) are not sent.
#[tokio::test]
async fn a_shown_chain_applies_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, state) = serve(dir.path(), Vec::new()).await;
    let file = write(dir.path(), "nightly.yaml", YAML);
    let (result, _) = legion(addr, dir.path(), &["chain", "apply", file.to_str().expect("utf-8")], b"").await;
    assert_eq!(result.expect("applies"), 0);

    let (result, shown) = legion(addr, dir.path(), &["chain", "show", "nightly"], b"").await;
    assert_eq!(result.expect("shows"), 0);
    let exported = write(dir.path(), "f.json", &shown);
    let exported = exported.to_str().expect("utf-8");
    let document: Value = serde_json::from_str(&shown).expect("json");
    for member in ["version", "created_at", "updated_at", "updated_by"] {
        assert!(document.get(member).is_some(), "{member}: {shown}");
    }
    assert!(document["relationships"][0].get("id").is_some(), "{shown}");
    let from_yaml = read_chain(&file, std::io::empty()).expect("yaml");
    assert_eq!(read_chain(Path::new(exported), std::io::empty()).expect("reads"), from_yaml, "the same definition");
    let (result, out) = legion(addr, dir.path(), &["chain", "apply", exported], b"").await;
    assert_eq!((result.expect("applies"), out.as_str()), (0, "chain nightly unchanged, version 1\n"));

    // A chain as a real control plane keeps it, with ids, times and another author.
    let relationship = v1::Relationship {
        id: "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e".into(),
        trigger: "a.b.c".into(),
        action: "d.e.f".into(),
        ..v1::Relationship::default()
    };
    let at = Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 });
    let stored = v1::Chain {
        name: "kept".into(),
        relationships: vec![relationship],
        version: 4,
        created_at: at,
        updated_at: at,
        updated_by: "jwt/someone".into(),
        ..v1::Chain::default()
    };
    state.chains.lock().expect("lock").insert("kept".into(), stored);
    let (result, shown) = legion(addr, dir.path(), &["chain", "show", "kept"], b"").await;
    assert_eq!(result.expect("shows"), 0);
    let (result, out) = legion(addr, dir.path(), &["chain", "apply", "-"], shown.as_bytes()).await;
    assert!(result.expect("applies") == 0 && out.starts_with("chain kept "), "{out}");
    let chains = state.chains.lock().expect("lock");
    let applied = chains.get("kept").expect("kept");
    assert_eq!(
        (applied.relationships[0].id.as_str(), applied.relationships[0].trigger.as_str(), applied.updated_by.as_str()),
        ("", "a.b.c", "api-key/test"),
        "the id and the author were not sent"
    );
}

/// A bad file is reported before any connection is attempted, whatever the connection settings.
#[tokio::test]
async fn a_bad_file_is_reported_before_connecting() {
    let connect = || -> Result<ChainServiceClient<AuthChannel>, Error> { Err(Error::Usage("--ca: required".into())) };
    let mut out = Vec::new();
    let command = ChainCommand::Apply { file: PathBuf::from("-") };
    let err = run(command, connect, &b"name: x\n"[..], &mut out).await.expect_err("refused");
    assert_eq!((err.to_string().as_str(), err.exit_code()), ("standard input: relationships: required", 64));
    let command = ChainCommand::Apply { file: PathBuf::from("-") };
    let err = run(command, connect, &b"name: x\nrelationships: []\n"[..], &mut out).await.expect_err("no connection");
    assert_eq!(err.to_string(), "--ca: required");
}

/// A relationship's `retry` travels from the chain file to the control plane and back, as the REST
/// shapes define it.
#[tokio::test]
async fn a_relationship_retry_policy_is_applied_and_shown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, state) = serve(dir.path(), Vec::new()).await;
    let yaml = "name: retried\nrelationships:\n  - trigger: a.b.c\n    action: d.e.f\n    retry: {initial_backoff_ms: 500, multiplier: 3}\n";
    let (result, _) = legion(addr, dir.path(), &["chain", "apply", "-"], yaml.as_bytes()).await;
    assert_eq!(result.expect("applies"), 0);
    let stored = state.chains.lock().expect("lock").get("retried").cloned().expect("stored");
    assert_eq!(
        stored.relationships[0].retry,
        Some(v1::RetryPolicy { initial_backoff_ms: Some(500), multiplier: Some(3.0), ..v1::RetryPolicy::default() })
    );
    let (result, out) = legion(addr, dir.path(), &["chain", "show", "retried"], b"").await;
    assert_eq!(result.expect("shows"), 0);
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["relationships"][0]["retry"], json!({"initial_backoff_ms": 500, "multiplier": 3.0}));
    let bad = "name: retried\nrelationships:\n  - trigger: a.b.c\n    action: d.e.f\n    retry: {attempts: 3}\n";
    let (result, _) = legion(addr, dir.path(), &["chain", "apply", "-"], bad.as_bytes()).await;
    let err = result.expect_err("refused locally");
    assert!(err.to_string().contains("relationships[0].retry") && err.exit_code() == 64, "{err}");
}
