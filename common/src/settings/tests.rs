use std::collections::BTreeMap;

use super::*;

fn sources(dir: &Path, env: &[(&str, &str)]) -> Sources {
    Sources {
        dirs: vec![dir.to_path_buf()],
        files: Vec::new(),
        skip_standard_dirs: true,
        env: Some(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>()),
    }
}

#[test]
fn defaults_are_valid() {
    Settings::default().validate().expect("defaults validate");
}

#[test]
fn files_merge_in_name_order_and_env_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("10-a.json"), r#"{"data":{"url":"postgres://a/x","max_connections":3}}"#)
        .expect("write");
    std::fs::write(dir.path().join("20-b.json"), r#"{"data":{"url":"postgres://b/x"}}"#).expect("write");
    std::fs::write(dir.path().join("ignored.txt"), "not json").expect("write");
    let s = Settings::load(&sources(dir.path(), &[])).expect("load");
    assert_eq!(s.data.url, "postgres://b/x");
    assert_eq!(s.data.max_connections, 3, "deep merge keeps keys of earlier layers");

    let s = Settings::load(&sources(dir.path(), &[("LEGION_DATA__URL", "postgres://env/x")])).expect("load");
    assert_eq!(s.data.url, "postgres://env/x");
}

#[test]
fn env_nesting_uses_double_underscore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Settings::load(&sources(dir.path(), &[("LEGION_EXECUTOR__CONCURRENCY", "7")])).expect("load");
    assert_eq!(s.executor.concurrency, 7);
}

#[test]
fn env_references_and_fallback_chains_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.json"),
        r#"{"data":{"url":"env://PGURL"},"transport":{"url":["env://MISSING","env://AMQP","amqp://plain"]},
            "executor":{"extensions":["core","http"]}}"#,
    )
    .expect("write");
    let s = Settings::load(&sources(dir.path(), &[("PGURL", "postgres://x/y"), ("AMQP", "amqp://from-env")]))
        .expect("load");
    assert_eq!(s.data.url, "postgres://x/y");
    assert_eq!(s.transport.url, "amqp://from-env");
    assert_eq!(s.executor.extensions, vec!["core", "http"], "plain string arrays are not chains");

    std::fs::write(dir.path().join("a.json"), r#"{"transport":{"url":["env://MISSING","amqp://plain"]}}"#)
        .expect("write");
    let s = Settings::load(&sources(dir.path(), &[])).expect("load");
    assert_eq!(s.transport.url, "amqp://plain", "a plain string ends the chain");
}

#[test]
fn unresolved_reference_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.json"), r#"{"data":{"url":"env://NOPE"}}"#).expect("write");
    let err = Settings::load(&sources(dir.path(), &[])).expect_err("must fail").to_string();
    assert!(err.contains("data.url") && err.contains("NOPE"), "{err}");
}

#[test]
fn invalid_values_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.json"), r#"{"executor":{"concurrency":0}}"#).expect("write");
    let err = Settings::load(&sources(dir.path(), &[])).expect_err("must fail").to_string();
    assert!(err.contains("executor.concurrency"), "{err}");

    std::fs::write(dir.path().join("a.json"), r#"{"contol_plane":{}}"#).expect("write");
    let err = Settings::load(&sources(dir.path(), &[])).expect_err("must fail").to_string();
    assert!(err.contains("contol_plane"), "unknown sections are refused: {err}");

    std::fs::write(dir.path().join("a.json"), r#"{"data": {"url": 5"#).expect("write");
    let err = Settings::load(&sources(dir.path(), &[])).expect_err("must fail").to_string();
    assert!(err.contains("a.json"), "{err}");
}

#[test]
fn missing_settings_dir_is_an_error() {
    let s = Sources {
        dirs: vec!["/nonexistent/legion".into()],
        skip_standard_dirs: true,
        env: Some(BTreeMap::new()),
        ..Sources::default()
    };
    assert!(matches!(Settings::load(&s), Err(Error::Read { .. })));
}

#[test]
fn redaction_covers_keys_at_any_depth_and_urls() {
    let mut v = serde_json::json!({
        "data": {"url": "postgres://legion:hunter2@db/legion"},
        "crypt": {"jwt": {"Signing_Key": "abc", "issuer": "legion"}},
        "list": [{"api_token": "t"}, {"name": "n"}],
        "privateThing": {"x": 1}
    });
    redact(&mut v);
    assert_eq!(v["data"]["url"], "postgres://legion:[REDACTED]@db/legion");
    assert_eq!(v["crypt"]["jwt"]["Signing_Key"], "[REDACTED]");
    assert_eq!(v["crypt"]["jwt"]["issuer"], "legion");
    assert_eq!(v["list"][0]["api_token"], "[REDACTED]");
    assert_eq!(v["list"][1]["name"], "n");
    assert_eq!(v["privateThing"], "[REDACTED]");
}

#[test]
fn type_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.json"), r#"{"executor":{"concurrency":"many"}}"#).expect("write");
    let err = Settings::load(&sources(dir.path(), &[])).expect_err("must fail").to_string();
    assert!(err.contains("executor.concurrency"), "{err}");

    std::fs::write(dir.path().join("a.json"), r#"{"control_plane":{"listen":"not-an-addr"}}"#).expect("write");
    let err = Settings::load(&sources(dir.path(), &[])).expect_err("must fail").to_string();
    assert!(err.contains("control_plane.listen"), "{err}");

    std::fs::write(dir.path().join("a.json"), r#"{"api":{"listn":"x"}}"#).expect("write");
    let err = Settings::load(&sources(dir.path(), &[])).expect_err("must fail").to_string();
    assert!(err.contains("api") && err.contains("listn"), "{err}");

    std::fs::write(dir.path().join("a.json"), r#"{"limits":{"max_attempts":0}}"#).expect("write");
    let err = Settings::load(&sources(dir.path(), &[])).expect_err("must fail").to_string();
    assert!(err.contains("limits.max_attempts"), "{err}");
}

#[test]
fn json_depth_counts_nesting() {
    assert_eq!(json_depth(&serde_json::json!(1)), 0);
    assert_eq!(json_depth(&serde_json::json!({"a": 1})), 1);
    assert_eq!(json_depth(&serde_json::json!({"a": [1, {"b": []}]})), 4);
    assert_eq!(json_depth(&serde_json::json!([])), 1);
}

#[test]
fn credential_variables_are_not_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = sources(dir.path(), &[]);
    s.env = Some(BTreeMap::from([
        ("LEGION_API_KEY".to_owned(), "k".to_owned()),
        ("LEGION_TOKEN".to_owned(), "t".to_owned()),
        ("LEGION_LOGGING__LEVEL".to_owned(), "debug".to_owned()),
    ]));
    let settings = Settings::load(&s).expect("credential variables are ignored");
    assert_eq!(settings.logging.level, "debug");
}
