//! Every user-facing entry point wants a credential, and the harness's defaults carry one: without a
//! credential or with an unknown API key, gRPC answers `UNAUTHENTICATED`, REST `401
//! application/problem+json` and the CLI exits 1 naming `UNAUTHENTICATED`, while the bootstrap admin
//! key ([`legion_tests::ADMIN_KEY`]) is accepted by all three.

use std::time::Duration;

use legion_proto::v1::{GetTaskRequest, ListNodesRequest, SubmitTaskRequest};
use legion_tests::Auth;
use legion_tests::grpc;
use serde_json::json;
use tonic::Code;

use crate::env_with_executor;

/// An API key of the right shape that the control plane never issued.
const UNKNOWN_KEY: &str = "legion-e2e-not-an-issued-key-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_credential_are_refused_everywhere() {
    let (env, _executor) = env_with_executor().await;
    let gateway = env.start_gateway().await.expect("gateway starts");
    let submit = json!({"function": "core.util.echo", "args": {"from": "auth e2e"}});

    // The admin key works over gRPC, REST and the CLI.
    env.catalog().list_nodes(grpc::request(ListNodesRequest {})).await.expect("ListNodes as admin");
    let created = gateway.rest().post_json("/api/v1/tasks", &submit).await.expect("POST as admin");
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("task id").to_owned();
    let got = env.legion(&["task", "get", &id], Duration::from_secs(30)).await.expect("legion task get");
    assert_eq!(got.code, Some(0), "stderr: {}", got.stderr);

    for auth in [Auth::None, Auth::api_key(UNKNOWN_KEY)] {
        let mut tasks = env.tasks_as(&auth).expect("client");
        let request = SubmitTaskRequest {
            function: "core.util.echo".into(),
            args: Some(legion_proto::json_to_value(&json!({}))),
            ..SubmitTaskRequest::default()
        };
        let status = tasks.submit_task(grpc::request(request)).await.expect_err("SubmitTask refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{auth:?}: {status:?}");
        let status = tasks.get_task(grpc::request(GetTaskRequest { id: id.clone() })).await.expect_err("GetTask");
        assert_eq!(status.code(), Code::Unauthenticated, "{auth:?}: {status:?}");
        let mut catalog = env.catalog_as(&auth).expect("client");
        let status = catalog.list_nodes(grpc::request(ListNodesRequest {})).await.expect_err("ListNodes refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{auth:?}: {status:?}");

        let rest = gateway.rest().with_auth(auth.clone());
        for response in [
            rest.post_json("/api/v1/tasks", &submit).await.expect("POST"),
            rest.get(&format!("/api/v1/tasks/{id}")).await.expect("GET"),
        ] {
            assert_eq!(response.status, 401, "{auth:?}: {:?}", response.body);
            assert!(response.is_problem(), "{auth:?}: {:?}", response.content_type);
            assert_eq!(response.code(), "UNAUTHENTICATED", "{auth:?}: {:?}", response.body);
        }

        let cli = env.legion_as(&auth, &["task", "get", &id], Duration::from_secs(30)).await.expect("legion");
        assert_eq!(cli.code, Some(1), "{auth:?}: stdout: {}\nstderr: {}", cli.stdout, cli.stderr);
        assert!(cli.stderr.contains("UNAUTHENTICATED"), "{auth:?}: {}", cli.stderr);
        assert!(!cli.stderr.contains(UNKNOWN_KEY), "the CLI never prints the key: {}", cli.stderr);
    }
}
