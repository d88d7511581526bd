//! The security routes of the real gateway (`run`, on a free port) in front of a real control plane
//! (started by `legion-tests` with its bootstrap admin key and an HS256 signing secret): policies, API
//! keys, tokens, capabilities, the audit trail, the settings and the JWKS, each answered in the REST
//! shapes of DESIGN.md section 7; calls without a credential are refused, and no secret is ever
//! returned except a new key, once.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::time::Duration;

use legion_common::Settings;
use legion_tests::certs::Identity;
use legion_tests::rest::{Response, RestClient};
use legion_tests::{ADMIN_KEY, Auth, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Longest the gateway may take to become ready.
const DEADLINE: Duration = Duration::from_secs(30);

/// The control plane's HS256 secret (at least 32 bytes).
const HS_SECRET: &str = "gateway-security-test-hs256-secret-0123456789";

/// A gateway served by `run` in front of `env`'s control plane; stops when `shutdown` is cancelled.
async fn gateway(env: &TestEnv, shutdown: &CancellationToken) -> RestClient {
    let mut settings = Settings::default();
    settings.control_plane.url = env.control_plane_url();
    settings.tls = env.certs().tls(Identity::Gateway);
    settings.api.listen = legion_tests::ports::free_addr().expect("free port");
    let base = format!("http://{}", settings.api.listen);
    tokio::spawn(legion_gateway::run(settings, shutdown.clone()));
    let rest = RestClient::new(&base).expect("client");
    legion_tests::rest::until_ready(&rest, DEADLINE).await.expect("gateway ready");
    rest
}

fn assert_problem(reply: &Response, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert!(reply.is_problem(), "{}: {}", reply.content_type, reply.body);
    assert_eq!(reply.code(), code, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_policies_tokens_and_the_audit_trail_through_the_gateway() {
    let env = TestEnv::start_with_settings(json!({"crypt": {"jwt": {"hs_secret": HS_SECRET}}}))
        .await
        .expect("control plane starts");
    let shutdown = CancellationToken::new();
    let admin = gateway(&env, &shutdown).await;
    let anonymous = admin.with_auth(Auth::None);

    // Without a credential: only the public routes answer.
    assert_problem(&anonymous.get("/api/v1/tasks").await.expect("call"), 401, "UNAUTHENTICATED");
    assert_problem(&anonymous.get("/api/v1/policies").await.expect("call"), 401, "UNAUTHENTICATED");
    let jwks = anonymous.get("/.well-known/jwks.json").await.expect("call");
    assert_eq!((jwks.status, jwks.content_type.as_str()), (200, "application/json"), "{}", jwks.body);
    assert!(jwks.body["keys"].is_array(), "{}", jwks.body);
    assert_eq!(anonymous.get("/healthz").await.expect("call").status, 200);

    let me = admin.get("/api/v1/auth/whoami").await.expect("call");
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body["principal"].as_str().is_some_and(|p| p.starts_with("api-key/")), "{}", me.body);

    // A policy: 201 when created, 200 when replaced, the same object when read.
    let rules = json!([
        {"path": "tasks/core/util/echo", "capabilities": ["create", "read"]},
        {"path": "runners/core/util/echo", "capabilities": ["execute"]},
    ]);
    let created = admin.put_json("/api/v1/policies/echoer", &json!({"rules": rules})).await.expect("call");
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("location"), Some("/api/v1/policies/echoer"));
    assert_eq!((&created.body["name"], &created.body["rules"]), (&json!("echoer"), &rules), "{}", created.body);
    assert!(created.body["created_at"].is_string() && created.body["updated_at"].is_string(), "{}", created.body);
    let replaced = admin.put_json("/api/v1/policies/echoer", &json!({"rules": rules})).await.expect("call");
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let shown = admin.get("/api/v1/policies/echoer").await.expect("call");
    assert_eq!((shown.status, &shown.body["rules"]), (200, &rules), "{}", shown.body);
    let listed = admin.get("/api/v1/policies").await.expect("call");
    let names: Vec<&str> =
        listed.body["policies"].as_array().expect("policies").iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"echoer"), "{names:?}");

    // An API key bound to it: the secret is shown once, never listed.
    let body = json!({"name": "echo-bot", "policies": ["echoer"], "ttl_s": 3600});
    let key = admin.post_json("/api/v1/api-keys", &body).await.expect("call");
    assert_eq!(key.status, 201, "{}", key.body);
    let id = key.body["id"].as_str().expect("id").to_owned();
    let secret = key.body["key"].as_str().expect("key").to_owned();
    assert_eq!((&key.body["name"], &key.body["policies"]), (&json!("echo-bot"), &json!(["echoer"])));
    assert!(key.body["expires_at"].is_string() && key.body["created_at"].is_string(), "{}", key.body);
    let keys = admin.get("/api/v1/api-keys").await.expect("call");
    assert_eq!(keys.status, 200, "{}", keys.body);
    assert!(keys.body["api_keys"].as_array().expect("keys").iter().any(|k| k["id"] == id.as_str()), "{}", keys.body);
    let text = keys.body.to_string();
    assert!(!text.contains(&secret) && !text.contains(ADMIN_KEY), "no secret is listed: {text}");

    // The key's own view: its principal, its capabilities, and a refusal outside its policy.
    let bot = admin.with_auth(Auth::api_key(&secret)).with_header("x-request-id", "gw-security-denied");
    let whoami = bot.get("/api/v1/auth/whoami").await.expect("call");
    assert_eq!(whoami.body, json!({"principal": format!("api-key/{id}"), "policies": ["echoer"]}));
    let caps = bot
        .post_json("/api/v1/auth/capabilities", &json!({"paths": ["tasks/core/util/echo", "policies/echoer"]}))
        .await
        .expect("call");
    assert_eq!(caps.status, 200, "{}", caps.body);
    let echo: Vec<&str> = caps.body["capabilities"]["tasks/core/util/echo"]
        .as_array()
        .expect("caps")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(echo.contains(&"create") && echo.contains(&"read"), "{}", caps.body);
    assert_eq!(caps.body["capabilities"]["policies/echoer"], json!(["deny"]), "{}", caps.body);
    assert_problem(&bot.get("/api/v1/policies").await.expect("call"), 403, "PERMISSION_DENIED");

    // A token for the key carries the same policies.
    let token = anonymous.post_json("/api/v1/auth/token", &json!({"api_key": secret})).await.expect("call");
    assert_eq!(token.status, 200, "{}", token.body);
    assert!(token.body["expires_at"].is_string(), "{}", token.body);
    let jwt = admin.with_auth(Auth::bearer(token.body["token"].as_str().expect("token")));
    let via_token = jwt.get("/api/v1/auth/whoami").await.expect("call");
    assert_eq!((via_token.status, &via_token.body["policies"]), (200, &json!(["echoer"])), "{}", via_token.body);

    // The refusal is in the audit trail, with the request id and the caller's address; the chain verifies.
    let denied = admin.get("/api/v1/audit?decision=deny&limit=100").await.expect("call");
    assert_eq!(denied.status, 200, "{}", denied.body);
    let records = denied.body["records"].as_array().expect("records");
    let record = records
        .iter()
        .find(|r| r["request_id"] == "gw-security-denied")
        .unwrap_or_else(|| panic!("no denied record for the request: {}", denied.body));
    assert_eq!(
        (&record["principal"], &record["decision"]),
        (&json!(format!("api-key/{id}")), &json!("deny")),
        "{record}"
    );
    assert!(record["source"].as_str().is_some_and(|s| s.starts_with("127.0.0.1:")), "{record}");
    for member in ["id", "at", "action", "resource", "capability", "detail", "hash", "prev_hash"] {
        assert!(record.get(member).is_some(), "{member} missing: {record}");
    }
    let verify = admin.get("/api/v1/audit/verify").await.expect("call");
    assert_eq!((verify.status, &verify.body["valid"], &verify.body["first_broken"]), (200, &json!(true), &Value::Null));
    assert!(verify.body["checked"].as_i64().is_some_and(|n| n > 0), "{}", verify.body);

    // Revoked: the key stops authenticating.
    let revoked = admin.delete(&format!("/api/v1/api-keys/{id}")).await.expect("call");
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.body["revoked_at"].is_string() && revoked.body.get("key").is_none(), "{}", revoked.body);
    assert_problem(&bot.get("/api/v1/auth/whoami").await.expect("call"), 401, "UNAUTHENTICATED");

    // Settings: secrets redacted; the read-only sections refuse changes, a writable one takes a merge patch.
    let config = admin.get("/api/v1/config").await.expect("call");
    assert_eq!(config.status, 200, "{}", config.body);
    assert_eq!(config.body["crypt"]["jwt"]["hs_secret"], "[REDACTED]", "{}", config.body);
    let text = config.body.to_string();
    assert!(!text.contains(HS_SECRET) && !text.contains(ADMIN_KEY), "{text}");
    let refused = admin.send(Method::PATCH, "/api/v1/config/crypt", Some(&json!({"jwt": {"ttl_s": 60}}))).await;
    assert_problem(&refused.expect("call"), 403, "PERMISSION_DENIED");
    let patched = admin.send(Method::PATCH, "/api/v1/config/limits", Some(&json!({"max_attempts": 7}))).await;
    let patched = patched.expect("call");
    assert_eq!((patched.status, &patched.body["max_attempts"]), (200, &json!(7)), "{}", patched.body);

    // Deleted: 204, then gone.
    let deleted = admin.delete("/api/v1/policies/echoer").await.expect("call");
    assert_eq!((deleted.status, &deleted.body), (204, &Value::Null));
    assert_problem(&admin.get("/api/v1/policies/echoer").await.expect("call"), 404, "NOT_FOUND");
    shutdown.cancel();
}
