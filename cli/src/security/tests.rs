use std::net::SocketAddr;

use clap::Parser;
use legion_proto::v1::auth_service_server::{AuthService, AuthServiceServer};
use serde_json::{Value, json};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use super::*;
use crate::args::Cli;

#[test]
fn a_policy_file_becomes_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ops.json");
    std::fs::write(&file, r#"{"name":"ops","rules":[{"path":"tasks/*","capabilities":["create","read"]}]}"#)
        .expect("write");
    let request = read_policy(&file, None, std::io::empty()).expect("reads");
    assert_eq!(request.name, "ops");
    assert_eq!(request.rules[0].path, "tasks/*");
    assert_eq!(request.rules[0].capabilities, ["create", "read"]);
    let request = read_policy(&file, Some("ops-copy".into()), std::io::empty()).expect("--name wins");
    assert_eq!(request.name, "ops-copy");

    let stdin = br#"{"rules":[{"path":"audit","capabilities":["read"]}]}"#;
    let request = read_policy(Path::new("-"), Some("auditor".into()), &stdin[..]).expect("reads stdin");
    assert_eq!((request.name.as_str(), request.rules.len()), ("auditor", 1));
}

#[test]
fn bad_policy_files_are_usage_errors_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("p.json");
    for (text, expected) in [
        (r#"{"rules":[]}"#, "--name: required, as "),
        (r#"{"name":"x","rules":[{"path":"a"}]}"#, "p.json: rules[0]: missing field `capabilities`"),
        (r#"{"name":"x","rules":[],"owner":"me"}"#, "p.json: owner: unknown field"),
        (r#"{"name":"x"}"#, "p.json: rules: required"),
        ("[", "p.json: body: not valid JSON"),
    ] {
        std::fs::write(&file, text).expect("write");
        let err = read_policy(&file, None, std::io::empty()).expect_err("refused");
        assert!(err.to_string().contains(expected), "{text}: {err}");
        assert_eq!(err.exit_code(), 64);
    }
    let err = read_policy(&dir.path().join("missing.json"), None, std::io::empty()).expect_err("refused");
    assert!(err.to_string().starts_with("cannot read "), "{err}");
}

#[test]
fn capabilities_print_one_line_per_path_in_the_order_given() {
    let map = CapabilityMap {
        capabilities: [
            ("tasks/core/util/echo".to_owned(), vec!["create".to_owned(), "read".to_owned()]),
            ("audit".to_owned(), vec!["deny".to_owned()]),
        ]
        .into_iter()
        .collect(),
    };
    let paths = ["tasks/core/util/echo", "policies/x", "audit"].map(str::to_owned);
    let mut out = Vec::new();
    write_capability_lines(&mut out, &paths, &map).expect("writes");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "tasks/core/util/echo\tcreate,read\npolicies/x\tdeny\naudit\tdeny\n"
    );
}

#[test]
fn audit_list_flags_become_the_request() {
    let cli = Cli::try_parse_from([
        "legion",
        "audit",
        "list",
        "--principal",
        "api-key/1",
        "--action",
        "authorize",
        "--decision",
        "deny",
        "--resource-prefix",
        "tasks/",
        "--since",
        "2026-01-01T00:00:00Z",
        "--until",
        "2026-01-01T02:00:00+02:00",
        "--limit",
        "10",
        "--page-token",
        "t",
    ])
    .expect("parses");
    let crate::args::Command::Audit { command: AuditCommand::List(list) } = cli.command else { panic!("audit list") };
    let request = audit_request(list);
    assert_eq!(
        (request.principal.as_str(), request.action.as_str(), request.decision.as_str()),
        ("api-key/1", "authorize", "deny")
    );
    assert_eq!((request.resource_prefix.as_str(), request.limit, request.page_token.as_str()), ("tasks/", 10, "t"));
    assert_eq!(request.since.map(|t| t.seconds), Some(1_767_225_600));
    assert_eq!(request.until.map(|t| t.seconds), Some(1_767_225_600), "offsets are honoured");
    assert_eq!(audit_request(AuditList::default()), v1::ListAuditRequest::default());
}

/// The metadata of interest of a call, as a JSON object (absent keys are null).
fn metadata_json<T>(request: &Request<T>) -> Value {
    let get = |key: &str| request.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
    json!({"x-api-key": get("x-api-key"), "authorization": get("authorization")})
}

/// An `AuthService` that answers with the credentials it received.
struct Echo;

#[tonic::async_trait]
impl AuthService for Echo {
    async fn create_api_key(
        &self,
        request: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        let r = request.into_inner();
        let key = v1::ApiKey {
            id: "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e".into(),
            name: r.name,
            policies: r.policies,
            created_at: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 }),
            expires_at: (r.ttl_s > 0).then_some(prost_types::Timestamp { seconds: 1_767_225_600 + 60, nanos: 0 }),
            revoked_at: None,
            created_by: "api-key/admin".into(),
        };
        Ok(Response::new(v1::CreateApiKeyResponse { api_key: Some(key), key: "lgn_new_secret".into() }))
    }
    async fn list_api_keys(
        &self,
        _: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn revoke_api_key(
        &self,
        _: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::RevokeApiKeyResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn issue_token(
        &self,
        request: Request<v1::IssueTokenRequest>,
    ) -> Result<Response<v1::IssueTokenResponse>, Status> {
        let token = format!("jwt-for-{}", request.into_inner().api_key);
        Ok(Response::new(v1::IssueTokenResponse { token, expires_at: None }))
    }
    async fn get_jwks(&self, _: Request<v1::GetJwksRequest>) -> Result<Response<v1::GetJwksResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn capabilities(
        &self,
        request: Request<v1::CapabilitiesRequest>,
    ) -> Result<Response<v1::CapabilitiesResponse>, Status> {
        let r = request.into_inner();
        let granted = |path: &str| {
            if path.starts_with("tasks/") {
                vec!["read".to_owned(), "list".to_owned()]
            } else {
                vec!["deny".to_owned()]
            }
        };
        let capabilities = r.paths.iter().map(|p| (p.clone(), v1::Capabilities { capabilities: granted(p) })).collect();
        Ok(Response::new(v1::CapabilitiesResponse { capabilities }))
    }
    async fn who_am_i(&self, request: Request<v1::WhoAmIRequest>) -> Result<Response<v1::WhoAmIResponse>, Status> {
        if request.metadata().get("x-api-key").is_none() && request.metadata().get("authorization").is_none() {
            return Err(Status::unauthenticated("no credential"));
        }
        Ok(Response::new(v1::WhoAmIResponse {
            principal: metadata_json(&request).to_string(),
            policies: vec!["ops".into()],
        }))
    }
}

/// Serves [`Echo`] over TLS with the development control-plane certificate of `dir`.
async fn serve(dir: &Path) -> SocketAddr {
    let (listener, addr, config) = crate::testing::tls_listener(dir).await;
    let server = Server::builder().tls_config(config).expect("tls config").add_service(AuthServiceServer::new(Echo));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    addr
}

/// Runs `legion` with `args` against the server; returns the result and the output.
async fn legion(addr: SocketAddr, dir: &Path, args: &[&str]) -> (Result<u8, Error>, String) {
    let url = format!("https://localhost:{}", addr.port());
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let line = ["legion", "--control-plane", &url, "--ca", ca].into_iter().chain(args.iter().copied());
    let cli = Cli::try_parse_from(line).expect("parses");
    let mut out = Vec::new();
    let result = crate::run_with_input(cli, std::io::empty(), &mut out).await;
    (result, String::from_utf8(out).expect("utf-8"))
}

#[tokio::test]
async fn every_call_carries_the_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = serve(dir.path()).await;

    for (flags, expected) in [
        (&["--api-key", "lgn_abc"][..], json!({"x-api-key": "lgn_abc", "authorization": null})),
        (&["--token", "eyJ.a.b"], json!({"x-api-key": null, "authorization": "Bearer eyJ.a.b"})),
        (&["--api-key", "lgn_abc", "--token", "eyJ.a.b"], json!({"x-api-key": "lgn_abc", "authorization": null})),
    ] {
        let args: Vec<&str> = flags.iter().copied().chain(["auth", "whoami"]).collect();
        let (result, out) = legion(addr, dir.path(), &args).await;
        assert_eq!(result.expect("succeeds"), 0);
        let printed: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(printed["policies"], json!(["ops"]));
        let seen: Value = serde_json::from_str(printed["principal"].as_str().expect("principal")).expect("echo");
        assert_eq!(seen, expected, "{flags:?}");
    }

    let (result, _) = legion(addr, dir.path(), &["auth", "whoami"]).await;
    let err = result.expect_err("no credential");
    assert_eq!((err.to_string().as_str(), err.exit_code()), ("UNAUTHENTICATED: no credential", 1));
}

#[tokio::test]
async fn token_check_and_create_print_the_rest_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = serve(dir.path()).await;

    let (result, out) = legion(addr, dir.path(), &["--api-key", "lgn_abc", "auth", "token"]).await;
    assert_eq!(result.expect("succeeds"), 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        json!({"token": "jwt-for-lgn_abc", "expires_at": null})
    );
    let (result, out) = legion(addr, dir.path(), &["auth", "token"]).await;
    let err = result.expect_err("no key to exchange");
    assert!(err.to_string().starts_with("--api-key: required"), "{err}");
    assert_eq!((err.exit_code(), out.as_str()), (64, ""));

    let (result, out) =
        legion(addr, dir.path(), &["--token", "t", "policy", "check", "tasks/core/util/echo", "audit"]).await;
    assert_eq!(result.expect("succeeds"), 0);
    assert_eq!(out, "tasks/core/util/echo\tread,list\naudit\tdeny\n");
    let (_, out) = legion(addr, dir.path(), &["--token", "t", "policy", "check", "audit", "--json"]).await;
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json"), json!({"capabilities": {"audit": ["deny"]}}));

    let args =
        ["--token", "t", "api-key", "create", "--name", "ci", "--policy", "ops", "--policy", "dev", "--ttl-s", "60"];
    let (result, out) = legion(addr, dir.path(), &args).await;
    assert_eq!(result.expect("succeeds"), 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        json!({
            "id": "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e",
            "name": "ci",
            "key": "lgn_new_secret",
            "policies": ["ops", "dev"],
            "expires_at": "2026-01-01T00:01:00Z",
            "created_at": "2026-01-01T00:00:00Z",
        })
    );
}
