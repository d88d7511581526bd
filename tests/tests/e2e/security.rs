//! Security with the real processes: a policy-bound key and its token over REST, refusals with exact
//! codes that change nothing, and a canary secret set in settings that never shows in any response or
//! in any log line the processes write (control plane at debug level).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use legion_tests::{ADMIN_KEY, Auth, ExecutorOptions, TestEnv};
use serde_json::json;

/// A secret that must never leave the settings.
const CANARY: &str = "canary-0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tokens_and_policies_work_over_rest_and_no_secret_leaks() {
    let env = TestEnv::start_with_settings(json!({
        "logging": {"level": "debug"},
        "crypt": {"jwt": {"hs_secret": CANARY}, "vault": {"clusters": [{"token": CANARY, "deep": [{"password": CANARY}]}]}},
    }))
    .await
    .expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    let gateway = env.start_gateway().await.expect("gateway starts");
    let admin = gateway.rest();
    let mut seen = Vec::new();

    let policy = json!({"rules": [
        {"path": "tasks/core/*", "capabilities": ["create", "read"]},
        {"path": "runners/core/*", "capabilities": ["execute"]},
        {"path": "tasks/core/util/fail", "capabilities": ["deny"]},
    ]});
    let put = admin.put_json("/api/v1/policies/core-only", &policy).await.expect("put policy");
    assert_eq!(put.status, 201, "{:?}", put.body);
    let key = admin
        .post_json("/api/v1/api-keys", &json!({"name": "ops", "policies": ["core-only"], "ttl_s": 3600}))
        .await
        .expect("create key");
    assert_eq!(key.status, 201, "{:?}", key.body);
    let secret = key.body["key"].as_str().expect("key shown once").to_owned();
    seen.push(key.body.to_string());
    let listed = admin.get("/api/v1/api-keys").await.expect("list keys");
    assert!(!listed.body.to_string().contains(&secret), "a key is shown only once");
    seen.push(listed.body.to_string());

    let user = admin.with_auth(Auth::api_key(secret.clone()));
    let echo = user
        .post_json("/api/v1/tasks", &json!({"function": "core.util.echo", "args": {"a": 1}}))
        .await
        .expect("submit");
    assert_eq!(echo.status, 201, "{:?}", echo.body);
    let tasks_before =
        admin.get("/api/v1/tasks?limit=1000").await.expect("list").body["tasks"].as_array().map(Vec::len);
    for (method, path, body, status) in [
        (
            "POST",
            "/api/v1/tasks",
            Some(json!({"function": "http.request.get", "args": {"url": "http://127.0.0.1:1/"}})),
            403,
        ),
        ("POST", "/api/v1/tasks", Some(json!({"function": "core.util.fail", "args": {}})), 403),
        ("POST", "/api/v1/tasks", Some(json!({"function": "Core.util.echo", "args": {}})), 400),
        ("PUT", "/api/v1/policies/mine", Some(json!({"rules": [{"path": "*", "capabilities": ["sudo"]}]})), 403),
        ("GET", "/api/v1/policies", None, 403),
        ("GET", "/api/v1/audit", None, 403),
        ("GET", "/api/v1/policies/..%2fadmin", None, 400),
        ("GET", "/api/v1/policies/ADMIN", None, 400),
    ] {
        let response = match (method, body) {
            ("POST", Some(body)) => user.post_json(path, &body).await,
            ("PUT", Some(body)) => user.put_json(path, &body).await,
            _ => user.get(path).await,
        }
        .expect("request");
        assert_eq!(response.status, status, "{method} {path}: {:?}", response.body);
        assert!(response.is_problem(), "{method} {path}");
        seen.push(response.body.to_string());
    }
    let tasks_after = admin.get("/api/v1/tasks?limit=1000").await.expect("list").body["tasks"].as_array().map(Vec::len);
    assert_eq!(tasks_before, tasks_after, "refused submits created nothing");

    // The key's token carries the same policies; forged tokens are refused.
    let token = admin.post_json("/api/v1/auth/token", &json!({"api_key": secret})).await.expect("token");
    assert_eq!(token.status, 200, "{:?}", token.body);
    let jwt = token.body["token"].as_str().expect("token").to_owned();
    let bearer = admin.with_auth(Auth::bearer(jwt.clone()));
    let who = bearer.get("/api/v1/auth/whoami").await.expect("whoami");
    assert_eq!(who.body["policies"], json!(["core-only"]), "{:?}", who.body);
    let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let (_, claims) = jwt.split_once('.').expect("jws");
    let claims = claims.split_once('.').expect("jws").0;
    for forged in [
        format!("{}.{claims}.", b64(json!({"alg": "none", "typ": "JWT"}))),
        format!("{}.{claims}.AAAA", b64(json!({"alg": "HS256", "typ": "JWT"}))),
    ] {
        let response = admin.with_auth(Auth::bearer(forged)).get("/api/v1/auth/whoami").await.expect("whoami");
        assert_eq!(response.status, 401, "{:?}", response.body);
    }
    let jwks = admin.with_auth(Auth::None).get("/.well-known/jwks.json").await.expect("jwks");
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.body, json!({"keys": []}), "an HS secret is never published");

    // Settings as the API shows them, and a refused write to a read-only section.
    let config = admin.get("/api/v1/config").await.expect("config");
    assert_eq!(config.status, 200, "{:?}", config.body);
    assert_eq!(config.body["crypt"]["jwt"]["hs_secret"], "[REDACTED]");
    assert_eq!(config.body["crypt"]["vault"]["clusters"][0]["deep"][0]["password"], "[REDACTED]");
    seen.push(config.body.to_string());
    let refused = admin
        .send(reqwest::Method::PATCH, "/api/v1/config/crypt", Some(&json!({"jwt": {"hs_secret": "x"}})))
        .await
        .expect("patch");
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    seen.push(refused.body.to_string());
    let verify = admin.get("/api/v1/audit/verify").await.expect("verify");
    assert_eq!(verify.body["valid"], true, "{:?}", verify.body);
    let audit = admin.get("/api/v1/audit?decision=deny&limit=100").await.expect("audit");
    assert!(audit.body["records"].as_array().map_or(0, Vec::len) >= 8, "{:?}", audit.body);
    seen.push(audit.body.to_string());

    // Let the processes write what they will, then read every log line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for text in &seen {
        assert!(!text.contains(CANARY), "canary in a response: {text}");
    }
    let mut logs = String::new();
    for entry in std::fs::read_dir(env.log_dir()).expect("logs") {
        let path = entry.expect("entry").path();
        logs.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
    }
    assert!(!logs.is_empty(), "the processes logged");
    for (what, secret) in
        [("canary", CANARY), ("admin key", ADMIN_KEY), ("api key", secret.as_str()), ("token", jwt.as_str())]
    {
        assert!(!logs.contains(secret), "{what} in a log line");
    }
}
