//! Middleware of the REST API: the `Host` allow-list, the request timeout, and the rewrite of any
//! error response not already in problem+json form.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::{PROBLEM_JSON, Problem, code_for_status};

/// Paths served whatever the `Host` header: probes and scrapers address pods by IP.
pub const HOST_EXEMPT_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Whether `host` (a `Host` header value, maybe with a port) is in `allowed` (`api.allowed_hosts`).
/// An empty list allows every host. An entry matches the whole value case-insensitively
/// (`api.example.com:8443`) or the host without its port (`api.example.com`); IPv6 literals keep their
/// brackets (`[::1]`).
pub fn host_allowed(allowed: &[String], host: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else { return false };
    let without_port = match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit()) && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    };
    allowed.iter().any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(without_port))
}

/// Middleware: refuses requests whose `Host` (or HTTP/2 `:authority`) is not in `api.allowed_hosts`
/// with 400, except on [`HOST_EXEMPT_PATHS`].
pub async fn check_host(State(allowed): State<Arc<[String]>>, request: Request, next: Next) -> Response {
    if allowed.is_empty() || HOST_EXEMPT_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let host = match request.headers().get(header::HOST) {
        Some(value) => value.to_str().ok().map(str::to_owned),
        None => request.uri().authority().map(|a| a.as_str().to_owned()),
    };
    if host_allowed(&allowed, host.as_deref()) {
        return next.run(request).await;
    }
    tracing::warn!(host = ?host, "request for a host not in api.allowed_hosts");
    Problem::invalid("host", format!("{} is not in api.allowed_hosts", host.as_deref().unwrap_or("(none)")))
        .into_response()
}

/// Middleware: answers 504 (`DEADLINE_EXCEEDED`) when the handler takes longer than
/// `api.request_timeout_ms`. Dropping the handler cancels its gRPC call.
pub async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, timeout_ms = limit.as_millis(), "request timed out");
            Problem::with_status(
                504,
                "DEADLINE_EXCEEDED",
                format!("no answer within api.request_timeout_ms ({} ms)", limit.as_millis()),
            )
            .into_response()
        }
    }
}

/// Largest error body kept as the `detail` of a rewritten error, in bytes.
const MAX_DETAIL_BYTES: usize = 4096;

/// Middleware: turns an error response (status 400 and up) that is not `application/problem+json`,
/// such as axum's own rejections, into a problem whose `detail` is the original text.
pub async fn ensure_problem(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_problem(response.headers().get(header::CONTENT_TYPE))
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_DETAIL_BYTES)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_ascii_lowercase());
    let mut rewritten = Problem::with_status(status.as_u16(), code_for_status(status), text).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name.clone(), value.clone());
        }
    }
    rewritten
}

fn is_problem(content_type: Option<&HeaderValue>) -> bool {
    content_type.and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn ok() -> Response {
        Response::new(Body::empty())
    }

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn empty_allow_list_allows_everything() {
        assert!(host_allowed(&[], None));
        assert!(host_allowed(&[], Some("evil.example")));
    }

    #[test]
    fn hosts_match_with_or_without_port() {
        let allowed = hosts(&["api.example.com", "localhost:4567", "[::1]"]);
        assert!(host_allowed(&allowed, Some("api.example.com")));
        assert!(host_allowed(&allowed, Some("API.example.com:8443")));
        assert!(host_allowed(&allowed, Some("localhost:4567")));
        assert!(!host_allowed(&allowed, Some("localhost:80")), "an entry with a port pins the port");
        assert!(host_allowed(&allowed, Some("[::1]:4567")));
        assert!(!host_allowed(&allowed, Some("evil.example")));
        assert!(!host_allowed(&allowed, Some("api.example.com.evil")));
        assert!(!host_allowed(&allowed, None));
        assert!(!host_allowed(&allowed, Some("")));
    }

    #[tokio::test]
    async fn plain_error_responses_become_problems() {
        let app = Router::new()
            .route("/plain", get(|| async { (StatusCode::UNPROCESSABLE_ENTITY, "name: bad") }))
            .route("/ok", get(|| async { ok() }))
            .layer(axum::middleware::from_fn(ensure_problem));
        let response = app.clone().oneshot(Request::get("/plain").body(Body::empty()).expect("request")).await;
        let response = response.expect("infallible");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.expect("body");
        let problem: Problem = serde_json::from_slice(&body).expect("problem json");
        assert_eq!((problem.detail.as_str(), problem.code.as_str()), ("name: bad", "INVALID_ARGUMENT"));

        let response = app.oneshot(Request::get("/ok").body(Body::empty()).expect("request")).await;
        assert_eq!(response.expect("infallible").status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn slow_handlers_time_out_with_504() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    ok()
                }),
            )
            .layer(axum::middleware::from_fn_with_state(Duration::from_millis(20), timeout));
        let response = app.oneshot(Request::get("/slow").body(Body::empty()).expect("request")).await;
        let response = response.expect("infallible");
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
