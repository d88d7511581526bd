//! A small client for the gateway's REST API (DESIGN.md section 7) and its `application/problem+json`
//! errors. It sends the bootstrap admin key (`X-API-Key`) unless given another credential
//! ([`RestClient::with_auth`]) or extra headers ([`RestClient::with_header`]).

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::auth::Auth;

/// The media type of REST errors (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// REST call failures that are not HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be sent or the response not read.
    #[error("{method} {url}: {source}")]
    Http {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The reqwest error.
        source: reqwest::Error,
    },
    /// The response body is not JSON.
    #[error("{method} {url}: status {status}, body is not json: {body}")]
    NotJson {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The body as received.
        body: String,
    },
}

/// A response: status, content type, headers and JSON body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `content-type` header, empty when absent.
    pub content_type: String,
    /// The parsed body; `null` when the body is empty (e.g. `204 No Content`).
    pub body: Value,
    /// Every response header.
    pub headers: HeaderMap,
}

impl Response {
    /// The value of header `name` (case-insensitive), when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the body is `application/problem+json` (parameters ignored).
    pub fn is_problem(&self) -> bool {
        self.content_type.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(PROBLEM_JSON))
    }

    /// The problem's `code` (the gRPC code name), empty when absent.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// The problem's `detail`, empty when absent.
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

/// The gateway at `base` (`http://127.0.0.1:<port>`) and the credential its calls carry. Cloning is
/// cheap (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct RestClient {
    base: String,
    http: reqwest::Client,
    auth: Auth,
    headers: Vec<(String, String)>,
}

impl RestClient {
    /// A client for the gateway at `base` that sends the bootstrap admin key ([`Auth::admin`]).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        crate::init();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build()?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http, auth: Auth::admin(), headers: Vec::new() })
    }

    /// The same gateway, sending `auth` instead ([`Auth::None`]: no credential header at all).
    #[must_use]
    pub fn with_auth(&self, auth: Auth) -> Self {
        Self { auth, ..self.clone() }
    }

    /// The same gateway and credential, plus header `name: value` on every call (sent after the
    /// credential header, so a raw `X-API-Key` or `Authorization` is added next to it; combine with
    /// [`Auth::None`] to send only the raw one). A value that is not a valid header value makes each
    /// call fail with [`Error::Http`].
    #[must_use]
    pub fn with_header(&self, name: &str, value: &str) -> Self {
        let mut client = self.clone();
        client.headers.push((name.to_owned(), value.to_owned()));
        client
    }

    /// The credential this client sends.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn builder(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let mut builder = self.http.request(method, url);
        if let Some((name, value)) = self.auth.header() {
            builder = builder.header(name, value);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
    }

    /// `{method} {base}{path}`, with `body` as JSON when given.
    ///
    /// # Errors
    /// [`Error`] when the call fails or a non-empty body is not JSON.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Response, Error> {
        let url = format!("{}{path}", self.base);
        let mut builder = self.builder(method.clone(), &url);
        if let Some(body) = body {
            builder = builder.json(body);
        }
        read(method_name(&method), url, builder.send().await).await
    }

    /// `GET {base}{path}`.
    ///
    /// # Errors
    /// [`Error`] when the call fails or the body is not JSON.
    pub async fn get(&self, path: &str) -> Result<Response, Error> {
        self.send(Method::GET, path, None).await
    }

    /// `POST {base}{path}` with a JSON body.
    ///
    /// # Errors
    /// [`Error`] when the call fails or the body is not JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Response, Error> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PUT {base}{path}` with a JSON body.
    ///
    /// # Errors
    /// [`Error`] when the call fails or the body is not JSON.
    pub async fn put_json(&self, path: &str, body: &Value) -> Result<Response, Error> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// `DELETE {base}{path}`.
    ///
    /// # Errors
    /// [`Error`] when the call fails or a non-empty body is not JSON.
    pub async fn delete(&self, path: &str) -> Result<Response, Error> {
        self.send(Method::DELETE, path, None).await
    }

    /// `POST {base}{path}` with raw bytes labelled `application/json` (for malformed bodies).
    ///
    /// # Errors
    /// [`Error`] when the call fails or the body is not JSON.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<Response, Error> {
        let url = format!("{}{path}", self.base);
        let sent = self
            .builder(Method::POST, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        read("POST", url, sent).await
    }
}

/// The method's name as a static string, for error messages.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "request",
    }
}

async fn read(
    method: &'static str,
    url: String,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<Response, Error> {
    let response = match sent {
        Ok(r) => r,
        Err(source) => return Err(Error::Http { method, url, source }),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type =
        headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = match response.text().await {
        Ok(t) => t,
        Err(source) => return Err(Error::Http { method, url, source }),
    };
    if text.trim().is_empty() {
        return Ok(Response { status, content_type, body: Value::Null, headers });
    }
    match serde_json::from_str(&text) {
        Ok(body) => Ok(Response { status, content_type, body, headers }),
        Err(_) => Err(Error::NotJson { method, url, status, body: text }),
    }
}

/// Waits until the gateway behind `rest` answers `GET /readyz` with 200, at most `timeout`.
///
/// # Errors
/// [`crate::wait::Timeout`] with the last answer.
pub async fn until_ready(rest: &RestClient, timeout: std::time::Duration) -> Result<(), crate::wait::Timeout> {
    crate::wait::eventually("gateway ready", timeout, || {
        let rest = rest.clone();
        async move {
            let reply = rest.get("/readyz").await.map_err(|e| e.to_string())?;
            if reply.status == 200 { Ok(()) } else { Err(format!("/readyz {}: {}", reply.status, reply.body)) }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap as RequestHeaders;
    use axum::response::IntoResponse;
    use serde_json::json;

    use super::*;

    /// A server that answers every request with the credential headers it received, and `204` on
    /// DELETE.
    async fn echo_headers() -> String {
        let header = |h: &RequestHeaders, name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let app = axum::Router::new().fallback(move |method: axum::http::Method, h: RequestHeaders| async move {
            if method == axum::http::Method::DELETE {
                return axum::http::StatusCode::NO_CONTENT.into_response();
            }
            let body = json!({"x-api-key": header(&h, "x-api-key"), "authorization": header(&h, "authorization")});
            axum::Json(body).into_response()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn the_admin_key_is_sent_by_default_and_other_credentials_on_request() {
        let rest = RestClient::new(&echo_headers().await).expect("client");
        let seen = rest.get("/x").await.expect("get").body;
        assert_eq!(seen, json!({"x-api-key": crate::ADMIN_KEY, "authorization": null}));
        let seen = rest.with_auth(Auth::None).post_json("/x", &json!({})).await.expect("post").body;
        assert_eq!(seen, json!({"x-api-key": null, "authorization": null}));
        let seen = rest.with_auth(Auth::bearer("t1")).put_json("/x", &json!({})).await.expect("put").body;
        assert_eq!(seen, json!({"x-api-key": null, "authorization": "Bearer t1"}));
        let raw = rest.with_auth(Auth::None).with_header("Authorization", "Basic Zm9vOmJhcg==");
        let seen = raw.post_raw("/x", b"{}".to_vec()).await.expect("post raw").body;
        assert_eq!(seen, json!({"x-api-key": null, "authorization": "Basic Zm9vOmJhcg=="}));
        assert_eq!(rest.auth(), &Auth::admin(), "with_auth leaves the original client alone");
        let deleted = rest.delete("/x").await.expect("an empty body is not an error");
        assert_eq!((deleted.status, deleted.body), (204, Value::Null));
    }

    #[test]
    fn problems_are_recognised_with_parameters() {
        let r = Response {
            status: 400,
            content_type: "application/problem+json; charset=utf-8".into(),
            body: json!({"code": "INVALID_ARGUMENT", "detail": "args: too large"}),
            headers: HeaderMap::new(),
        };
        assert!(r.is_problem());
        assert_eq!((r.code(), r.detail()), ("INVALID_ARGUMENT", "args: too large"));
        let plain = Response {
            status: 200,
            content_type: "application/json".into(),
            body: json!({}),
            headers: HeaderMap::new(),
        };
        assert!(!plain.is_problem());
        assert_eq!((plain.code(), plain.detail()), ("", ""));
    }
}
