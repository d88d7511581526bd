//! Bad submits are refused naming the field: `400 application/problem+json` with `code`
//! `INVALID_ARGUMENT` over REST, `INVALID_ARGUMENT` over gRPC.

use legion_proto::v1::SubmitTaskRequest;
use legion_tests::rest::Response;
use serde_json::{Value, json};
use tonic::Code;

use crate::env_with_executor;

/// `limits.max_payload_bytes` by default (1 MiB).
const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Echo args whose serialized JSON is exactly one byte over the limit.
fn oversize_args() -> Value {
    let overhead = json!({"data": ""}).to_string().len();
    let args = json!({"data": "x".repeat(MAX_PAYLOAD_BYTES + 1 - overhead)});
    assert_eq!(args.to_string().len(), MAX_PAYLOAD_BYTES + 1);
    args
}

fn assert_problem(response: &Response, field: &str) {
    assert_eq!(response.status, 400, "{field}: {:?}", response.body);
    assert!(response.is_problem(), "{field}: content type {:?}", response.content_type);
    assert_eq!(response.code(), "INVALID_ARGUMENT", "{field}: {:?}", response.body);
    assert_eq!(response.body["status"], 400, "{field}: {:?}", response.body);
    assert!(response.detail().contains(field), "the detail names {field}: {:?}", response.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refuses_bad_submits_with_problem_json_naming_the_field() {
    let (env, _executor) = env_with_executor().await;
    let gateway = env.start_gateway().await.expect("gateway starts");
    let rest = gateway.rest();

    let unknown = rest
        .post_json("/api/v1/tasks", &json!({"function": "nosuch.runner.function", "args": {}}))
        .await
        .expect("unknown function");
    assert_problem(&unknown, "function");
    assert!(unknown.detail().contains("nosuch.runner.function"), "{:?}", unknown.body);

    let wrong_type = rest
        .post_json("/api/v1/tasks", &json!({"function": "core.util.echo", "args": {}, "priority": "high"}))
        .await
        .expect("wrong type");
    assert_problem(&wrong_type, "priority");

    let broken = rest.post_raw("/api/v1/tasks", b"{\"function\": \"core.util.echo\", \"args\": {".to_vec()).await;
    let broken = broken.expect("broken json");
    assert_eq!(broken.status, 400, "{:?}", broken.body);
    assert!(broken.is_problem(), "{:?}", broken.content_type);

    let oversize = rest
        .post_json("/api/v1/tasks", &json!({"function": "core.util.echo", "args": oversize_args()}))
        .await
        .expect("oversize args");
    assert_problem(&oversize, "args");

    // The limit is a limit, not an off-by-one: a payload at it is accepted.
    let at_limit = {
        let mut args = oversize_args();
        let data = args["data"].as_str().map(|s| s[1..].to_owned()).unwrap_or_default();
        args["data"] = Value::String(data);
        args
    };
    let accepted = rest
        .post_json("/api/v1/tasks", &json!({"function": "core.util.echo", "args": at_limit}))
        .await
        .expect("args at the limit");
    assert_eq!(accepted.status, 201, "{}", accepted.body.to_string().chars().take(300).collect::<String>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refuses_bad_submits_with_invalid_argument_naming_the_field() {
    let (env, _executor) = env_with_executor().await;
    let submit = |function: &str, args: Value| SubmitTaskRequest {
        function: function.to_owned(),
        args: Some(legion_proto::json_to_value(&args)),
        ..SubmitTaskRequest::default()
    };
    let cases = [
        ("function", submit("nosuch.runner.function", json!({}))),
        ("function", submit("not-a-function-name", json!({}))),
        ("args", submit("core.util.echo", oversize_args())),
        ("args", submit("core.util.echo", json!(["not", "an", "object"]))),
        ("priority", SubmitTaskRequest { priority: 10, ..submit("core.util.echo", json!({})) }),
        ("max_attempts", SubmitTaskRequest { max_attempts: Some(0), ..submit("core.util.echo", json!({})) }),
        ("timeout_ms", SubmitTaskRequest { timeout_ms: Some(0), ..submit("core.util.echo", json!({})) }),
    ];
    for (field, request) in cases {
        let status = env.submit_request(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "the message names {field}: {:?}", status.message());
    }
}
