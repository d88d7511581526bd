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

#[test]
fn urls_lose_passwords_in_userinfo_and_query() {
    assert_eq!(redact_url("postgres://u:p@h/db").as_deref(), Some("postgres://u:[REDACTED]@h/db"));
    assert_eq!(
        redact_url("postgres://u@h/db?sslmode=require&password=p&sslkey=/k#f").as_deref(),
        Some("postgres://u@h/db?sslmode=require&password=[REDACTED]&sslkey=[REDACTED]#f")
    );
    assert_eq!(redact_url("amqp://h/%2f?heartbeat=10"), None);
    assert_eq!(redact_url("not a url"), None);
}

#[test]
fn every_string_under_crypt_is_redacted_but_the_public_jwt_values() {
    let mut settings = Settings::default();
    settings.crypt.vault = serde_json::json!({"role_id": "r", "deep": {"x": "y"}, "list": ["a"], "port": 8200});
    settings.crypt.jwt.hs_secret = Some("0123456789abcdef0123456789abcdef".into());
    settings.data.url = "postgres://postgres@127.0.0.1:5432/db?password=CANARY".into();
    let v = settings.redacted();
    assert_eq!(v["crypt"]["vault"]["role_id"], "[REDACTED]");
    assert_eq!(v["crypt"]["vault"]["deep"]["x"], "[REDACTED]");
    assert_eq!(v["crypt"]["vault"]["list"][0], "[REDACTED]");
    assert_eq!(v["crypt"]["vault"]["port"], 8200);
    assert_eq!(v["crypt"]["jwt"]["hs_secret"], "[REDACTED]");
    assert_eq!(v["crypt"]["jwt"]["issuer"], "legion");
    assert!(!v.to_string().contains("CANARY"));
}

#[test]
fn failover_urls_load_as_a_list_and_each_must_be_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.json"),
        r#"{"control_plane":{"url":"https://cp-1:50051","failover_urls":["https://cp-2:50051","https://cp-3:50051"]}}"#,
    )
    .expect("write");
    let s = Settings::load(&sources(dir.path(), &[])).expect("load");
    assert_eq!(s.control_plane.urls(), ["https://cp-1:50051", "https://cp-2:50051", "https://cp-3:50051"]);
    let s = Settings::load(&sources(dir.path(), &[("LEGION_CONTROL_PLANE__FAILOVER_URLS", r#"["https://cp-9:1"]"#)]))
        .expect("load");
    assert_eq!(s.control_plane.urls(), ["https://cp-1:50051", "https://cp-9:1"]);

    let mut s = Settings::default();
    s.control_plane.failover_urls = vec!["https://cp-2:50051".into(), "http://cp-3:50051".into()];
    match s.validate() {
        Err(Error::Invalid { key, reason }) => {
            assert_eq!(key, "control_plane.failover_urls[1]");
            assert!(reason.contains("https://"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
