//! The chain routes: their OpenAPI description; what the gateway refuses by itself (bodies, queries);
//! and, against an in-process `ChainService` that keeps chains in memory the way chains.proto describes
//! them (create or replace with versions, NOT_FOUND for unknown names, INVALID_ARGUMENT naming the
//! field), the status codes, `Location` and `Legion-Chain-Changed`, the REST shape (which applies
//! again as it is), the mapping of gRPC refusals to problems and the caller's credential reaching the
//! service.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use legion_common::settings::ApiSettings;
use legion_proto::v1;
use legion_proto::v1::chain_service_server::{ChainService, ChainServiceServer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Response, Status};
use tower::ServiceExt;

/// The operator the fake refuses, as the real control plane refuses unknown operators.
const BAD_OPERATOR: &str = "equals";

/// Chains by name; `updated_by` is the `x-api-key` the call carried.
#[derive(Default)]
struct Chains(Mutex<BTreeMap<String, v1::Chain>>);

fn definition(chain: &v1::Chain) -> (String, Option<u32>, Vec<v1::Relationship>) {
    let relationships =
        chain.relationships.iter().map(|r| v1::Relationship { id: String::new(), ..r.clone() }).collect();
    (chain.description.clone(), chain.max_depth, relationships)
}

#[tonic::async_trait]
impl ChainService for Chains {
    async fn apply_chain(
        &self,
        request: tonic::Request<v1::ApplyChainRequest>,
    ) -> Result<Response<v1::ApplyChainResponse>, Status> {
        let caller = request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("anonymous");
        let caller = format!("api-key/{caller}");
        let mut chain = request.into_inner().chain.ok_or_else(|| Status::invalid_argument("chain: required"))?;
        for (i, r) in chain.relationships.iter().enumerate() {
            let conditions = r.conditions.as_ref().map(legion_proto::value_to_json).unwrap_or_default();
            if conditions["operator"] == BAD_OPERATOR {
                return Err(Status::invalid_argument(format!(
                    "relationships[{i}].conditions.operator: unknown operator \"{BAD_OPERATOR}\""
                )));
            }
        }
        let mut chains = self.0.lock().expect("lock");
        let previous = chains.get(&chain.name);
        let created = previous.is_none();
        let changed = previous.is_none_or(|p| definition(p) != definition(&chain));
        chain.version = previous.map_or(1, |p| p.version + i64::from(changed));
        if !changed {
            return Ok(Response::new(v1::ApplyChainResponse { chain: previous.cloned(), created, changed }));
        }
        for (i, r) in chain.relationships.iter_mut().enumerate() {
            r.id = format!("0190f5c8-7e4a-7b3c-9d2e-00000000000{i}");
        }
        chain.created_at = Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 });
        chain.updated_at = chain.created_at;
        chain.updated_by = caller;
        chains.insert(chain.name.clone(), chain.clone());
        Ok(Response::new(v1::ApplyChainResponse { chain: Some(chain), created, changed }))
    }

    async fn get_chain(&self, request: tonic::Request<v1::GetChainRequest>) -> Result<Response<v1::Chain>, Status> {
        let name = request.into_inner().name;
        let chains = self.0.lock().expect("lock");
        chains
            .get(&name)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("chain {name} not found")))
    }

    async fn list_chains(
        &self,
        request: tonic::Request<v1::ListChainsRequest>,
    ) -> Result<Response<v1::ListChainsResponse>, Status> {
        let request = request.into_inner();
        let size = if request.page_size == 0 { 100 } else { request.page_size as usize };
        let chains = self.0.lock().expect("lock");
        let mut page: Vec<v1::Chain> =
            chains.values().filter(|c| c.name > request.page_token).take(size + 1).cloned().collect();
        let next_page_token = if page.len() > size {
            page.truncate(size);
            page.last().map(|c| c.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListChainsResponse { chains: page, next_page_token }))
    }

    async fn delete_chain(
        &self,
        request: tonic::Request<v1::DeleteChainRequest>,
    ) -> Result<Response<v1::DeleteChainResponse>, Status> {
        let name = request.into_inner().name;
        match self.0.lock().expect("lock").remove(&name) {
            Some(_) => Ok(Response::new(v1::DeleteChainResponse {})),
            None => Err(Status::not_found(format!("chain {name} not found"))),
        }
    }
}

async fn gateway(shutdown: &CancellationToken) -> axum::Router {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder().add_service(ChainServiceServer::new(Chains::default()));
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
    /// The `Legion-Chain-Changed` header.
    changed: Option<String>,
    body: Value,
}

async fn send(app: &axum::Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (content_type, location) = (header(header::CONTENT_TYPE).unwrap_or_default(), header(header::LOCATION));
    let changed = header(header::HeaderName::from_static("legion-chain-changed"));
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    Reply { status, content_type, location, changed, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

/// A request with `x-api-key: ops` and, when `body` is given, `content-type` and the body.
fn raw(method: &str, uri: &str, body: Option<(&str, &str)>) -> Request<Body> {
    let builder = Request::builder().method(method).uri(uri).header("x-api-key", "ops");
    match body {
        Some((content_type, body)) => {
            builder.header(header::CONTENT_TYPE, content_type).body(Body::from(body.to_owned())).expect("request")
        }
        None => builder.body(Body::empty()).expect("request"),
    }
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<&Value>) -> Reply {
    let text = body.map(Value::to_string);
    send(app, raw(method, uri, text.as_deref().map(|t| ("application/json", t)))).await
}

fn assert_problem(r: &Reply, status: u16, code: &str, detail_starts: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.content_type, "application/problem+json", "{}", r.body);
    assert_eq!((&r.body["status"], &r.body["code"]), (&json!(status), &json!(code)), "{}", r.body);
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(detail_starts), "{detail:?} should start with {detail_starts:?}");
}

fn chain(name: &str, operator: &str) -> Value {
    json!({
        "name": name,
        "relationships": [{
            "trigger": "http.request.get",
            "action": "log.entry.write",
            "conditions": {"fact": "results.status", "operator": operator, "value": 200},
            "transformation": {"engine": "jq", "expr": "{message: .results.body}"},
            "priority": 5
        }]
    })
}

#[tokio::test]
async fn chains_are_created_replaced_listed_shown_and_deleted() {
    let shutdown = CancellationToken::new();
    let app = gateway(&shutdown).await;

    let r = call(&app, "POST", "/api/v1/chains", Some(&chain("nightly", "equal"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!((r.location.as_deref(), r.changed.as_deref()), (Some("/api/v1/chains/nightly"), Some("true")));
    assert_eq!(
        (&r.body["version"], &r.body["updated_by"], &r.body["description"]),
        (&json!(1), &json!("api-key/ops"), &json!(null))
    );
    let relationship = &r.body["relationships"][0];
    assert_eq!(relationship["conditions"], json!({"fact": "results.status", "operator": "equal", "value": 200}));
    assert_eq!(
        (&relationship["priority"], &relationship["delay_ms"], &relationship["active"]),
        (&json!(5), &json!(0), &json!(null))
    );

    let r = call(&app, "POST", "/api/v1/chains", Some(&chain("nightly", "equal"))).await;
    assert_eq!(
        (r.status, r.location.as_deref(), r.changed.as_deref(), &r.body["version"]),
        (StatusCode::OK, None, Some("false"), &json!(1)),
        "unchanged"
    );
    let r = call(&app, "POST", "/api/v1/chains", Some(&chain("nightly", "not_equal"))).await;
    assert_eq!(
        (r.status, r.changed.as_deref(), &r.body["version"]),
        (StatusCode::OK, Some("true"), &json!(2)),
        "replaced: a new version"
    );

    for name in ["a", "b", "c"] {
        assert_eq!(call(&app, "POST", "/api/v1/chains", Some(&chain(name, "equal"))).await.status, StatusCode::CREATED);
    }
    let r = call(&app, "GET", "/api/v1/chains?limit=2", None).await;
    let names: Vec<&str> =
        r.body["chains"].as_array().expect("chains").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!((names, &r.body["next_page_token"]), (vec!["a", "b"], &json!("b")));
    let r = call(&app, "GET", "/api/v1/chains?limit=2&page_token=b", None).await;
    assert_eq!(r.body["chains"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.body["next_page_token"], Value::Null);

    let r = call(&app, "GET", "/api/v1/chains/nightly", None).await;
    assert_eq!((r.status, &r.body["name"], &r.body["version"]), (StatusCode::OK, &json!("nightly"), &json!(2)));
    assert_eq!(r.changed, None, "only POST answers Legion-Chain-Changed");
    let r = call(&app, "DELETE", "/api/v1/chains/nightly", None).await;
    assert_eq!((r.status, &r.body), (StatusCode::NO_CONTENT, &Value::Null));
    for method in ["GET", "DELETE"] {
        let r = call(&app, method, "/api/v1/chains/nightly", None).await;
        assert_eq!(
            (r.status, r.content_type.as_str()),
            (StatusCode::NOT_FOUND, "application/problem+json"),
            "{method}"
        );
        assert_eq!((&r.body["code"], &r.body["detail"]), (&json!("NOT_FOUND"), &json!("chain nightly not found")));
    }
    shutdown.cancel();
}

#[tokio::test]
async fn invalid_definitions_come_back_as_400_naming_the_field() {
    let shutdown = CancellationToken::new();
    let app = gateway(&shutdown).await;
    let r = call(&app, "POST", "/api/v1/chains", Some(&chain("nightly", BAD_OPERATOR))).await;
    assert_eq!((r.status, r.content_type.as_str()), (StatusCode::BAD_REQUEST, "application/problem+json"));
    assert_eq!(r.body["code"], "INVALID_ARGUMENT");
    assert_eq!(r.body["detail"], "relationships[0].conditions.operator: unknown operator \"equals\"");
    assert_eq!(call(&app, "GET", "/api/v1/chains/nightly", None).await.status, StatusCode::NOT_FOUND, "nothing stored");
    shutdown.cancel();
}

/// The chain routes: tagged `chains`, with a JSON body for `POST`, and every problem response they
/// may answer documented.
#[tokio::test]
async fn the_openapi_document_describes_the_chain_routes() {
    let doc = serde_json::to_value(legion_gateway::openapi()).expect("json");
    assert!(doc["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t["name"] == "chains")), "{}", doc["tags"]);
    let chains = &doc["paths"]["/api/v1/chains"];
    let named = &doc["paths"]["/api/v1/chains/{name}"];
    let operations = [
        ("post /api/v1/chains", &chains["post"], &["201", "200", "400", "401", "403", "413", "415", "503"][..]),
        ("get /api/v1/chains", &chains["get"], &["200", "400", "401", "403", "503"]),
        ("get /api/v1/chains/{name}", &named["get"], &["200", "400", "401", "403", "404", "503"]),
        ("delete /api/v1/chains/{name}", &named["delete"], &["204", "400", "401", "403", "404", "503"]),
    ];
    for (what, operation, statuses) in operations {
        assert_eq!(operation["tags"], json!(["chains"]), "{what}");
        for status in statuses {
            assert!(operation["responses"][*status].is_object(), "{what} documents {status}");
            if status.starts_with('4') || status.starts_with('5') {
                let content = &operation["responses"][*status]["content"]["application/problem+json"];
                assert!(content.is_object(), "{what} {status} is a problem");
            }
        }
    }
    let body = &chains["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["$ref"], "#/components/schemas/ChainBody");
    let responses = &chains["post"]["responses"];
    assert!(responses["201"]["headers"]["location"].is_object());
    for status in ["201", "200"] {
        let changed = &responses[status]["headers"]["Legion-Chain-Changed"];
        assert_eq!(changed["schema"]["type"], "boolean", "{status}: {changed}");
        assert!(changed["description"].as_str().is_some_and(|d| d.starts_with("`true`")), "{status}: {changed}");
    }
    let params: Vec<&str> = chains["get"]["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(params, ["limit", "page_token"]);
    let schemas = &doc["components"]["schemas"];
    let chain_required = schemas["Chain"]["required"].as_array().expect("required");
    for key in
        ["name", "description", "max_depth", "version", "created_at", "updated_at", "updated_by", "relationships"]
    {
        assert!(chain_required.contains(&key.into()), "Chain.{key} not required");
    }
    let relationship_required = schemas["Relationship"]["required"].as_array().expect("required");
    for key in [
        "id",
        "trigger",
        "action",
        "conditions",
        "transformation",
        "delay_ms",
        "active",
        "priority",
        "max_attempts",
        "timeout_ms",
    ] {
        assert!(relationship_required.contains(&key.into()), "Relationship.{key} not required");
    }
    assert_eq!(schemas["ChainBody"]["required"], json!(["name", "relationships"]));
    assert_eq!(schemas["RelationshipBody"]["required"], json!(["trigger", "action"]));
    // The members only the view has are documented on the bodies as output only, ignored on input.
    for (schema, member) in [
        ("ChainBody", "version"),
        ("ChainBody", "created_at"),
        ("ChainBody", "updated_at"),
        ("ChainBody", "updated_by"),
        ("RelationshipBody", "id"),
    ] {
        let property = &schemas[schema]["properties"][member];
        assert_eq!(property["readOnly"], json!(true), "{schema}.{member}: {property}");
        let description = property["description"].as_str().unwrap_or_default();
        assert!(description.starts_with("Output only; ignored on input."), "{schema}.{member}: {property}");
    }
    for (schema, member) in [("ChainBody", "name"), ("RelationshipBody", "trigger")] {
        assert_eq!(schemas[schema]["properties"][member]["readOnly"], Value::Null, "{schema}.{member}");
    }
}

/// Regression: the output of `GET /api/v1/chains/{name}` POSTed back to `POST /api/v1/chains` was
/// refused (`created_at, updated_at, updated_by, version: unknown fields`). It applies, unchanged, and
/// the output-only members are not sent: the ids are assigned again and the author is the caller.
#[tokio::test]
async fn an_exported_chain_applies_again() {
    let shutdown = CancellationToken::new();
    let app = gateway(&shutdown).await;
    let mut definition = chain("nightly", "equal");
    definition["description"] = json!("reports");
    definition["max_depth"] = json!(4);
    assert_eq!(call(&app, "POST", "/api/v1/chains", Some(&definition)).await.status, StatusCode::CREATED);
    definition["relationships"][0]["conditions"]["value"] = json!(201);
    assert_eq!(call(&app, "POST", "/api/v1/chains", Some(&definition)).await.changed.as_deref(), Some("true"));

    let exported = call(&app, "GET", "/api/v1/chains/nightly", None).await.body;
    assert_eq!((&exported["version"], &exported["updated_by"]), (&json!(2), &json!("api-key/ops")));
    assert!(exported["created_at"].is_string() && exported["relationships"][0]["id"].is_string(), "{exported}");
    let r = call(&app, "POST", "/api/v1/chains", Some(&exported)).await;
    assert_eq!((r.status, r.changed.as_deref(), r.location.as_deref()), (StatusCode::OK, Some("false"), None));
    assert_eq!(r.body, exported, "the same version, as it was");

    // Edited and applied again: a new version, whatever the stale output-only members say.
    let mut edited = exported.clone();
    edited["relationships"][0]["priority"] = json!(7);
    edited["relationships"][0]["id"] = json!("not-an-id");
    edited["updated_by"] = json!("someone/else");
    let request = Request::builder()
        .method("POST")
        .uri("/api/v1/chains")
        .header("x-api-key", "ci")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(edited.to_string()))
        .expect("request");
    let r = send(&app, request).await;
    assert_eq!((r.status, r.changed.as_deref(), &r.body["version"]), (StatusCode::OK, Some("true"), &json!(3)));
    assert_eq!(
        (&r.body["updated_by"], &r.body["relationships"][0]["id"], &r.body["relationships"][0]["priority"]),
        (&json!("api-key/ci"), &json!("0190f5c8-7e4a-7b3c-9d2e-000000000000"), &json!(7))
    );
    shutdown.cancel();
}

#[tokio::test]
async fn chain_bodies_and_queries_are_checked_by_name() {
    let app = unreachable();
    let cases = [
        (r#"{"relationships":[]}"#, "name: required"),
        (r#"{"name":"c"}"#, "relationships: required"),
        (r#"{"name":"c","relationships":[],"etag":2}"#, "etag: unknown field"),
        (
            r#"{"name":"c","relationships":[{"id":"x","trigger":"a.b.c","action":"d.e.f","version":1}]}"#,
            "relationships[0].version: unknown field",
        ),
        (
            r#"{"name":"c","relationships":[{"trigger":"a.b.c","action":"d.e.f","when":{}}]}"#,
            "relationships[0].when: unknown field",
        ),
        (r#"{"name":"c","relationships":[{"action":"d.e.f"}]}"#, "relationships[0]: missing field `trigger`"),
        (
            r#"{"name":"c","relationships":[{"trigger":"a.b.c","action":"d.e.f","timeout_ms":4294967296}]}"#,
            "relationships[0].timeout_ms: invalid value: integer `4294967296`, expected u32",
        ),
        (
            r#"{"name":"c","relationships":[{"trigger":"a.b.c","action":"d.e.f","delay_ms":-1}]}"#,
            "relationships[0].delay_ms: invalid value: integer `-1`, expected u64",
        ),
        (r#"{"name":"c","relationships":[],"max_depth":"deep"}"#, r#"max_depth: invalid type: string "deep""#),
        ("[]", "body: must be a JSON object, not an array"),
        ("{", "body: not valid JSON"),
    ];
    for (body, detail) in cases {
        let r = send(&app, raw("POST", "/api/v1/chains", Some(("application/json", body)))).await;
        assert_problem(&r, 400, "INVALID_ARGUMENT", detail);
    }
    let r = send(&app, raw("POST", "/api/v1/chains", Some(("text/yaml", "name: c")))).await;
    assert_problem(&r, 415, "INVALID_ARGUMENT", "content-type: expected application/json");
    for (uri, detail) in [
        ("/api/v1/chains?limit=0", "limit: must be an integer from 1 to 1000"),
        ("/api/v1/chains?limit=1&limit=2", "limit: given more than once"),
        ("/api/v1/chains?name=x", "name: unknown query parameter"),
    ] {
        assert_problem(&send(&app, raw("GET", uri, None)).await, 400, "INVALID_ARGUMENT", detail);
    }
    let r = send(&app, raw("PUT", "/api/v1/chains/c", None)).await;
    assert_problem(&r, 405, "UNIMPLEMENTED", "PUT is not allowed on /api/v1/chains/c");
}

/// Well-formed chain calls reach the control plane (here: unreachable, so 503).
#[tokio::test]
async fn valid_chain_calls_reach_the_control_plane() {
    let app = unreachable();
    let body = r#"{"name":"nightly","description":"d","max_depth":3,"relationships":[{"trigger":"http.request.get",
        "action":"log.entry.write","conditions":{"fact":"results.status","operator":"equal","value":200},
        "transformation":{"engine":"jq","expr":".results"},"delay_ms":0,"active":true,"priority":9,
        "max_attempts":2,"timeout_ms":1000}]}"#;
    let requests = [
        raw("POST", "/api/v1/chains", Some(("application/json", body))),
        raw("GET", "/api/v1/chains", None),
        raw("GET", "/api/v1/chains?limit=10&page_token=t", None),
        raw("GET", "/api/v1/chains/nightly", None),
        raw("DELETE", "/api/v1/chains/nightly", None),
        raw("GET", "/api/v1/tasks?root_id=0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e&limit=1000", None),
    ];
    for request in requests {
        let what = format!("{} {}", request.method(), request.uri());
        let r = send(&app, request).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", r.body);
        assert_problem(&r, 503, "UNAVAILABLE", "control plane unavailable");
    }
}
