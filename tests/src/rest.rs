//! A small client for the gateway's REST API (DESIGN.md section 7) and its `application/problem+json`
//! errors.

use std::time::Duration;

use serde_json::Value;

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

/// A response: status, content type and JSON body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `content-type` header, empty when absent.
    pub content_type: String,
    /// The parsed body.
    pub body: Value,
}

impl Response {
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

/// The gateway at `base` (`http://127.0.0.1:<port>`).
#[derive(Debug, Clone)]
pub struct RestClient {
    base: String,
    http: reqwest::Client,
}

impl RestClient {
    /// A client for the gateway at `base`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        crate::init();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).no_proxy().build()?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET {base}{path}`.
    ///
    /// # Errors
    /// [`Error`] when the call fails or the body is not JSON.
    pub async fn get(&self, path: &str) -> Result<Response, Error> {
        let url = format!("{}{path}", self.base);
        let sent = self.http.get(&url).send().await;
        read("GET", url, sent).await
    }

    /// `POST {base}{path}` with a JSON body.
    ///
    /// # Errors
    /// [`Error`] when the call fails or the body is not JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Response, Error> {
        let url = format!("{}{path}", self.base);
        let sent = self.http.post(&url).json(body).send().await;
        read("POST", url, sent).await
    }

    /// `POST {base}{path}` with raw bytes labelled `application/json` (for malformed bodies).
    ///
    /// # Errors
    /// [`Error`] when the call fails or the body is not JSON.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> Result<Response, Error> {
        let url = format!("{}{path}", self.base);
        let sent =
            self.http.post(&url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body).send().await;
        read("POST", url, sent).await
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
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = match response.text().await {
        Ok(t) => t,
        Err(source) => return Err(Error::Http { method, url, source }),
    };
    match serde_json::from_str(&text) {
        Ok(body) => Ok(Response { status, content_type, body }),
        Err(_) => Err(Error::NotJson { method, url, status, body: text }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn problems_are_recognised_with_parameters() {
        let r = Response {
            status: 400,
            content_type: "application/problem+json; charset=utf-8".into(),
            body: json!({"code": "INVALID_ARGUMENT", "detail": "args: too large"}),
        };
        assert!(r.is_problem());
        assert_eq!((r.code(), r.detail()), ("INVALID_ARGUMENT", "args: too large"));
        let plain = Response { status: 200, content_type: "application/json".into(), body: json!({}) };
        assert!(!plain.is_problem());
        assert_eq!((plain.code(), plain.detail()), ("", ""));
    }
}
