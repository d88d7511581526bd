//! The schedule routes and the control planes of `/api/v1/nodes`: their OpenAPI description; what the
//! gateway refuses by itself (bodies, queries); and, against an in-process control plane ([`fake`]),
//! the status codes and `Location`, the REST shape (RFC 3339 UTC instants with `Z`, which a POST takes
//! back), the mapping of gRPC refusals to problems and the caller's credential reaching the service.

#[path = "schedules/fake.rs"]
mod fake;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use legion_common::settings::ApiSettings;
use legion_proto::v1::catalog_service_server::CatalogServiceServer;
use legion_proto::v1::schedule_service_server::ScheduleServiceServer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tower::ServiceExt;

async fn gateway(shutdown: &CancellationToken) -> axum::Router {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder()
        .add_service(ScheduleServiceServer::new(fake::Schedules::default()))
        .add_service(CatalogServiceServer::new(fake::Catalog));
    tokio::spawn(server.serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.clone().cancelled_owned()));
    let channel = Endpoint::from_shared(format!("http://{addr}")).expect("url").connect_lazy();
    legion_gateway::router(&ApiSettings::default(), channel, shutdown.clone())
}

/// A gateway whose control plane is not there (port 1 on loopback): every gRPC call fails to connect.
fn unreachable() -> axum::Router {
    let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    legion_gateway::router(&ApiSettings::default(), channel, CancellationToken::new())
}

struct Reply {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: Value,
}

async fn send(app: &axum::Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (content_type, location) = (header(header::CONTENT_TYPE).unwrap_or_default(), header(header::LOCATION));
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    Reply { status, content_type, location, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

/// A request with `x-api-key: ops` and, when `body` is given, `content-type: application/json`.
fn raw(method: &str, uri: &str, body: Option<&str>) -> Request<Body> {
    let builder = Request::builder().method(method).uri(uri).header("x-api-key", "ops");
    match body {
        Some(body) => {
            builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_owned())).expect("request")
        }
        None => builder.body(Body::empty()).expect("request"),
    }
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<&Value>) -> Reply {
    let text = body.map(Value::to_string);
    send(app, raw(method, uri, text.as_deref())).await
}

fn assert_problem(r: &Reply, status: u16, code: &str, detail_starts: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.content_type, "application/problem+json", "{}", r.body);
    assert_eq!((&r.body["status"], &r.body["code"]), (&json!(status), &json!(code)), "{}", r.body);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(detail_starts), "{detail:?} should start with {detail_starts:?}");
}

fn nightly() -> Value {
    json!({
        "name": "nightly",
        "function": "http.request.get",
        "args": {"url": "http://x"},
        "cron": "30 2 * * *",
        "timezone": "America/New_York",
        "misfire": "skip",
        "priority": 5
    })
}

fn names(page: &Value) -> Vec<&str> {
    page["schedules"].as_array().expect("schedules").iter().filter_map(|s| s["name"].as_str()).collect()
}

#[tokio::test]
async fn schedules_are_created_listed_shown_paused_resumed_and_deleted() {
    let shutdown = CancellationToken::new();
    let app = gateway(&shutdown).await;

    let r = call(&app, "POST", "/api/v1/schedules", Some(&nightly())).await;
    assert_eq!(
        (r.status, r.location.as_deref()),
        (StatusCode::CREATED, Some("/api/v1/schedules/nightly")),
        "{}",
        r.body
    );
    let created = r.body;
    assert_eq!(
        (&created["created_by"], &created["paused"], &created["priority"], &created["misfire"]),
        (&json!("api-key/ops"), &json!(false), &json!(5), &json!("skip"))
    );
    assert_eq!(
        (&created["cron"], &created["interval_ms"], &created["description"]),
        (&json!("30 2 * * *"), &Value::Null, &Value::Null)
    );
    // The slots of the scheduler's own code, in UTC with `Z`: the spring-forward gap of 2026-03-08
    // fires at 03:00 EDT (07:00Z).
    assert_eq!(
        created["next_fires"],
        json!([
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z",
            "2026-03-10T06:30:00Z",
            "2026-03-11T06:30:00Z"
        ])
    );
    assert_eq!(created["last_fire"]["fired_at"], "2026-03-07T00:00:00.250Z", "fractional seconds when not zero");

    let r = call(&app, "POST", "/api/v1/schedules", Some(&nightly())).await;
    assert_problem(&r, 409, "ALREADY_EXISTS", "schedule nightly already exists");

    for name in ["a", "b", "c"] {
        let body = json!({"name": name, "function": "core.util.noop", "interval_ms": 60_000});
        assert_eq!(call(&app, "POST", "/api/v1/schedules", Some(&body)).await.status, StatusCode::CREATED);
    }
    let r = call(&app, "GET", "/api/v1/schedules?limit=2", None).await;
    assert_eq!((names(&r.body), &r.body["next_page_token"]), (vec!["a", "b"], &json!("b")));
    let r = call(&app, "GET", "/api/v1/schedules?limit=2&page_token=b", None).await;
    assert_eq!((names(&r.body), &r.body["next_page_token"]), (vec!["c", "nightly"], &Value::Null));
    let interval = &call(&app, "GET", "/api/v1/schedules/a", None).await.body;
    assert_eq!(
        (&interval["cron"], &interval["interval_ms"], &interval["timezone"]),
        (&Value::Null, &json!(60_000), &json!("UTC"))
    );
    assert_eq!(interval["next_fires"][0], "2026-03-07T00:01:00Z");

    let r = call(&app, "GET", "/api/v1/schedules/nightly", None).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &created));

    let r = call(&app, "POST", "/api/v1/schedules/nightly/pause", None).await;
    assert_eq!((r.status, &r.body["paused"], &r.body["next_fires"]), (StatusCode::OK, &json!(true), &json!([])));
    let r = call(&app, "POST", "/api/v1/schedules/nightly/resume", None).await;
    assert_eq!(
        (r.status, &r.body["paused"], &r.body["next_fires"]),
        (StatusCode::OK, &json!(false), &created["next_fires"])
    );

    let r = call(&app, "GET", "/api/v1/schedules/nightly/fires?limit=2", None).await;
    assert_eq!((r.status, &r.body["next_page_token"]), (StatusCode::OK, &json!("2")), "{}", r.body);
    assert_eq!(
        r.body["fires"],
        json!([
            {"slot": "2026-03-07T00:00:00Z", "fired_at": "2026-03-07T00:00:00.250Z",
             "task_id": "0190f5c8-7e4a-7b3c-9d2e-000000000000", "status": "succeeded", "outcome": "fired",
             "reason": null, "missed": 0, "epoch": 4},
            {"slot": "2026-03-06T23:59:00Z", "fired_at": "2026-03-06T23:59:00.250Z", "task_id": null,
             "status": "overlap", "outcome": "overlap", "reason": "the previous task is unfinished", "missed": 0,
             "epoch": 4}
        ])
    );
    let r = call(&app, "GET", "/api/v1/schedules/nightly/fires?page_token=2", None).await;
    assert_eq!((r.body["fires"].as_array().map(Vec::len), &r.body["next_page_token"]), (Some(1), &Value::Null));

    let r = call(&app, "DELETE", "/api/v1/schedules/nightly", None).await;
    assert_eq!((r.status, &r.body), (StatusCode::NO_CONTENT, &Value::Null));
    for (method, uri) in [
        ("GET", "/api/v1/schedules/nightly"),
        ("DELETE", "/api/v1/schedules/nightly"),
        ("POST", "/api/v1/schedules/nightly/pause"),
        ("POST", "/api/v1/schedules/nightly/resume"),
        ("GET", "/api/v1/schedules/nightly/fires"),
    ] {
        assert_problem(&call(&app, method, uri, None).await, 404, "NOT_FOUND", "schedule nightly not found");
    }
    shutdown.cancel();
}

/// The output of `GET /api/v1/schedules/{name}` POSTed back (under another name) is accepted as it is,
/// and its output-only members are not sent: its author is the caller. Regression: a paused schedule
/// exported and created again was running; it is created paused, and with `paused` false, running.
#[tokio::test]
async fn an_exported_schedule_is_accepted_again() {
    let shutdown = CancellationToken::new();
    let app = gateway(&shutdown).await;
    assert_eq!(call(&app, "POST", "/api/v1/schedules", Some(&nightly())).await.status, StatusCode::CREATED);
    call(&app, "POST", "/api/v1/schedules/nightly/pause", None).await;
    let mut exported = call(&app, "GET", "/api/v1/schedules/nightly", None).await.body;
    assert_eq!((&exported["paused"], exported["last_fire"].is_object()), (&json!(true), true), "{exported}");
    exported["name"] = json!("nightly-copy");
    exported["created_by"] = json!("someone/else");
    let request = Request::post("/api/v1/schedules")
        .header("x-api-key", "ci")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(exported.to_string()))
        .expect("request");
    let r = send(&app, request).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!((&r.body["created_by"], &r.body["paused"]), (&json!("api-key/ci"), &json!(true)));
    for member in ["function", "args", "cron", "timezone", "misfire", "priority"] {
        assert_eq!(r.body[member], exported[member], "{member}");
    }
    assert_eq!(r.body["next_fires"], json!([]), "paused, so no next slots");
    exported["name"] = json!("nightly-running");
    exported["paused"] = json!(false);
    let r = call(&app, "POST", "/api/v1/schedules", Some(&exported)).await;
    assert_eq!((r.status, &r.body["paused"]), (StatusCode::CREATED, &json!(false)), "{}", r.body);
    assert_eq!(r.body["next_fires"].as_array().map(Vec::len), Some(5), "running, so it has its next slots");
    shutdown.cancel();
}

#[tokio::test]
async fn refusals_of_the_control_plane_name_the_field() {
    let shutdown = CancellationToken::new();
    let app = gateway(&shutdown).await;
    let cases = [
        (json!({"name": "s", "function": "a.b.c", "cron": "61 * * * *"}), "cron: \"61 * * * *\""),
        (
            json!({"name": "s", "function": "a.b.c", "cron": "* * * * *", "timezone": "Mars/Base"}),
            "timezone: \"Mars/Base\"",
        ),
        (json!({"name": "s", "function": "a.b.c", "interval_ms": 999}), "interval_ms: must be 1000 to"),
        (json!({"name": "s", "function": "a.b.c"}), "cron: give either cron or interval_ms"),
    ];
    for (body, detail) in cases {
        assert_problem(&call(&app, "POST", "/api/v1/schedules", Some(&body)).await, 400, "INVALID_ARGUMENT", detail);
    }
    assert_eq!(
        call(&app, "GET", "/api/v1/schedules", None).await.body,
        json!({"schedules": [], "next_page_token": null})
    );

    let uri =
        "/api/v1/schedule-preview?cron=30%202%20*%20*%20*&timezone=America/New_York&from=2026-03-07T00:00:00Z&count=3";
    let r = call(&app, "GET", uri, None).await;
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"slots": ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]}))
    );
    let r =
        call(&app, "GET", "/api/v1/schedule-preview?interval_ms=90000&from=2026-03-07T00:00:00.5Z&count=2", None).await;
    assert_eq!(r.body, json!({"slots": ["2026-03-07T00:01:30.500Z", "2026-03-07T00:03:00.500Z"]}));
    let r = call(&app, "GET", "/api/v1/schedule-preview?cron=*%20*%20*", None).await;
    assert_problem(&r, 400, "INVALID_ARGUMENT", "cron: \"* * *\" has 3 fields");
    shutdown.cancel();
}

#[tokio::test]
async fn nodes_show_the_control_planes_and_the_lease() {
    let shutdown = CancellationToken::new();
    let app = gateway(&shutdown).await;
    let r = call(&app, "GET", "/api/v1/nodes", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!((&r.body["nodes"][0]["name"], &r.body["nodes"][0]["status"]), (&json!("exec-1"), &json!("active")));
    assert_eq!(
        r.body["control_planes"],
        json!([
            {"name": "cp-a/1f2e", "version": "0.1.0", "started_at": "2026-03-07T00:00:00Z",
             "last_seen": "2026-03-07T00:00:10Z", "leader": true},
            {"name": "cp-b/9c8d", "version": "0.1.0", "started_at": "2026-03-07T00:00:01Z",
             "last_seen": "2026-03-07T00:00:09Z", "leader": false}
        ])
    );
    assert_eq!(
        r.body["leadership"],
        json!({"holder": "cp-a/1f2e", "epoch": 4, "acquired_at": "2026-03-07T00:00:00Z",
            "expires_at": "2026-03-07T00:00:15Z"})
    );
    shutdown.cancel();
}

#[tokio::test]
async fn bodies_and_queries_are_checked_by_name_before_any_call() {
    let app = unreachable();
    let cases = [
        (r#"{"function":"a.b.c","cron":"* * * * *"}"#, "name: required"),
        (r#"{"name":"s","cron":"* * * * *"}"#, "function: required"),
        (r#"{"name":"s","function":"a.b.c","every":"5m"}"#, "every: unknown field; accepted fields are name,"),
        (r#"{"name":"s","function":"a.b.c","interval_ms":"5m"}"#, r#"interval_ms: invalid type: string "5m""#),
        (r#"{"name":"s","function":"a.b.c","priority":-1}"#, "priority: invalid value: integer `-1`"),
        ("[]", "body: must be a JSON object, not an array"),
        ("{", "body: not valid JSON"),
    ];
    for (body, detail) in cases {
        assert_problem(
            &send(&app, raw("POST", "/api/v1/schedules", Some(body))).await,
            400,
            "INVALID_ARGUMENT",
            detail,
        );
    }
    for (uri, detail) in [
        ("/api/v1/schedules?limit=0", "limit: must be an integer from 1 to 1000"),
        ("/api/v1/schedules?name=x", "name: unknown query parameter"),
        ("/api/v1/schedules/s/fires?limit=1001", "limit: must be an integer from 1 to 1000"),
        ("/api/v1/schedules/s/fires?slot=x", "slot: unknown query parameter"),
        ("/api/v1/schedule-preview?count=0", "count: must be an integer from 1 to 1000"),
        ("/api/v1/schedule-preview?from=today", "from: must be an RFC 3339 time"),
        ("/api/v1/schedule-preview?interval_ms=1h", "interval_ms: must be a whole number of milliseconds"),
        ("/api/v1/schedule-preview?cron=a&cron=b", "cron: given more than once"),
    ] {
        assert_problem(&send(&app, raw("GET", uri, None)).await, 400, "INVALID_ARGUMENT", detail);
    }
    let r = send(&app, raw("PUT", "/api/v1/schedules/s", None)).await;
    assert_problem(&r, 405, "UNIMPLEMENTED", "PUT is not allowed on /api/v1/schedules/s");
    let r = send(&app, raw("GET", "/api/v1/schedules/s/pause", None)).await;
    assert_problem(&r, 405, "UNIMPLEMENTED", "GET is not allowed on /api/v1/schedules/s/pause");

    // Well-formed calls reach the control plane (here: unreachable, so 503).
    let body = serde_json::to_string(&nightly()).expect("json");
    for request in [
        raw("POST", "/api/v1/schedules", Some(&body)),
        raw("GET", "/api/v1/schedules?limit=10&page_token=t", None),
        raw("GET", "/api/v1/schedules/nightly", None),
        raw("DELETE", "/api/v1/schedules/nightly", None),
        raw("POST", "/api/v1/schedules/nightly/pause", None),
        raw("POST", "/api/v1/schedules/nightly/resume", None),
        raw("GET", "/api/v1/schedules/nightly/fires?limit=5", None),
        raw("GET", "/api/v1/schedule-preview?cron=*%20*%20*%20*%20*", None),
    ] {
        let what = format!("{} {}", request.method(), request.uri());
        let r = send(&app, request).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", r.body);
        assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    }
}

/// The schedule routes: tagged `schedules`, with a JSON body for `POST`, every problem response they
/// may answer documented, and the schemas of the objects; `NodeList` has the control planes.
#[tokio::test]
async fn the_openapi_document_describes_the_schedule_routes() {
    let doc = serde_json::to_value(legion_gateway::openapi()).expect("json");
    assert!(doc["tags"].as_array().is_some_and(|t| t.iter().any(|t| t["name"] == "schedules")), "{}", doc["tags"]);
    let paths = &doc["paths"];
    let operations = [
        ("post", "/api/v1/schedules", &["201", "400", "401", "403", "404", "409", "413", "415", "503"][..]),
        ("get", "/api/v1/schedules", &["200", "400", "401", "403", "503"]),
        ("get", "/api/v1/schedules/{name}", &["200", "400", "401", "403", "404", "503"]),
        ("delete", "/api/v1/schedules/{name}", &["204", "400", "401", "403", "404", "503"]),
        ("post", "/api/v1/schedules/{name}/pause", &["200", "400", "401", "403", "404", "503"]),
        ("post", "/api/v1/schedules/{name}/resume", &["200", "400", "401", "403", "404", "503"]),
        ("get", "/api/v1/schedules/{name}/fires", &["200", "400", "401", "403", "404", "503"]),
        ("get", "/api/v1/schedule-preview", &["200", "400", "401", "403", "503"]),
    ];
    for (method, path, statuses) in operations {
        let operation = &paths[path][method];
        assert_eq!(operation["tags"], json!(["schedules"]), "{method} {path}");
        for status in statuses {
            let response = &operation["responses"][*status];
            assert!(response.is_object(), "{method} {path} documents {status}");
            if status.starts_with('4') || status.starts_with('5') {
                assert!(response["content"]["application/problem+json"].is_object(), "{method} {path} {status}");
            }
        }
    }
    let post = &paths["/api/v1/schedules"]["post"];
    assert_eq!(
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ScheduleBody"
    );
    assert!(post["responses"]["201"]["headers"]["location"].is_object());
    let parameters = |path: &str| -> Vec<String> {
        paths[path]["get"]["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    assert_eq!(parameters("/api/v1/schedules"), ["limit", "page_token"]);
    assert_eq!(parameters("/api/v1/schedules/{name}/fires"), ["name", "limit", "page_token"]);
    assert_eq!(parameters("/api/v1/schedule-preview"), ["cron", "timezone", "interval_ms", "from", "count"]);

    let schemas = &doc["components"]["schemas"];
    let required = |schema: &str| schemas[schema]["required"].as_array().cloned().unwrap_or_default();
    for key in
        legion_gateway::input::ScheduleBody::FIELDS.iter().chain(legion_gateway::input::ScheduleBody::OUTPUT_ONLY)
    {
        assert!(required("Schedule").contains(&json!(key)), "Schedule.{key} not required");
        assert!(schemas["ScheduleBody"]["properties"][key].is_object(), "ScheduleBody.{key} not documented");
    }
    for key in legion_gateway::input::ScheduleBody::OUTPUT_ONLY {
        let property = &schemas["ScheduleBody"]["properties"][key];
        // utoipa marks an array's items, not the array, read-only.
        let read_only =
            if property["items"].is_object() { &property["items"]["readOnly"] } else { &property["readOnly"] };
        assert_eq!(read_only, &json!(true), "ScheduleBody.{key}: {property}");
        // A referenced schema carries its description on the reference.
        let description = property["description"]
            .as_str()
            .or_else(|| property["oneOf"][0]["description"].as_str())
            .unwrap_or_default();
        assert!(description.starts_with("Output only; ignored on input."), "ScheduleBody.{key}: {property}");
    }
    assert_eq!(schemas["ScheduleBody"]["required"], json!(["name", "function"]));
    for key in ["slot", "fired_at", "task_id", "status", "outcome", "reason", "missed", "epoch"] {
        assert!(required("ScheduleFire").contains(&json!(key)), "ScheduleFire.{key} not required");
    }
    for (schema, keys) in [
        ("SchedulePage", &["schedules", "next_page_token"][..]),
        ("ScheduleFirePage", &["fires", "next_page_token"]),
        ("SchedulePreview", &["slots"]),
        ("NodeList", &["nodes", "control_planes", "leadership"]),
        ("ControlPlane", &["name", "version", "started_at", "last_seen", "leader"]),
        ("Leadership", &["holder", "epoch", "acquired_at", "expires_at"]),
    ] {
        for key in keys {
            assert!(required(schema).contains(&json!(key)), "{schema}.{key} not required");
        }
    }
}
