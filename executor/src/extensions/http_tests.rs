//! Tests of `http.request.*` against a local axum server started by each test.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap as AxumHeaders, Method as AxumMethod, StatusCode};
use axum::response::{AppendHeaders, IntoResponse};
use axum::routing::{any, get};
use uuid::Uuid;

use super::*;

const CAP: usize = 1024;
/// The first bytes of a PNG file: not UTF-8, with NUL bytes.
const PNG_HEAD: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d];

async fn serve() -> SocketAddr {
    let app = Router::new()
        .route(
            "/json",
            get(|| async {
                (
                    [("content-type", "application/json; charset=utf-8")],
                    AppendHeaders([("x-custom", "a"), ("X-Multi", "1"), ("x-multi", "2")]),
                    r#"{"hello":"world","n":[1,2]}"#,
                )
            }),
        )
        .route("/problem", get(|| async { ([("content-type", "application/problem+json")], r#"{"title":"t"}"#) }))
        .route("/text", get(|| async { ([("content-type", "text/plain")], "plain text") }))
        .route("/bad-json", get(|| async { ([("content-type", "application/json")], "{not json") }))
        .route(
            "/echo",
            any(|method: AxumMethod, headers: AxumHeaders, body: Bytes| async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                axum::Json(json!({
                    "method": method.as_str(),
                    "content_type": header("content-type"),
                    "x_test": header("x-test"),
                    "body": String::from_utf8_lossy(&body),
                }))
            }),
        )
        .route(
            "/status/{code}",
            get(|Path(code): Path<u16>| async move {
                (StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT), format!("status {code}"))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/big", get(|| async { "x".repeat(CAP + 1) }))
        .route("/png", get(|| async { ([("content-type", "image/png")], PNG_HEAD.to_vec()) }))
        .route("/nul-text", get(|| async { ([("content-type", "text/plain")], "a\0b") }))
        .route("/nul-json", get(|| async { ([("content-type", "application/json")], r#"{"a":"x\u0000y"}"#) }))
        .route("/empty", get(|| async { StatusCode::NO_CONTENT.into_response() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

fn function(method: Method) -> HttpRequest {
    legion_common::install_crypto_provider();
    HttpRequest { client: Client::builder().build().expect("client"), method, max_body_bytes: CAP }
}

fn ctx() -> Context {
    Context::new(Uuid::now_v7(), 1, Duration::from_secs(30))
}

async fn call(method: Method, args: Value) -> Result<Value, FunctionError> {
    function(method).call(args, ctx()).await
}

fn failure(outcome: Result<Value, FunctionError>) -> String {
    match outcome {
        Err(FunctionError::Failed(m)) => m,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn rejection(outcome: Result<Value, FunctionError>) -> String {
    match outcome {
        Err(FunctionError::InvalidArgs(m)) => m,
        other => panic!("expected invalid args, got {other:?}"),
    }
}

#[tokio::test]
async fn get_parses_json_bodies_and_lowercases_headers() {
    let addr = serve().await;
    let result = call(Method::GET, json!({"url": format!("http://{addr}/json")})).await.expect("get");
    assert_eq!(result["status"], 200);
    assert_eq!(result["body"], json!({"hello": "world", "n": [1, 2]}));
    assert_eq!(result["headers"]["x-custom"], "a");
    assert_eq!(result["headers"]["x-multi"], "1, 2");
    assert_eq!(result["headers"]["content-type"], "application/json; charset=utf-8");
    let problem = call(Method::GET, json!({"url": format!("http://{addr}/problem")})).await.expect("problem");
    assert_eq!(problem["body"], json!({"title": "t"}));
}

#[tokio::test]
async fn text_and_unparsable_json_bodies_stay_text() {
    let addr = serve().await;
    let text = call(Method::GET, json!({"url": format!("http://{addr}/text")})).await.expect("text");
    assert_eq!(text["body"], "plain text");
    let bad = call(Method::GET, json!({"url": format!("http://{addr}/bad-json")})).await.expect("bad json");
    assert_eq!(bad["body"], "{not json");
    let empty = call(Method::GET, json!({"url": format!("http://{addr}/empty")})).await.expect("empty");
    assert_eq!((empty["status"].clone(), empty["body"].clone()), (json!(204), json!("")));
}

#[tokio::test]
async fn post_sends_json_values_as_json_and_strings_as_is() {
    let addr = serve().await;
    let url = format!("http://{addr}/echo");
    let json_body = call(Method::POST, json!({"url": url, "body": {"a": 1}, "headers": {"X-Test": "yes"}}))
        .await
        .expect("post json");
    assert_eq!(json_body["body"]["method"], "POST");
    assert_eq!(json_body["body"]["content_type"], "application/json");
    assert_eq!(json_body["body"]["x_test"], "yes");
    assert_eq!(
        serde_json::from_str::<Value>(json_body["body"]["body"].as_str().expect("str")).expect("json"),
        json!({"a": 1})
    );

    let text_body = call(Method::PUT, json!({"url": url, "body": "a=1&b=2", "headers": {"content-type": "text/csv"}}))
        .await
        .expect("put text");
    assert_eq!(text_body["body"]["method"], "PUT");
    assert_eq!(text_body["body"]["body"], "a=1&b=2");
    assert_eq!(text_body["body"]["content_type"], "text/csv");

    let own_type =
        call(Method::POST, json!({"url": url, "body": [1], "headers": {"content-type": "application/vnd.x+json"}}))
            .await
            .expect("own content type");
    assert_eq!(own_type["body"]["content_type"], "application/vnd.x+json");

    let deleted = call(Method::DELETE, json!({"url": url})).await.expect("delete");
    assert_eq!((deleted["body"]["method"].clone(), deleted["body"]["body"].clone()), (json!("DELETE"), json!("")));
}

#[tokio::test]
async fn any_status_succeeds_unless_listed_in_fail_on_status() {
    let addr = serve().await;
    let url = format!("http://{addr}/status/503");
    let ok = call(Method::GET, json!({"url": url})).await.expect("503 is a successful call");
    assert_eq!((ok["status"].clone(), ok["body"].clone()), (json!(503), json!("status 503")));
    let listed = call(Method::GET, json!({"url": url, "fail_on_status": [500, 503]})).await;
    assert_eq!(failure(listed), "http status 503 is listed in args.fail_on_status");
    let unlisted = call(Method::GET, json!({"url": url, "fail_on_status": [404]})).await.expect("not listed");
    assert_eq!(unlisted["status"], 503);
}

#[tokio::test]
async fn timeouts_fail_the_call() {
    let addr = serve().await;
    let started = std::time::Instant::now();
    let outcome = call(Method::GET, json!({"url": format!("http://{addr}/slow"), "timeout_ms": 200})).await;
    assert_eq!(failure(outcome), format!("request to http://{addr}/slow timed out after 200 ms"));
    assert!(started.elapsed() < Duration::from_secs(2));
    // The attempt's own timeout bounds the request too.
    let short = Context::new(Uuid::now_v7(), 1, Duration::from_millis(150));
    let outcome = function(Method::GET).call(json!({"url": format!("http://{addr}/slow")}), short).await;
    assert!(failure(outcome).contains("timed out"));
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let message = failure(call(Method::GET, json!({"url": format!("http://{addr}/")})).await);
    assert!(message.starts_with("request failed: "), "{message}");
    assert!(message.to_lowercase().contains("connect"), "{message}");
}

#[tokio::test]
async fn bodies_above_the_cap_fail_clearly() {
    let addr = serve().await;
    let message = failure(call(Method::GET, json!({"url": format!("http://{addr}/big")})).await);
    assert!(message.contains(&format!("exceeds the limit of {CAP} bytes (limits.max_result_bytes)")), "{message}");
}

#[tokio::test]
async fn cancellation_stops_the_request() {
    let addr = serve().await;
    let c = ctx();
    let cancel = c.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let outcome = function(Method::GET).call(json!({"url": format!("http://{addr}/slow")}), c).await;
    assert_eq!(failure(outcome), "request cancelled");
}

#[test]
fn invalid_args_name_the_arg() {
    let cases = [
        (json!({}), "args.url: required string"),
        (json!({"url": 5}), "args.url: required string"),
        (json!({"url": "ftp://x/y"}), "args.url: scheme must be http or https, got ftp"),
        (json!({"url": "file:///etc/passwd"}), "args.url: scheme must be http or https, got file"),
        (json!({"url": "http://x", "headers": {"a": 1}}), "args.headers.a: must be a string"),
        (json!({"url": "http://x", "headers": ["a"]}), "args.headers: must be an object"),
        (json!({"url": "http://x", "headers": {"bad name": "v"}}), "args.headers.bad name: not a valid header name"),
        (json!({"url": "http://x", "headers": {"a": "line\nbreak"}}), "args.headers.a: not a valid header value"),
        (json!({"url": "http://x", "timeout_ms": -5}), "args.timeout_ms: must be a non-negative integer"),
        (
            json!({"url": "http://x", "fail_on_status": [700]}),
            "args.fail_on_status: must be an array of integers from 100 to 599",
        ),
        (
            json!({"url": "http://x", "fail_on_status": 500}),
            "args.fail_on_status: must be an array of integers from 100 to 599",
        ),
        (json!([]), "args: must be an object"),
    ];
    for (args, expected) in cases {
        assert_eq!(rejection(parse_args(&args).map(|_| Value::Null)), expected, "{args}");
    }
    let bad_url = rejection(parse_args(&json!({"url": "not a url"})).map(|_| Value::Null));
    assert!(bad_url.starts_with("args.url: not a valid URL"), "{bad_url}");
}

#[test]
fn parses_valid_args() {
    let parsed = parse_args(&json!({
        "url": "https://example.test/a?b=c", "headers": {"X-A": "1"}, "body": {"k": "v"},
        "timeout_ms": 1500, "fail_on_status": [500]
    }))
    .expect("valid");
    assert_eq!(parsed.url.as_str(), "https://example.test/a?b=c");
    assert_eq!(parsed.headers.get("x-a").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(parsed.body, Body::Json(json!({"k": "v"})));
    assert_eq!(parsed.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(parsed.fail_on_status, vec![500]);
    assert_eq!(parse_args(&json!({"url": "http://x", "body": null})).expect("null body").body, Body::None);
}

#[test]
fn content_types_that_are_json() {
    for yes in ["application/json", "Application/JSON; charset=utf-8", "application/problem+json"] {
        assert!(is_json_content_type(yes), "{yes}");
    }
    for no in ["text/plain", "application/jsonl", "text/json+html", ""] {
        assert!(!is_json_content_type(no), "{no}");
    }
    let body = |ct: Option<&str>, bytes: &[u8]| Value::Object(body_fields(ct, bytes));
    assert_eq!(body(Some("application/json"), b"[1]"), json!({"body": [1]}));
    assert_eq!(body(None, b"[1]"), json!({"body": "[1]"}));
    assert_eq!(body(Some("text/plain"), b""), json!({"body": ""}));
}

/// Regression: a binary body became a lossy string, and a body with a NUL character a result the
/// control plane could not store (PostgreSQL's JSONB refuses `\u0000`) after the executor counted a
/// success.
#[test]
fn binary_bodies_are_returned_as_base64() {
    let body = |ct: Option<&str>, bytes: &[u8]| Value::Object(body_fields(ct, bytes));
    assert_eq!(body(Some("text/plain"), &[0xff, b'a']), json!({"body": null, "body_base64": "/2E="}));
    assert_eq!(body(Some("text/plain"), b"a\0b"), json!({"body": null, "body_base64": "YQBi"}));
    // JSON whose strings hold NUL stays text: the escape sequence is plain ASCII.
    assert_eq!(body(Some("application/json"), br#"["\u0000"]"#), json!({"body": r#"["\u0000"]"#}));
    assert_eq!(body(Some("application/json"), br#"{"\u0000":1}"#), json!({"body": r#"{"\u0000":1}"#}));
    assert!(holds_nul(&json!({"a": [{"b": "x\u{0}"}]})));
    assert!(!holds_nul(&json!({"a": [{"b": "x"}]})));
}

#[tokio::test]
async fn binary_responses_carry_body_base64() {
    use base64::Engine;
    let addr = serve().await;
    let png = call(Method::GET, json!({"url": format!("http://{addr}/png")})).await.expect("png");
    assert_eq!(png["body"], Value::Null);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(png["body_base64"].as_str().expect("base64 string"))
        .expect("standard base64");
    assert_eq!(decoded, PNG_HEAD);
    assert_eq!(png["headers"]["content-type"], "image/png");
    let nul = call(Method::GET, json!({"url": format!("http://{addr}/nul-text")})).await.expect("nul");
    assert_eq!((nul["body"].clone(), nul["body_base64"].clone()), (Value::Null, json!("YQBi")));
    let nul_json = call(Method::GET, json!({"url": format!("http://{addr}/nul-json")})).await.expect("nul json");
    assert_eq!(nul_json["body"], json!(r#"{"a":"x\u0000y"}"#));
    let text = call(Method::GET, json!({"url": format!("http://{addr}/text")})).await.expect("text");
    assert!(text.get("body_base64").is_none(), "only binary bodies carry body_base64");
    // Every result is storable by PostgreSQL: no NUL character in any string.
    for result in [&png, &nul, &nul_json] {
        assert!(!holds_nul(result), "{result}");
    }
}
