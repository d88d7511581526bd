//! Middleware of the REST API: the request-head limits, the `Host` allow-list, the `x-request-id`
//! clean-up, the request timeout, and the rewrite of any error response not already in problem+json
//! form.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use legion_common::ErrorCode;

use crate::client::{CREDENTIAL_HEADERS, FORWARDED_HEADERS};
use crate::problem::{PROBLEM_JSON, Problem, code_for_status};

/// Longest credential, in bytes: an `x-api-key` value or the token of `authorization: Bearer <token>`.
/// The control plane's own limit (`MAX_CREDENTIAL_BYTES` of its `auth::credential` module): a longer
/// credential could never be accepted, so the gateway refuses it before forwarding it.
pub const MAX_CREDENTIAL_BYTES: usize = 8192;

/// Longest value of any one request header, in bytes (8 KiB), except `authorization`
/// ([`MAX_AUTHORIZATION_BYTES`]). A longer one is refused with 431.
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// Longest `authorization` value, in bytes: the `Bearer ` scheme and a token of
/// [`MAX_CREDENTIAL_BYTES`], so that every credential the control plane accepts gets through.
pub const MAX_AUTHORIZATION_BYTES: usize = MAX_CREDENTIAL_BYTES + "Bearer ".len();

/// Largest total size of a request's headers, in bytes (32 KiB): the lengths of every name and value.
/// A larger head is refused with 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Most header fields in one request (a repeated name counts once per value; `x-request-id`, which the
/// gateway adds when absent, is not counted). 100 is hyper's own limit for HTTP/1.1, which answers a
/// bare 431 above it; this applies the same limit to HTTP/2.
pub const MAX_HEADER_COUNT: usize = 100;

/// Largest total size of the header values passed on to the control plane ([`FORWARDED_HEADERS`]), in
/// bytes (10 KiB). The control plane's HTTP/2 server accepts header lists of 16 KiB (hyper's default
/// `SETTINGS_MAX_HEADER_LIST_SIZE`, counting 32 bytes per field besides names and values); above that it
/// resets the stream, or, far above, the connection, which is the one channel every caller of this
/// gateway shares. 10 KiB holds one credential of [`MAX_AUTHORIZATION_BYTES`] and a request id, and
/// leaves room for gRPC's own headers and the caller's address.
pub const MAX_FORWARDED_BYTES: usize = 10 * 1024;

// One credential at its limit and a request id fit in the forwarded budget, two credentials do not,
// and the budget leaves room for gRPC's own headers under the control plane's 16 KiB header list.
const _: () = {
    assert!(MAX_AUTHORIZATION_BYTES + MAX_REQUEST_ID_BYTES <= MAX_FORWARDED_BYTES);
    assert!(MAX_HEADER_VALUE_BYTES + MAX_REQUEST_ID_BYTES <= MAX_FORWARDED_BYTES);
    assert!(2 * MAX_CREDENTIAL_BYTES > MAX_FORWARDED_BYTES);
    assert!(MAX_FORWARDED_BYTES + 2048 <= 16 * 1024);
};

/// Longest request target (the URI as received: path and query, and the authority of an
/// absolute-form target), in bytes (8 KiB). A longer one is refused with 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Longest `x-request-id` kept, in bytes, as the control plane's `MAX_REQUEST_ID_BYTES`.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The request id header.
const REQUEST_ID: &str = "x-request-id";

/// Longest header name or host quoted in a problem's `detail`, in bytes; longer ones are cut.
const MAX_QUOTED_BYTES: usize = 128;

/// Caller input cut for quoting in problems and logs.
pub(crate) use legion_common::text::truncate as quoted;

/// Middleware, outermost: drops an `x-request-id` that is not exactly one value of 1 to
/// [`MAX_REQUEST_ID_BYTES`] visible ASCII bytes, so that a fresh one is generated in its place. The
/// request id is echoed in the response, logged and forwarded; an unusable one is replaced, as the
/// control plane does, rather than refused.
pub async fn sanitize_request_id(mut request: Request, next: Next) -> Response {
    let mut values = request.headers().get_all(REQUEST_ID).iter();
    let usable = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => {
            (1..=MAX_REQUEST_ID_BYTES).contains(&value.len()) && value.as_bytes().iter().all(u8::is_ascii_graphic)
        }
        (Some(_), Some(_)) => false,
    };
    if !usable {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

/// A `431 Request Header Fields Too Large` problem (`INVALID_ARGUMENT`: resending the same request
/// cannot succeed).
fn headers_too_large(detail: String) -> Response {
    tracing::warn!(%detail, "request headers refused");
    Problem::with_status(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.as_u16(),
        ErrorCode::InvalidArgument.name(),
        detail,
    )
    .into_response()
}

/// Middleware: refuses, before anything is forwarded, a request whose head is too large or ambiguous:
///
/// - a target longer than [`MAX_URI_BYTES`]: 414;
/// - more than [`MAX_HEADER_COUNT`] header fields: 431;
/// - a header value longer than [`MAX_HEADER_VALUE_BYTES`] ([`MAX_AUTHORIZATION_BYTES`] for
///   `authorization`): 431 naming the header;
/// - headers larger than [`MAX_HEADER_BYTES`] in total: 431;
/// - a credential header ([`CREDENTIAL_HEADERS`]) given more than once: 400 naming it (the control
///   plane would read only the first, an intermediary maybe the last);
/// - forwarded header values ([`FORWARDED_HEADERS`]) larger than [`MAX_FORWARDED_BYTES`] together (with
///   the limits above, only both credential headers at once can be): 431 naming the credential headers.
///
/// Problems name the header, never its value (it may be a credential).
pub async fn limit_headers(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let target_bytes =
        uri.authority().map_or(0, |a| a.as_str().len()) + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target_bytes > MAX_URI_BYTES {
        tracing::warn!(target_bytes, "request target refused");
        return Problem::with_status(
            StatusCode::URI_TOO_LONG.as_u16(),
            code_for_status(StatusCode::URI_TOO_LONG),
            format!("uri: longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let headers = request.headers();
    // `x-request-id` is one short value by now, maybe added by the gateway: not counted.
    let fields = headers.len() - usize::from(headers.contains_key(REQUEST_ID));
    if fields > MAX_HEADER_COUNT {
        return headers_too_large(format!("headers: more than {MAX_HEADER_COUNT} fields"));
    }
    let mut total = 0;
    for (name, value) in headers {
        let limit = if name == header::AUTHORIZATION { MAX_AUTHORIZATION_BYTES } else { MAX_HEADER_VALUE_BYTES };
        if value.len() > limit {
            return headers_too_large(format!(
                "{}: value larger than {limit} bytes",
                quoted(name.as_str(), MAX_QUOTED_BYTES)
            ));
        }
        total += name.as_str().len() + value.len();
    }
    if total > MAX_HEADER_BYTES {
        return headers_too_large(format!("headers: larger than {MAX_HEADER_BYTES} bytes in total"));
    }
    for name in CREDENTIAL_HEADERS {
        if headers.get_all(*name).iter().nth(1).is_some() {
            tracing::warn!(header = name, "credential header given more than once");
            return Problem::invalid(name, "given more than once").into_response();
        }
    }
    let forwarded: usize = FORWARDED_HEADERS.iter().flat_map(|n| headers.get_all(*n)).map(HeaderValue::len).sum();
    if forwarded > MAX_FORWARDED_BYTES {
        // The request id is at most MAX_REQUEST_ID_BYTES by now: the credentials are what is too large.
        let present: Vec<&str> = CREDENTIAL_HEADERS.iter().copied().filter(|n| headers.contains_key(*n)).collect();
        return headers_too_large(format!("{}: larger than {MAX_FORWARDED_BYTES} bytes together", present.join(", ")));
    }
    next.run(request).await
}

/// Paths exempt from the `api.allowed_hosts` allow-list (not from the other `Host` checks): Kubernetes
/// probes (kubelet's `httpGet` sends `Host: <pod IP>:<port>`) and Prometheus scrapes address a pod by
/// IP, which no list of DNS names can hold. They read no credential and answer nothing a foreign `Host`
/// could abuse (a fixed body, the control plane's readiness, request counters). The other public
/// paths, `/api/v1/openapi.json` and `/.well-known/jwks.json`, are checked.
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

/// Middleware: the `Host` checks, all answered with 400 `INVALID_ARGUMENT` naming `host`.
///
/// On every path: more than one `Host` header is refused (RFC 9112 section 3.2), and so is a request
/// whose target carries an authority (an absolute-form target, `GET http://h/…`, or HTTP/2's
/// `:authority`) that differs from its `Host` header (ASCII case aside), as HTTP/2 asks (RFC 9113
/// section 8.3.1): the two must not name different hosts to different readers.
///
/// Then, except on [`HOST_EXEMPT_PATHS`], the host the request is for, the target's authority when
/// it has one, else the `Host` header, must be in `api.allowed_hosts` (when the list is not empty).
pub async fn check_host(State(allowed): State<Arc<[String]>>, request: Request, next: Next) -> Response {
    let mut values = request.headers().get_all(header::HOST).iter();
    let host_header = values.next();
    if values.next().is_some() {
        tracing::warn!("request with more than one Host header");
        return Problem::invalid("host", "given more than once").into_response();
    }
    let authority = request.uri().authority().map(|a| a.as_str());
    if let (Some(authority), Some(header)) = (authority, host_header)
        && !header.to_str().is_ok_and(|h| h.trim().eq_ignore_ascii_case(authority))
    {
        tracing::warn!(authority = %quoted(authority, MAX_QUOTED_BYTES), "Host header differs from the target's authority");
        return Problem::invalid(
            "host",
            format!("differs from the request target's authority {}", quoted(authority, MAX_QUOTED_BYTES)),
        )
        .into_response();
    }
    if allowed.is_empty() || HOST_EXEMPT_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let host = authority.map(str::to_owned).or_else(|| host_header.and_then(|v| v.to_str().ok()).map(str::to_owned));
    if host_allowed(&allowed, host.as_deref()) {
        return next.run(request).await;
    }
    let shown = host.as_deref().map_or_else(|| "(none)".to_owned(), |h| quoted(h, MAX_QUOTED_BYTES));
    tracing::warn!(host = %shown, "request for a host not in api.allowed_hosts");
    Problem::invalid("host", format!("{shown} is not in api.allowed_hosts")).into_response()
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
