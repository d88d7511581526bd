//! Error responses as `application/problem+json` (RFC 9457), with the gRPC code name in `code`.
//!
//! A gRPC status from the control plane keeps its meaning over REST through
//! [`legion_common::ErrorCode`]: `INVALID_ARGUMENT` is 400, `NOT_FOUND` 404, `UNAVAILABLE` 503, and so
//! on. Failures the gateway finds itself (a malformed body, an unknown route) use the same shape.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use legion_common::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `title` is the HTTP status phrase.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status phrase (`Bad Request`).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong; for bad input, the field and the reason (`priority: invalid type: …`).
    pub detail: String,
    /// The gRPC code name of the same meaning (`INVALID_ARGUMENT`).
    #[schema(example = "INVALID_ARGUMENT")]
    pub code: String,
}

impl Problem {
    /// A problem of the given meaning: its HTTP status and code name come from [`ErrorCode`].
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::with_status(code.http_status(), code.name(), detail)
    }

    /// A problem with an explicit HTTP status and gRPC code name, for statuses that [`ErrorCode`] does
    /// not produce (404 for unknown routes, 405, 413, 415).
    pub fn with_status(status: u16, code: &str, detail: impl Into<String>) -> Self {
        let title = StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
        Self { kind: "about:blank".into(), title: title.into(), status, detail: detail.into(), code: code.into() }
    }

    /// `400 INVALID_ARGUMENT` naming `field`: `"{field}: {reason}"`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidArgument, format!("{field}: {reason}"))
    }

    /// The problem for a gRPC status from the control plane. The message is passed on, except for
    /// `INTERNAL` (and codes Legion does not emit), whose details stay in the gateway's log.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = ErrorCode::from_grpc(status.code());
        let detail = match code {
            ErrorCode::Internal => {
                tracing::error!(grpc_code = ?status.code(), message = %status.message(), "control plane call failed");
                "internal error in the control plane; see the gateway and control-plane logs".to_owned()
            }
            ErrorCode::Unavailable => {
                let message = status_message(status);
                tracing::warn!(grpc_code = ?status.code(), %message, "control plane unavailable");
                format!("control plane unavailable: {message}")
            }
            _ => status.message().to_owned(),
        };
        Self::new(code, detail)
    }

    /// The HTTP status as a [`StatusCode`]; 500 if out of range.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A status's message followed by the chain of its sources (`tcp connect error: Connection refused`),
/// which tonic keeps out of the message for transport failures. Repeated texts are left out.
pub fn status_message(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let text = error.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message = if message.is_empty() { text } else { format!("{message}: {text}") };
        }
        source = error.source();
    }
    message
}

/// The gRPC code name closest to an HTTP error status, for responses the gateway did not build itself
/// (axum's rejections, unknown methods).
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 411 | 415 | 422 => ErrorCode::InvalidArgument.name(),
        401 => ErrorCode::Unauthenticated.name(),
        403 => ErrorCode::PermissionDenied.name(),
        404 => ErrorCode::NotFound.name(),
        405 | 501 => "UNIMPLEMENTED",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 | 412 => ErrorCode::FailedPrecondition.name(),
        413 | 429 => ErrorCode::ResourceExhausted.name(),
        502 | 503 => ErrorCode::Unavailable.name(),
        400..=499 => ErrorCode::InvalidArgument.name(),
        _ => ErrorCode::Internal.name(),
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_http_statuses_and_names() {
        let cases = [
            (tonic::Code::InvalidArgument, 400, "INVALID_ARGUMENT", "Bad Request"),
            (tonic::Code::NotFound, 404, "NOT_FOUND", "Not Found"),
            (tonic::Code::AlreadyExists, 409, "ALREADY_EXISTS", "Conflict"),
            (tonic::Code::FailedPrecondition, 409, "FAILED_PRECONDITION", "Conflict"),
            (tonic::Code::Unauthenticated, 401, "UNAUTHENTICATED", "Unauthorized"),
            (tonic::Code::PermissionDenied, 403, "PERMISSION_DENIED", "Forbidden"),
            (tonic::Code::ResourceExhausted, 429, "RESOURCE_EXHAUSTED", "Too Many Requests"),
            (tonic::Code::Unavailable, 503, "UNAVAILABLE", "Service Unavailable"),
            (tonic::Code::DeadlineExceeded, 503, "UNAVAILABLE", "Service Unavailable"),
            (tonic::Code::Internal, 500, "INTERNAL", "Internal Server Error"),
            (tonic::Code::Unknown, 500, "INTERNAL", "Internal Server Error"),
        ];
        for (grpc, status, name, title) in cases {
            let p = Problem::from_status(&tonic::Status::new(grpc, "boom"));
            assert_eq!((p.status, p.code.as_str(), p.title.as_str()), (status, name, title), "{grpc:?}");
            assert_eq!(p.kind, "about:blank");
        }
    }

    #[test]
    fn messages_pass_through_except_internal_ones() {
        let p = Problem::from_status(&tonic::Status::invalid_argument("args: larger than 1048576 bytes"));
        assert_eq!(p.detail, "args: larger than 1048576 bytes");
        let p = Problem::from_status(&tonic::Status::internal("relation tasks does not exist"));
        assert!(!p.detail.contains("relation"), "{}", p.detail);
        let p = Problem::from_status(&tonic::Status::unavailable("tcp connect error"));
        assert!(p.detail.starts_with("control plane unavailable") && p.detail.contains("tcp connect"), "{}", p.detail);
    }

    #[test]
    fn http_statuses_get_the_nearest_grpc_code() {
        let cases = [
            (400, "INVALID_ARGUMENT"),
            (404, "NOT_FOUND"),
            (405, "UNIMPLEMENTED"),
            (408, "DEADLINE_EXCEEDED"),
            (413, "RESOURCE_EXHAUSTED"),
            (415, "INVALID_ARGUMENT"),
            (418, "INVALID_ARGUMENT"),
            (503, "UNAVAILABLE"),
            (504, "DEADLINE_EXCEEDED"),
            (500, "INTERNAL"),
        ];
        for (status, code) in cases {
            assert_eq!(code_for_status(StatusCode::from_u16(status).expect("valid")), code, "{status}");
        }
    }

    #[test]
    fn response_is_problem_json_with_the_status() {
        let response = Problem::invalid("id", "must be a UUID").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn problem_serializes_with_rfc9457_member_names() {
        let json =
            serde_json::to_value(Problem::with_status(415, "INVALID_ARGUMENT", "content-type: x")).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "about:blank", "title": "Unsupported Media Type", "status": 415,
                "detail": "content-type: x", "code": "INVALID_ARGUMENT"
            })
        );
    }
}
