//! What the gateway puts on its gRPC calls, seen from the other side: the real gateway server (as
//! `run` serves it, with connection info) in front of an in-process `AuthService` that answers with the
//! metadata it received. The caller's credentials travel unchanged, the caller's socket address travels
//! as `x-legion-client-addr` (never one the caller claims), and the public JWKS route carries no
//! credential.

use std::net::SocketAddr;

use legion_common::settings::ApiSettings;
use legion_proto::v1;
use legion_proto::v1::auth_service_server::{AuthService, AuthServiceServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};

/// The metadata of interest of a call, as a JSON object (absent keys are null).
fn metadata_json<T>(request: &Request<T>) -> Value {
    let get = |key: &str| request.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
    json!({
        "x-api-key": get("x-api-key"),
        "authorization": get("authorization"),
        "x-request-id": get("x-request-id"),
        "x-legion-client-addr": get(legion_gateway::client::CLIENT_ADDR_METADATA),
    })
}

/// Answers `WhoAmI` and `GetJwks` with the metadata of the call, refuses `ListApiKeys` as a control
/// plane refuses a call without a credential; everything else is unimplemented.
struct Echo;

#[tonic::async_trait]
impl AuthService for Echo {
    async fn create_api_key(
        &self,
        _: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn list_api_keys(
        &self,
        _: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        Err(Status::unauthenticated("no credential: send x-api-key or authorization"))
    }
    async fn revoke_api_key(
        &self,
        _: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::RevokeApiKeyResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn issue_token(&self, _: Request<v1::IssueTokenRequest>) -> Result<Response<v1::IssueTokenResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn get_jwks(&self, request: Request<v1::GetJwksRequest>) -> Result<Response<v1::GetJwksResponse>, Status> {
        Ok(Response::new(v1::GetJwksResponse {
            jwks_json: json!({"keys": [], "seen": metadata_json(&request)}).to_string(),
        }))
    }
    async fn capabilities(
        &self,
        _: Request<v1::CapabilitiesRequest>,
    ) -> Result<Response<v1::CapabilitiesResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn who_am_i(&self, request: Request<v1::WhoAmIRequest>) -> Result<Response<v1::WhoAmIResponse>, Status> {
        Ok(Response::new(v1::WhoAmIResponse { principal: metadata_json(&request).to_string(), policies: vec![] }))
    }
}

/// Starts the echo service and a gateway in front of it; returns the gateway's address.
async fn start(shutdown: &CancellationToken) -> SocketAddr {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let grpc_addr = grpc.local_addr().expect("grpc addr");
    let server = Server::builder().add_service(AuthServiceServer::new(Echo));
    let stop = shutdown.clone();
    tokio::spawn(server.serve_with_incoming_shutdown(TcpIncoming::from(grpc), stop.cancelled_owned()));

    let channel = Endpoint::from_shared(format!("http://{grpc_addr}")).expect("url").connect_lazy();
    let app = legion_gateway::router(&ApiSettings::default(), channel, shutdown.clone());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let http_addr = http.local_addr().expect("http addr");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(http, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    http_addr
}

/// Sends one HTTP/1.1 GET with `headers` from a socket whose address is returned with the status and
/// the JSON body.
async fn get(gateway: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (SocketAddr, u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(gateway).await.expect("connect");
    let local = stream.local_addr().expect("local addr");
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {gateway}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (local, status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_the_client_address_reach_the_control_plane() {
    let shutdown = CancellationToken::new();
    let gateway = start(&shutdown).await;

    let headers = [
        ("x-api-key", "lgn_test_key"),
        ("authorization", "Bearer a.b.c"),
        ("x-request-id", "req-42"),
        ("x-legion-client-addr", "6.6.6.6:6666"),
    ];
    let (local, status, body) = get(gateway, "/api/v1/auth/whoami", &headers).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(body["principal"].as_str().expect("principal")).expect("echo json");
    assert_eq!(
        seen,
        json!({
            "x-api-key": "lgn_test_key",
            "authorization": "Bearer a.b.c",
            "x-request-id": "req-42",
            "x-legion-client-addr": local.to_string(),
        }),
        "the address is the connection's, not the header's"
    );

    // The public route: no credential travels, the request id and address do; the body is verbatim.
    let (local, status, body) = get(gateway, "/.well-known/jwks.json", &headers).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["keys"], json!([]));
    assert_eq!(
        body["seen"],
        json!({
            "x-api-key": null,
            "authorization": null,
            "x-request-id": "req-42",
            "x-legion-client-addr": local.to_string(),
        })
    );

    // A refusal keeps its meaning: 401 with the control plane's reason.
    let (_, status, body) = get(gateway, "/api/v1/api-keys", &[]).await;
    assert_eq!((status, &body["code"]), (401, &json!("UNAUTHENTICATED")), "{body}");
    assert_eq!(body["detail"], "no credential: send x-api-key or authorization");
    shutdown.cancel();
}

/// Regression: an oversized credential was forwarded, and the control plane's HTTP/2 server (16 KiB
/// header lists) reset the one shared connection, failing other callers' calls with 429 or 503. Now it
/// is refused with 431 before anything is forwarded, and concurrent calls are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_never_reach_the_control_plane() {
    let shutdown = CancellationToken::new();
    let gateway = start(&shutdown).await;
    let (_, status, body) = get(gateway, "/api/v1/auth/whoami", &[("x-api-key", "warm-up")]).await;
    assert_eq!(status, 200, "{body}");

    let mut calls = tokio::task::JoinSet::new();
    for round in 0..6 {
        for size in [20 * 1024, 64 * 1024, 300 * 1024] {
            let name = if round % 2 == 0 { "x-api-key" } else { "authorization" };
            calls.spawn(async move {
                let value = format!("Bearer {}", "k".repeat(size));
                let (_, status, body) = get(gateway, "/api/v1/auth/whoami", &[(name, value.as_str())]).await;
                (Some(name), status, body)
            });
        }
        for _ in 0..4 {
            calls.spawn(async move {
                let (_, status, body) = get(gateway, "/api/v1/auth/whoami", &[("x-api-key", "lgn_small")]).await;
                (None, status, body)
            });
        }
    }
    let (mut small, mut oversized) = (Vec::new(), Vec::new());
    while let Some(call) = calls.join_next().await {
        let (name, status, body) = call.expect("call");
        match name {
            Some(name) => oversized.push((name, status, body)),
            None => small.push((status, body)),
        }
    }
    let failed: Vec<_> = small.iter().filter(|(status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} small calls failed next to oversized ones, first: {:?}",
        failed.len(),
        small.len(),
        failed.first()
    );
    for (name, status, body) in oversized {
        assert_eq!((status, &body["code"]), (431, &json!("INVALID_ARGUMENT")), "{body}");
        let detail = body["detail"].as_str().expect("detail");
        assert!(detail.starts_with(name) && !detail.contains("kkkk"), "{detail}");
    }

    // The longest credentials the control plane accepts get through, with a request id of its limit.
    let key = "k".repeat(legion_gateway::MAX_CREDENTIAL_BYTES);
    let bearer = format!("Bearer {key}");
    let request_id = "r".repeat(legion_gateway::MAX_REQUEST_ID_BYTES);
    for (name, value) in [("x-api-key", key.as_str()), ("authorization", bearer.as_str())] {
        let (_, status, body) =
            get(gateway, "/api/v1/auth/whoami", &[(name, value), ("x-request-id", &request_id)]).await;
        assert_eq!(status, 200, "{body}");
        let seen: Value = serde_json::from_str(body["principal"].as_str().expect("principal")).expect("echo json");
        assert_eq!((&seen[name], &seen["x-request-id"]), (&json!(value), &json!(request_id)));
    }
    // Both at once would overflow the control plane's header list: refused, naming both.
    let both = [("x-api-key", key.as_str()), ("authorization", bearer.as_str())];
    let (_, status, body) = get(gateway, "/api/v1/auth/whoami", &both).await;
    assert_eq!(status, 431, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.starts_with("authorization, x-api-key: larger than")), "{body}");
    let (_, status, body) = get(gateway, "/api/v1/auth/whoami", &[("x-api-key", "lgn_small")]).await;
    assert_eq!(status, 200, "the shared connection is intact: {body}");
    shutdown.cancel();
}

/// The `Host` bypasses as a client sends them over HTTP/1.1: a second `Host` header, and an
/// absolute-form target naming another host than `Host`, are refused before any call is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_bypasses_are_refused_on_the_wire() {
    let shutdown = CancellationToken::new();
    let gateway = start(&shutdown).await;
    let (_, status, body) = get(gateway, "/.well-known/jwks.json", &[("host", "evil.example")]).await;
    assert_eq!((status, &body["detail"]), (400, &json!("host: given more than once")), "{body}");
    let (_, status, body) = get(gateway, "http://evil.example/.well-known/jwks.json", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["detail"], "host: differs from the request target's authority evil.example");
    let (_, status, body) = get(gateway, &format!("http://{gateway}/.well-known/jwks.json"), &[]).await;
    assert_eq!(status, 200, "an absolute-form target that agrees with Host is served: {body}");
    shutdown.cancel();
}
