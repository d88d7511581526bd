//! The `http` extension, runner `request`: `http.request.{get,post,put,delete}` with one shared
//! `reqwest` client (rustls with the ring provider, system roots, connection pooling).
//!
//! Args:
//! - `url` (required string): an `http://` or `https://` URL;
//! - `headers` (object of strings): request headers;
//! - `body`: a string is sent as-is; any other JSON value (object, array, number, boolean) is sent as
//!   JSON with `content-type: application/json` unless `headers` sets one; `null` or absent sends none;
//! - `timeout_ms` (non-negative integer): limit for the whole exchange, body included; the attempt's
//!   own `timeout_ms` bounds it as well;
//! - `fail_on_status` (array of integers 100-599): statuses that fail the call.
//!
//! Result: `{"status": u16, "headers": {lowercase name: value}, "body": …}`. A repeated response header
//! is joined with `", "`. The body is:
//! - parsed JSON when the response's content type is `application/json` or `*+json`, it parses, and
//!   no string or key in it holds a NUL character;
//! - otherwise the text, when the body is valid UTF-8 without a NUL character (an empty body is `""`);
//! - otherwise (binary content: invalid UTF-8, or a NUL character, which PostgreSQL's JSONB cannot
//!   store) `"body": null` plus `"body_base64": "<the bytes in standard base64, with padding>"`. The key
//!   `body_base64` is present only then. Base64 is 4/3 of the body's size, and the whole result must
//!   fit in `limits.max_result_bytes`.
//!
//! Any HTTP status is a success unless listed in `fail_on_status`. Transport errors (DNS, connect,
//! TLS, reset), timeouts, and a response body larger than the cap (`limits.max_result_bytes`) fail
//! the call.

use crate::client::error_chain;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Url};
use serde_json::{Map, Value, json};

use super::args::Args;
use super::{Context, Extension, Function, FunctionError, FunctionSpec, RunnerSpec, VERSION};

/// Longest time to establish a TCP (and TLS) connection, whatever the request's timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `http` extension. `max_body_bytes` caps the response body read by each call.
///
/// # Errors
/// When the HTTP client cannot be built (no rustls crypto provider installed).
pub fn extension(max_body_bytes: usize) -> Result<Extension, reqwest::Error> {
    let client = Client::builder()
        .user_agent(concat!("legion-executor/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .build()?;
    let function = |method: Method| -> Arc<dyn Function> {
        Arc::new(HttpRequest { client: client.clone(), method, max_body_bytes })
    };
    Ok(Extension {
        name: "http",
        version: VERSION,
        runners: vec![RunnerSpec {
            name: "request",
            functions: vec![
                FunctionSpec { name: "get", description: "HTTP GET args.url", function: function(Method::GET) },
                FunctionSpec {
                    name: "post",
                    description: "HTTP POST args.body (JSON or text) to args.url",
                    function: function(Method::POST),
                },
                FunctionSpec {
                    name: "put",
                    description: "HTTP PUT args.body (JSON or text) to args.url",
                    function: function(Method::PUT),
                },
                FunctionSpec {
                    name: "delete",
                    description: "HTTP DELETE args.url",
                    function: function(Method::DELETE),
                },
            ],
        }],
    })
}

/// One HTTP method over the shared client.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    client: Client,
    method: Method,
    max_body_bytes: usize,
}

/// The validated args of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestArgs {
    /// The URL (http or https).
    pub url: Url,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body to send.
    pub body: Body,
    /// Limit for the exchange.
    pub timeout: Option<Duration>,
    /// Statuses that fail the call.
    pub fail_on_status: Vec<u16>,
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body.
    None,
    /// Sent as-is.
    Text(String),
    /// Sent as JSON.
    Json(Value),
}

fn invalid(message: String) -> FunctionError {
    FunctionError::InvalidArgs(message)
}

/// Validates the args (see the module docs).
///
/// # Errors
/// [`FunctionError::InvalidArgs`] naming the arg.
pub fn parse_args(args: &Value) -> Result<RequestArgs, FunctionError> {
    let a = Args::new(args)?;
    let raw_url = a.required_str("url")?;
    let url = Url::parse(raw_url).map_err(|e| invalid(format!("args.url: not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!("args.url: scheme must be http or https, got {}", url.scheme())));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in a.optional_string_map("headers")? {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("args.headers.{name}: not a valid header name")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("args.headers.{name}: not a valid header value")))?;
        headers.append(header, value);
    }
    let body = match a.get("body") {
        None => Body::None,
        Some(Value::String(s)) => Body::Text(s.clone()),
        Some(other) => Body::Json(other.clone()),
    };
    let timeout = a.optional_u64("timeout_ms")?.map(Duration::from_millis);
    let fail_on_status = a
        .optional_u64_list("fail_on_status", 100..=599)?
        .into_iter()
        .map(|s| u16::try_from(s).map_err(|_| invalid("args.fail_on_status: status out of range".into())))
        .collect::<Result<Vec<u16>, _>>()?;
    Ok(RequestArgs { url, headers, body, timeout, fail_on_status })
}

/// Whether a content type is JSON: `application/json` or a `+json` suffix, parameters ignored.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The response headers as `{lowercase name: value}`, repeated headers joined with `", "`.
fn headers_to_json(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                out.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    out
}

/// Whether a JSON value holds a NUL character in a string or an object key (PostgreSQL's JSONB cannot
/// store `\u0000`).
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// The body's fields of the result (see the module docs): `body` as JSON when `content_type` says so,
/// it parses and holds no NUL; else as text when it is UTF-8 without NUL; else `body: null` and
/// `body_base64`.
pub fn body_fields(content_type: Option<&str>, bytes: &[u8]) -> Map<String, Value> {
    let mut fields = Map::new();
    if content_type.is_some_and(is_json_content_type)
        && let Ok(value) = serde_json::from_slice::<Value>(bytes)
        && !holds_nul(&value)
    {
        fields.insert("body".into(), value);
        return fields;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => {
            fields.insert("body".into(), Value::String(text.to_owned()));
        }
        _ => {
            fields.insert("body".into(), Value::Null);
            fields.insert("body_base64".into(), Value::String(BASE64.encode(bytes)));
        }
    }
    fields
}

impl HttpRequest {
    async fn exchange(&self, args: RequestArgs) -> Result<Value, FunctionError> {
        let failed = |what: &str, e: &reqwest::Error| FunctionError::Failed(format!("{what}: {}", error_chain(e)));
        let mut request = self.client.request(self.method.clone(), args.url.clone()).headers(args.headers);
        request = match args.body {
            Body::None => request,
            Body::Text(text) => request.body(text),
            Body::Json(value) => request.json(&value),
        };
        let mut response = request.send().await.map_err(|e| failed("request failed", &e))?;
        let status = response.status().as_u16();
        if let Some(length) = response.content_length()
            && length > self.max_body_bytes as u64
        {
            return Err(self.too_large(length));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed("reading the response body failed", &e))? {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(self.too_large((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        if args.fail_on_status.contains(&status) {
            return Err(FunctionError::Failed(format!("http status {status} is listed in args.fail_on_status")));
        }
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let mut result = body_fields(content_type, &body);
        result.insert("status".into(), json!(status));
        result.insert("headers".into(), Value::Object(headers_to_json(response.headers())));
        Ok(Value::Object(result))
    }

    fn too_large(&self, at_least: u64) -> FunctionError {
        FunctionError::Failed(format!(
            "response body of at least {at_least} bytes exceeds the limit of {} bytes (limits.max_result_bytes)",
            self.max_body_bytes
        ))
    }
}

#[async_trait]
impl Function for HttpRequest {
    async fn call(&self, args: Value, ctx: Context) -> Result<Value, FunctionError> {
        let args = parse_args(&args)?;
        let limit = args.timeout.map_or(ctx.remaining(), |t| t.min(ctx.remaining()));
        let url = args.url.clone();
        tokio::select! {
            outcome = tokio::time::timeout(limit, self.exchange(args)) => outcome.unwrap_or_else(|_| {
                Err(FunctionError::Failed(format!("request to {url} timed out after {} ms", limit.as_millis())))
            }),
            () = ctx.cancel.cancelled() => Err(FunctionError::Failed("request cancelled".into())),
        }
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
