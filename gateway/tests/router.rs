//! The real router, served in-process, against a control plane that is not there: everything the
//! gateway answers by itself (parsing, validation, problem responses, health, metrics, OpenAPI) and
//! the 503 for an unreachable control plane.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use legion_common::settings::ApiSettings;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tower::ServiceExt;

fn app(api: &ApiSettings) -> axum::Router {
    // Port 1 on loopback: nothing listens there, so every gRPC call fails to connect.
    let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    legion_gateway::router(api, channel, CancellationToken::new())
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, Option<String>, serde_json::Value, Response) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, content_type, json, Response::from_parts(parts, Body::empty()))
}

fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn assert_problem(
    (status, content_type, json, _): &(StatusCode, Option<String>, serde_json::Value, Response),
    expected: u16,
    code: &str,
    detail_starts: &str,
) {
    assert_eq!(status.as_u16(), expected, "{json}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{json}");
    assert_eq!(json["type"], "about:blank");
    assert_eq!(json["status"], expected);
    assert_eq!(json["code"], code, "{json}");
    let detail = json["detail"].as_str().expect("detail");
    assert!(detail.starts_with(detail_starts), "{detail:?} should start with {detail_starts:?}");
    assert!(json["title"].as_str().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn bad_bodies_are_refused_with_named_fields() {
    let app = app(&ApiSettings::default());
    let r = send(&app, post_json("/api/v1/tasks", r#"{"function":"core.util.echo","priority":"high"}"#)).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", r#"priority: invalid type: string "high", expected u32"#);
    let r = send(&app, post_json("/api/v1/tasks", r#"{"function":"core.util.echo","colour":"red"}"#)).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "colour: unknown field");
    let r = send(&app, post_json("/api/v1/tasks", "")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "body: required");
    let r = send(&app, post_json("/api/v1/tasks", "{not json")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "body: not valid JSON");
    let r = send(
        &app,
        Request::post("/api/v1/tasks")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("{}"))
            .expect("request"),
    )
    .await;
    assert_problem(&r, 415, "INVALID_ARGUMENT", "content-type: expected application/json");
    let r =
        send(&app, Request::post("/api/v1/tasks").body(Body::from(r#"{"function":"a.b.c"}"#)).expect("request")).await;
    assert_problem(&r, 415, "INVALID_ARGUMENT", "content-type: expected application/json, got none");
}

#[tokio::test]
async fn oversize_bodies_get_413_naming_the_limit() {
    let api = ApiSettings { max_body_bytes: 1024, ..ApiSettings::default() };
    let app = app(&api);
    let big = format!(r#"{{"function":"core.util.echo","args":{{"pad":"{}"}}}}"#, "x".repeat(2000));
    let r = send(&app, post_json("/api/v1/tasks", &big)).await;
    assert_problem(&r, 413, "RESOURCE_EXHAUSTED", "body: larger than api.max_body_bytes (1024 bytes)");
    // Without a Content-Length the limit still holds while the body streams in.
    let chunks = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let request = Request::post("/api/v1/tasks")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(chunks))
        .expect("request");
    let r = send(&app, request).await;
    assert_problem(&r, 413, "RESOURCE_EXHAUSTED", "body: larger than api.max_body_bytes");
}

#[tokio::test]
async fn bad_ids_and_queries_are_named() {
    let app = app(&ApiSettings::default());
    for uri in ["/api/v1/tasks/42", "/api/v1/tasks/nope/attempts", "/api/v1/tasks/x/events"] {
        let r = send(&app, get(uri)).await;
        assert_problem(&r, 400, "INVALID_ARGUMENT", "id: must be a UUID");
    }
    let r = send(&app, post_json("/api/v1/tasks/42/cancel", "")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "id: must be a UUID");
    let r = send(&app, get("/api/v1/tasks?status=done")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "status: unknown task status");
    let r = send(&app, get("/api/v1/tasks?limit=5000")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "limit: must be an integer from 1 to 1000");
    let r = send(&app, post_json("/api/v1/dead-letters/42/replay", "")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "task_id: must be a UUID");
    let r = send(&app, get("/api/v1/dead-letters?limit=0")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "limit: must be an integer from 1 to 1000");
    let r = send(&app, get("/api/v1/dead-letters?status=failed")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "status: unknown query parameter");
    let r = send(&app, post_json("/api/v1/tasks", r#"{"function":"a.b.c","retry":{"tries":2}}"#)).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "retry");
    assert!(r.2["detail"].as_str().is_some_and(|d| d.contains("unknown field `tries`")), "{}", r.2);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = app(&ApiSettings::default());
    let r = send(&app, get("/api/v1/nope")).await;
    assert_problem(&r, 404, "NOT_FOUND", "no route for /api/v1/nope");
    let r = send(&app, Request::delete("/api/v1/tasks").body(Body::empty()).expect("request")).await;
    assert_problem(&r, 405, "UNIMPLEMENTED", "DELETE is not allowed on /api/v1/tasks");
}

#[tokio::test]
async fn an_unreachable_control_plane_is_503() {
    let app = app(&ApiSettings::default());
    let r = send(&app, post_json("/api/v1/tasks", r#"{"function":"core.util.echo","args":{"x":1}}"#)).await;
    assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    let r = send(&app, get("/api/v1/tasks/0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e")).await;
    assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    let r = send(&app, get("/api/v1/nodes")).await;
    assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    let r = send(&app, get("/api/v1/dead-letters")).await;
    assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    let r = send(&app, post_json("/api/v1/dead-letters/0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e/replay", "")).await;
    assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    let r = send(&app, get("/readyz")).await;
    assert_problem(&r, 503, "UNAVAILABLE", "control plane health check failed");
    let r = send(&app, get("/healthz")).await;
    assert_eq!((r.0, &r.2), (StatusCode::OK, &serde_json::json!({"status": "ok"})));
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused_but_probes_pass() {
    let api = ApiSettings { allowed_hosts: vec!["api.example.com".into()], ..ApiSettings::default() };
    let app = app(&api);
    let with_host =
        |uri: &str, host: &str| Request::get(uri).header(header::HOST, host).body(Body::empty()).expect("request");
    let r = send(&app, with_host("/api/v1/tasks/42", "evil.example")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "host: evil.example is not in api.allowed_hosts");
    let r = send(&app, with_host("/api/v1/tasks/42", "api.example.com:443")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "id: must be a UUID");
    let r = send(&app, with_host("/healthz", "10.0.0.7:4567")).await;
    assert_eq!(r.0, StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let app = app(&ApiSettings::default());
    let (_, _, _, response) = send(&app, get("/healthz")).await;
    let generated = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).expect("generated");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    let request = Request::get("/healthz").header("x-request-id", "abc-123").body(Body::empty()).expect("request");
    let (_, _, _, response) = send(&app, request).await;
    assert_eq!(response.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let app = app(&ApiSettings::default());
    send(&app, get("/api/v1/tasks/42")).await;
    send(&app, get("/api/v1/tasks/43")).await;
    send(&app, get("/no/such/route")).await;
    let response = app.clone().oneshot(get("/metrics")).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    assert!(
        text.contains(r#"legion_gateway_http_requests_total{method="GET",route="/api/v1/tasks/{id}",status="400"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404"} 1"#), "{text}");
    assert!(text.contains("legion_gateway_http_request_duration_seconds_bucket"), "{text}");
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let app = app(&ApiSettings::default());
    let (status, content_type, doc, _) = send(&app, get("/api/v1/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let expected = [
        ("/api/v1/tasks", "post"),
        ("/api/v1/tasks", "get"),
        ("/api/v1/tasks/{id}", "get"),
        ("/api/v1/tasks/{id}/cancel", "post"),
        ("/api/v1/tasks/{id}/attempts", "get"),
        ("/api/v1/tasks/{id}/events", "get"),
        ("/api/v1/dead-letters", "get"),
        ("/api/v1/dead-letters/{task_id}/replay", "post"),
        ("/api/v1/chains", "post"),
        ("/api/v1/chains", "get"),
        ("/api/v1/chains/{name}", "get"),
        ("/api/v1/chains/{name}", "delete"),
        ("/api/v1/schedules", "post"),
        ("/api/v1/schedules", "get"),
        ("/api/v1/schedules/{name}", "get"),
        ("/api/v1/schedules/{name}", "delete"),
        ("/api/v1/schedules/{name}/pause", "post"),
        ("/api/v1/schedules/{name}/resume", "post"),
        ("/api/v1/schedules/{name}/fires", "get"),
        ("/api/v1/schedule-preview", "get"),
        ("/api/v1/extensions", "get"),
        ("/api/v1/extensions/{name}/disable", "post"),
        ("/api/v1/extensions/{name}/enable", "post"),
        ("/api/v1/nodes", "get"),
        ("/api/v1/api-keys", "post"),
        ("/api/v1/api-keys", "get"),
        ("/api/v1/api-keys/{id}", "delete"),
        ("/api/v1/auth/token", "post"),
        ("/api/v1/auth/capabilities", "post"),
        ("/api/v1/auth/whoami", "get"),
        ("/api/v1/policies", "get"),
        ("/api/v1/policies/{name}", "put"),
        ("/api/v1/policies/{name}", "get"),
        ("/api/v1/policies/{name}", "delete"),
        ("/api/v1/audit", "get"),
        ("/api/v1/audit/verify", "get"),
        ("/api/v1/config", "get"),
        ("/api/v1/config/{section}", "patch"),
        ("/.well-known/jwks.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/openapi.json", "get"),
    ];
    for (path, method) in expected {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    assert_eq!(doc["paths"].as_object().map(|p| p.len()), Some(35), "no undocumented or extra paths");
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "Task",
        "SubmitTask",
        "Problem",
        "TaskPage",
        "TaskEvent",
        "AttemptList",
        "ExtensionList",
        "NodeList",
        "CreateApiKey",
        "CreatedApiKey",
        "ApiKey",
        "ApiKeyList",
        "IssueToken",
        "Token",
        "CapabilitiesBody",
        "CapabilityMap",
        "WhoAmI",
        "PolicyBody",
        "Policy",
        "PolicyList",
        "AuditPage",
        "AuditRecord",
        "AuditVerification",
        "ChainBody",
        "RelationshipBody",
        "Chain",
        "ChainPage",
        "Relationship",
        "ScheduleBody",
        "Schedule",
        "SchedulePage",
        "ScheduleFire",
        "ScheduleFirePage",
        "SchedulePreview",
        "ControlPlane",
        "Leadership",
        "DeadLetterPage",
        "RetryPolicy",
    ] {
        assert!(schemas[schema].is_object(), "schema {schema} missing");
    }
    // The task object: `region` (string or null) is always present, next to `node`.
    let task = &schemas["Task"];
    for key in ["node", "region"] {
        assert!(task["properties"][key].is_object(), "Task.{key} missing: {task}");
        assert!(task["required"].as_array().is_some_and(|r| r.contains(&key.into())), "Task.{key} not required");
    }
    let region_type = &task["properties"]["region"]["type"];
    assert_eq!(region_type, &serde_json::json!(["string", "null"]), "{task}");
    // The task object carries its position in a chain run.
    for key in ["depth", "chain_version", "fanout_index"] {
        assert!(task["properties"][key].is_object(), "Task.{key} missing: {task}");
        assert!(task["required"].as_array().is_some_and(|r| r.contains(&key.into())), "Task.{key} not required");
    }
    // The retry policy of tasks, relationships and schedules, and the replay count.
    for (schema, key) in
        [("Task", "retry"), ("Task", "replays"), ("SubmitTask", "retry"), ("RelationshipBody", "retry")]
            .into_iter()
            .chain([("Relationship", "retry"), ("ScheduleBody", "retry"), ("Schedule", "retry")])
    {
        assert!(schemas[schema]["properties"][key].is_object(), "{schema}.{key} missing: {}", schemas[schema]);
    }
    let retry = &schemas["RetryPolicy"]["properties"];
    for key in ["initial_backoff_ms", "multiplier", "max_backoff_ms", "jitter"] {
        assert!(retry[key].is_object(), "RetryPolicy.{key} missing: {retry}");
    }
    let replay = &doc["paths"]["/api/v1/dead-letters/{task_id}/replay"]["post"];
    assert!(replay["responses"]["200"].is_object() && replay["responses"]["409"].is_object(), "{replay}");
    let root_id = doc["paths"]["/api/v1/tasks"]["get"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "root_id"))
        .expect("root_id parameter");
    assert!(
        root_id["description"].as_str().is_some_and(|d| d.starts_with("The tasks of one chain run, root included")),
        "{root_id}"
    );
    let submit = &doc["paths"]["/api/v1/tasks"]["post"];
    assert!(submit["requestBody"]["content"]["application/json"].is_object());
    assert!(submit["responses"]["201"].is_object() && submit["responses"]["200"].is_object());
    assert_eq!(doc, serde_json::to_value(legion_gateway::openapi()).expect("json"), "served = generated");
}

/// Every operation needs a credential (`X-API-Key` or a bearer JWT) and documents 401 and 403, except
/// those of the public paths, which declare an empty requirement.
#[tokio::test]
async fn the_openapi_document_declares_credentials() {
    let doc = serde_json::to_value(legion_gateway::openapi()).expect("json");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["api_key"],
        json!({"type": "apiKey", "in": "header", "name": "x-api-key", "description": schemes["api_key"]["description"]})
    );
    assert_eq!((&schemes["bearer"]["type"], &schemes["bearer"]["scheme"]), (&json!("http"), &json!("bearer")));
    assert_eq!(doc["security"], json!([{"api_key": []}, {"bearer": []}]));
    let paths = doc["paths"].as_object().expect("paths");
    let public: Vec<&str> = paths
        .iter()
        .filter(|(_, item)| item.as_object().is_some_and(|ops| ops.values().all(|op| op["security"] == json!([{}]))))
        .map(|(path, _)| path.as_str())
        .collect();
    let mut expected = legion_gateway::PUBLIC_PATHS.to_vec();
    expected.sort_unstable();
    let mut public = public;
    public.sort_unstable();
    assert_eq!(public, expected);
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            if legion_gateway::PUBLIC_PATHS.contains(&path.as_str()) {
                assert!(op["responses"]["401"].is_null(), "{method} {path} is public");
                continue;
            }
            assert!(op["security"].is_null(), "{method} {path} inherits the global requirement");
            for status in ["401", "403"] {
                let content = &op["responses"][status]["content"]["application/problem+json"];
                assert!(content.is_object(), "{method} {path} documents {status}");
            }
        }
    }
}

/// Regression guard: only the exact public paths are public. Variants of them (a suffix, a dot
/// segment, another case, a trailing slash) are unknown routes, and the `Host` check exempts the probe
/// paths only, exactly.
#[tokio::test]
async fn only_the_exact_public_paths_are_public() {
    let open = app(&ApiSettings::default());
    for uri in [
        "/healthzz",
        "/healthz/../api/v1/tasks",
        "/healthz/",
        "/HEALTHZ",
        "/api/v1/openapi.jsonx",
        "/api/v1/openapi.json/",
        "/metrics.txt",
        "/.well-known/jwks.jsonx",
        "/.well-known/../api/v1/config",
    ] {
        let r = send(&open, get(uri)).await;
        assert_problem(&r, 404, "NOT_FOUND", "no route for");
        assert_ne!(r.2, json!({"status": "ok"}), "{uri} served the health body");
    }
    let api = ApiSettings { allowed_hosts: vec!["api.example.com".into()], ..ApiSettings::default() };
    let restricted = app(&api);
    let foreign =
        |uri: &str| Request::get(uri).header(header::HOST, "evil.example").body(Body::empty()).expect("request");
    for uri in ["/HEALTHZ", "/healthz/../api/v1/tasks", "/healthzz", "/api/v1/openapi.json", "/.well-known/jwks.json"] {
        let r = send(&restricted, foreign(uri)).await;
        assert_problem(&r, 400, "INVALID_ARGUMENT", "host: evil.example is not in api.allowed_hosts");
    }
    for uri in ["/healthz", "/metrics"] {
        assert_eq!(send(&restricted, foreign(uri)).await.0, StatusCode::OK, "{uri} is exempt from the host check");
    }
}

/// Every response carries `x-request-id`: problems the gateway makes itself, unknown routes and
/// methods, refused hosts, control-plane failures.
#[tokio::test]
async fn every_response_carries_a_request_id() {
    let api =
        ApiSettings { allowed_hosts: vec!["api.example.com".into()], max_body_bytes: 64, ..ApiSettings::default() };
    let app = app(&api);
    let host = |builder: axum::http::request::Builder| builder.header(header::HOST, "api.example.com");
    let requests = vec![
        host(Request::get("/nope")).body(Body::empty()),
        host(Request::delete("/api/v1/tasks")).body(Body::empty()),
        Request::get("/api/v1/tasks").header(header::HOST, "evil.example").body(Body::empty()),
        host(Request::get("/api/v1/tasks/42")).body(Body::empty()),
        host(Request::post("/api/v1/tasks").header(header::CONTENT_TYPE, "text/plain")).body(Body::from("{}")),
        host(Request::post("/api/v1/policies/x").header(header::CONTENT_TYPE, "application/json"))
            .body(Body::from("x".repeat(100))),
        host(Request::get("/api/v1/auth/whoami")).body(Body::empty()),
        host(Request::get("/.well-known/jwks.json")).body(Body::empty()),
        host(Request::get("/healthz")).body(Body::empty()),
    ];
    for request in requests {
        let request = request.expect("request");
        let what = format!("{} {}", request.method(), request.uri());
        let (status, _, _, response) = send(&app, request).await;
        let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok());
        assert!(id.is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "{what} ({status}) has no request id");
    }
    let request = Request::get("/nope").header(header::HOST, "api.example.com").header("x-request-id", "req-7");
    let (_, _, _, response) = send(&app, request.body(Body::empty()).expect("request")).await;
    assert_eq!(response.headers()["x-request-id"], "req-7");
}

fn with_body(method: &str, uri: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_owned()))
        .expect("request")
}

#[tokio::test]
async fn security_bodies_and_queries_are_checked_by_name() {
    let app = app(&ApiSettings::default());
    let json = "application/json";
    let cases = [
        (with_body("POST", "/api/v1/api-keys", json, r#"{"policies":["ops"]}"#), "name: required"),
        (with_body("POST", "/api/v1/api-keys", json, r#"{"name":"ci"}"#), "policies: required"),
        (
            with_body("POST", "/api/v1/api-keys", json, r#"{"name":"ci","policies":["ops"],"ttl":5}"#),
            "ttl: unknown field",
        ),
        (with_body("POST", "/api/v1/api-keys", json, r#"{"name":"ci","policies":"ops"}"#), "policies: invalid type"),
        (
            with_body("POST", "/api/v1/api-keys", json, r#"{"name":"ci","policies":[],"ttl_s":-1}"#),
            "ttl_s: invalid value",
        ),
        (with_body("POST", "/api/v1/auth/token", json, r#"{}"#), "api_key: required"),
        (with_body("POST", "/api/v1/auth/token", json, r#"{"api_key":"k","user":"x"}"#), "user: unknown field"),
        (with_body("POST", "/api/v1/auth/capabilities", json, r#"{"policies":["a"]}"#), "paths: required"),
        (with_body("POST", "/api/v1/auth/capabilities", json, r#"{"paths":["a"],"as":"b"}"#), "as: unknown field"),
        (with_body("PUT", "/api/v1/policies/ops", json, r#"{}"#), "rules: required"),
        (
            with_body("PUT", "/api/v1/policies/ops", json, r#"{"rules":[{"path":"a"}]}"#),
            "rules[0]: missing field `capabilities`",
        ),
        (
            with_body("PUT", "/api/v1/policies/ops", json, r#"{"rules":[{"path":"a","capabilities":["read"],"x":1}]}"#),
            "rules[0].x: unknown field `x`, expected `path` or `capabilities`",
        ),
        (
            with_body("PUT", "/api/v1/policies/ops", json, r#"{"name":"dev","rules":[]}"#),
            r#"name: "dev" does not match"#,
        ),
        (with_body("PUT", "/api/v1/policies/ops", json, r#"{"rules":[],"policy":"x"}"#), "policy: unknown field"),
        (with_body("PATCH", "/api/v1/config/limits", json, r#"[1]"#), "body: must be a JSON object"),
        (
            with_body("PATCH", "/api/v1/config/limits", "application/merge-patch+json", "7"),
            "body: must be a JSON object",
        ),
        (with_body("PATCH", "/api/v1/config/limits", json, "{x"), "body: not valid JSON"),
    ];
    for (request, detail) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let r = send(&app, request).await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{what}: {}", r.2);
        assert_problem(&r, 400, "INVALID_ARGUMENT", detail);
    }
    for (uri, detail) in [
        ("/api/v1/api-keys?include_revoked=yes", "include_revoked: must be true or false"),
        ("/api/v1/api-keys?revoked=true", "revoked: unknown query parameter"),
        ("/api/v1/audit?decision=denied", "decision: must be one of allow, deny, error"),
        ("/api/v1/audit?since=yesterday", "since: must be an RFC 3339 time"),
        ("/api/v1/audit?until=2026-13-01T00:00:00Z", "until: must be an RFC 3339 time"),
        ("/api/v1/audit?limit=0", "limit: must be an integer from 1 to 1000"),
        ("/api/v1/audit?limit=1&limit=2", "limit: given more than once"),
        ("/api/v1/audit?user=x", "user: unknown query parameter"),
    ] {
        assert_problem(&send(&app, get(uri)).await, 400, "INVALID_ARGUMENT", detail);
    }
    let r = send(&app, Request::delete("/api/v1/api-keys/42").body(Body::empty()).expect("request")).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "id: must be a UUID");
    let r = send(&app, with_body("PATCH", "/api/v1/config/limits", "text/plain", "{}")).await;
    assert_problem(&r, 415, "INVALID_ARGUMENT", "content-type: expected application/json");
}

/// Well-formed security calls reach the control plane (here: unreachable, so 503), whichever JSON
/// media type a merge patch comes with.
#[tokio::test]
async fn valid_security_calls_reach_the_control_plane() {
    let app = app(&ApiSettings::default());
    let json = "application/json";
    let requests = [
        with_body("POST", "/api/v1/api-keys", json, r#"{"name":"ci","policies":["ops"],"ttl_s":3600}"#),
        with_body("POST", "/api/v1/api-keys", json, r#"{"name":"ci","policies":[],"ttl_s":null}"#),
        get("/api/v1/api-keys?include_revoked=true"),
        get("/api/v1/api-keys"),
        Request::delete("/api/v1/api-keys/0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e").body(Body::empty()).expect("request"),
        with_body("POST", "/api/v1/auth/token", json, r#"{"api_key":"lgn_x"}"#),
        with_body(
            "POST",
            "/api/v1/auth/capabilities",
            json,
            r#"{"paths":["tasks/core/util/echo"],"policies":["ops"]}"#,
        ),
        get("/api/v1/auth/whoami"),
        with_body(
            "PUT",
            "/api/v1/policies/ops",
            json,
            r#"{"name":"ops","rules":[{"path":"tasks/*","capabilities":["read"]}]}"#,
        ),
        get("/api/v1/policies"),
        get("/api/v1/policies/ops"),
        Request::delete("/api/v1/policies/ops").body(Body::empty()).expect("request"),
        get(
            "/api/v1/audit?principal=api-key/1&action=authorize&decision=deny&resource_prefix=tasks/&since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00%2B02:00&limit=10&page_token=t",
        ),
        get("/api/v1/audit/verify"),
        get("/api/v1/config"),
        with_body("PATCH", "/api/v1/config/limits", "application/merge-patch+json", r#"{"max_attempts":5,"x":null}"#),
        with_body("PATCH", "/api/v1/config/logging", json, r#"{"level":"debug"}"#),
        get("/.well-known/jwks.json"),
    ];
    for request in requests {
        let what = format!("{} {}", request.method(), request.uri());
        let r = send(&app, request).await;
        assert_eq!(r.0, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", r.2);
        assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    }
}

fn request_id(response: &Response) -> Option<&str> {
    response.headers().get("x-request-id").and_then(|v| v.to_str().ok())
}

/// A 431 (or 414) problem that names what is too large, never quotes a header value, and carries a
/// request id.
fn assert_too_large(r: &(StatusCode, Option<String>, serde_json::Value, Response), status: u16, detail: &str) {
    assert_problem(r, status, "INVALID_ARGUMENT", detail);
    assert!(!r.2.to_string().contains("vvvv"), "a header value is quoted: {}", r.2);
    assert!(request_id(&r.3).is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "no request id: {}", r.2);
}

fn with_headers(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).expect("request")
}

/// Regression: an oversized credential was forwarded and the control plane dropped the shared
/// connection. Header values above 8 KiB (credentials included), heads above 32 KiB, more than 100
/// fields, repeated credentials and targets above 8 KiB are refused before anything is forwarded, on
/// every route, public ones included; credentials of the control plane's limit still get through.
#[tokio::test]
async fn oversized_or_repeated_headers_are_refused_before_forwarding() {
    let app = app(&ApiSettings::default());
    let whoami = "/api/v1/auth/whoami";
    let value = |n: usize| "v".repeat(n);
    let key = value(legion_gateway::MAX_CREDENTIAL_BYTES);
    let bearer = format!("Bearer {key}");
    assert_eq!(legion_gateway::MAX_HEADER_VALUE_BYTES, 8192);
    assert_eq!(legion_gateway::MAX_CREDENTIAL_BYTES, 8192, "the control plane's MAX_CREDENTIAL_BYTES");

    // At the limits: forwarded (and here the control plane is unreachable).
    for headers in [[("x-api-key", key.as_str())], [("authorization", bearer.as_str())], [("x-pad", key.as_str())]] {
        let r = send(&app, with_headers(whoami, &headers)).await;
        assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    }
    // Above them: 431 naming the header, on API and public routes alike.
    let over = value(legion_gateway::MAX_CREDENTIAL_BYTES + 1);
    let bearer_over = format!("Bearer {over}");
    let huge = value(300 * 1024);
    for uri in [whoami, "/api/v1/tasks", "/healthz", "/.well-known/jwks.json", "/no/such/route"] {
        for (name, value, detail) in [
            ("x-api-key", over.as_str(), "x-api-key: value larger than 8192 bytes"),
            ("x-api-key", huge.as_str(), "x-api-key: value larger than 8192 bytes"),
            ("authorization", bearer_over.as_str(), "authorization: value larger than 8199 bytes"),
            ("cookie", over.as_str(), "cookie: value larger than 8192 bytes"),
            ("host", over.as_str(), "host: value larger than 8192 bytes"),
        ] {
            assert_too_large(&send(&app, with_headers(uri, &[(name, value)])).await, 431, detail);
        }
    }
    // Too large in total, too many fields, a long name quoted only in part.
    let seven_k = value(7 * 1024);
    let many: Vec<(String, &str)> = (0..5).map(|i| (format!("x-pad-{i}"), seven_k.as_str())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    assert_too_large(&send(&app, with_headers(whoami, &many)).await, 431, "headers: larger than 32768 bytes in total");
    let names: Vec<String> = (0..=legion_gateway::MAX_HEADER_COUNT).map(|i| format!("x-h-{i}")).collect();
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    assert_too_large(&send(&app, with_headers("/healthz", &fields)).await, 431, "headers: more than 100 fields");
    assert_eq!(send(&app, with_headers("/healthz", &fields[1..])).await.0, StatusCode::OK, "100 fields pass");
    let long_name = format!("x-{}", "n".repeat(1000));
    let r = send(&app, with_headers(whoami, &[(long_name.as_str(), over.as_str())])).await;
    assert_too_large(&r, 431, "x-nnn");
    assert!(r.2["detail"].as_str().is_some_and(|d| d.len() < 300), "{}", r.2);

    // Both credentials at their limit would overflow the control plane's 16 KiB header list.
    let r = send(&app, with_headers(whoami, &[("x-api-key", &key), ("authorization", &bearer)])).await;
    assert_too_large(&r, 431, "authorization, x-api-key: larger than 10240 bytes together");
    // A repeated credential is ambiguous: 400 naming it.
    for name in ["x-api-key", "authorization"] {
        let r = send(&app, with_headers(whoami, &[(name, "Bearer a"), (name, "Bearer b")])).await;
        assert_problem(&r, 400, "INVALID_ARGUMENT", &format!("{name}: given more than once"));
    }
    // A target above 8 KiB: 414.
    let r = send(&app, get(&format!("/api/v1/tasks?function={}", value(9000)))).await;
    assert_too_large(&r, 414, "uri: longer than 8192 bytes");

    // The metrics count the refusals like any other response.
    let response = app.clone().oneshot(get("/metrics")).await.expect("infallible");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    assert!(String::from_utf8_lossy(&body).contains(r#"status="431"}"#));
}

/// Many oversized requests at once next to ordinary ones: each gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_under_concurrency() {
    let app = app(&ApiSettings::default());
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..64 {
        let app = app.clone();
        calls.spawn(async move {
            let big = i % 2 == 0;
            let key = if big { "v".repeat(64 * 1024) } else { "lgn_small".to_owned() };
            (big, send(&app, with_headers("/api/v1/auth/whoami", &[("x-api-key", &key)])).await.0)
        });
    }
    while let Some(call) = calls.join_next().await {
        let (big, status) = call.expect("call");
        let expected = if big { StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE } else { StatusCode::SERVICE_UNAVAILABLE };
        assert_eq!(status, expected, "big: {big}");
    }
}

/// `x-request-id` is echoed, logged and forwarded: one that is too long, not visible ASCII or repeated
/// is replaced by a fresh UUID, and the request goes on.
#[tokio::test]
async fn unusable_request_ids_are_replaced() {
    let app = app(&ApiSettings::default());
    let longest = "r".repeat(legion_gateway::MAX_REQUEST_ID_BYTES);
    let (_, _, _, response) = send(&app, with_headers("/healthz", &[("x-request-id", &longest)])).await;
    assert_eq!(request_id(&response), Some(longest.as_str()));
    let too_long = "r".repeat(legion_gateway::MAX_REQUEST_ID_BYTES + 1);
    let huge = "r".repeat(20 * 1024);
    for headers in [
        vec![("x-request-id", too_long.as_str())],
        vec![("x-request-id", huge.as_str())],
        vec![("x-request-id", "has space")],
        vec![("x-request-id", "")],
        vec![("x-request-id", "a"), ("x-request-id", "b")],
    ] {
        let (status, _, _, response) = send(&app, with_headers("/healthz", &headers)).await;
        assert_eq!(status, StatusCode::OK, "{:?}", headers.first());
        let id = request_id(&response).expect("request id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id:.40} was kept");
    }
}

/// The `Host` checks cannot be sidestepped: a second `Host` header, an absolute-form target naming
/// another host, or one disagreeing with `Host` is refused, on every path, the probe paths included;
/// the target's authority must be allowed like `Host`. Only the probe paths skip the allow-list, and
/// only it.
#[tokio::test]
async fn the_host_check_cannot_be_sidestepped() {
    let api = ApiSettings { allowed_hosts: vec!["api.example.com".into()], ..ApiSettings::default() };
    let restricted = app(&api);
    let open = app(&ApiSettings::default());
    let request = |uri: &str, hosts: &[&str]| {
        let mut builder = Request::get(uri);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(Body::empty()).expect("request")
    };
    let paths = ["/api/v1/tasks/42", "/api/v1/openapi.json", "/.well-known/jwks.json", "/healthz", "/metrics"];
    for path in paths {
        for hosts in [["api.example.com", "evil.example"], ["evil.example", "api.example.com"]] {
            for app in [&restricted, &open] {
                let r = send(app, request(path, &hosts)).await;
                assert_problem(&r, 400, "INVALID_ARGUMENT", "host: given more than once");
                assert!(request_id(&r.3).is_some(), "{path}");
            }
        }
        let absolute = format!("http://evil.example{path}");
        for app in [&restricted, &open] {
            let r = send(app, request(&absolute, &["api.example.com"])).await;
            assert_problem(
                &r,
                400,
                "INVALID_ARGUMENT",
                "host: differs from the request target's authority evil.example",
            );
            let good = format!("http://api.example.com{path}");
            let r = send(app, request(&good, &["evil.example"])).await;
            assert_problem(&r, 400, "INVALID_ARGUMENT", "host: differs from the request target's authority");
        }
    }
    // The authority alone (HTTP/2's :authority, or an absolute-form target without Host) must be allowed.
    for path in ["/api/v1/tasks/42", "/api/v1/openapi.json", "/.well-known/jwks.json"] {
        let r = send(&restricted, request(&format!("http://evil.example{path}"), &[])).await;
        assert_problem(&r, 400, "INVALID_ARGUMENT", "host: evil.example is not in api.allowed_hosts");
        let r = send(&restricted, request(&format!("http://evil.example{path}"), &["EVIL.example"])).await;
        assert_problem(&r, 400, "INVALID_ARGUMENT", "host: evil.example is not in api.allowed_hosts");
    }
    // Agreeing, allowed: served.
    let r = send(&restricted, request("http://api.example.com/api/v1/tasks/42", &["API.example.com"])).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "id: must be a UUID");
    let r = send(&restricted, request("http://api.example.com:4567/api/v1/openapi.json", &[])).await;
    assert_eq!(r.0, StatusCode::OK);
    // Probes by pod IP, as kubelet and Prometheus send them: exempt from the allow-list only.
    for path in ["/healthz", "/metrics"] {
        assert_eq!(send(&restricted, request(path, &["10.0.0.7:4567"])).await.0, StatusCode::OK, "{path}");
        let r = send(&restricted, request(&format!("http://10.0.0.7:4567{path}"), &["10.0.0.7:4567"])).await;
        assert_eq!(r.0, StatusCode::OK, "{path}");
    }
    let r = send(&restricted, request("/readyz", &["10.0.0.7:4567"])).await;
    assert_problem(&r, 503, "UNAVAILABLE", "control plane health check failed");
    // A long foreign host is quoted in part.
    let long = format!("{}.example", "e".repeat(2000));
    let r = send(&restricted, request("/api/v1/tasks", &[&long])).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "host: eee");
    assert!(r.2["detail"].as_str().is_some_and(|d| d.len() < 300), "{}", r.2);
}
