//! Error responses as `application/problem+json` (RFC 9457), with the gRPC code name in `code`.
//!
//! A gRPC status from the control plane keeps its meaning over REST through
//! [`legion_common::ErrorCode`]: `INVALID_ARGUMENT` is 400, `NOT_FOUND` 404, `UNAVAILABLE` 503, and so
//! on. A failure of the connection to the control plane is 503 `UNAVAILABLE` on every route and on
//! the event stream, whatever code tonic gave it ([`meaning`]). Failures the gateway finds itself (a
//! malformed body, an unknown route) use the same shape.

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

    /// The problem for a gRPC status from the control plane. Its meaning is [`meaning`]: a failure of
    /// the connection to the control plane is `503 UNAVAILABLE`, whatever code tonic gave it. The
    /// message is passed on, except for `INTERNAL` (and codes Legion does not emit), whose details stay
    /// in the gateway's log.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = meaning(status);
        let detail = match code {
            ErrorCode::Internal => {
                tracing::error!(grpc_code = ?status.code(), grpc_message = %status.message(), "control plane call failed");
                "internal error in the control plane; see the gateway and control-plane logs".to_owned()
            }
            ErrorCode::Unavailable => {
                let message = status_message(status);
                tracing::warn!(grpc_code = ?status.code(), reason = %message, "control plane unavailable");
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

/// Whether `status` was made by tonic from a failure of the connection (connect, TLS, HTTP/2 or I/O
/// error, a stream cut mid-way) rather than sent by the control plane. A status decoded from the
/// control plane's `grpc-status` never has a source; one built from a transport or body error keeps
/// that error as its source. Such statuses come as `UNAVAILABLE`, but also as `UNKNOWN` (a stream whose
/// connection dropped: "h2 protocol error: error reading a body from connection"), `INTERNAL` (an
/// HTTP/2 reset) or `CANCELLED` (a request dropped with its connection).
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
        && matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
        )
}

/// The meaning of a status from the control plane: [`ErrorCode::Unavailable`] for a
/// [transport failure](is_transport_failure), else [`ErrorCode::from_grpc`] of its code. Every REST
/// route and the event stream map statuses through it, so an unreachable control plane is always 503.
pub fn meaning(status: &tonic::Status) -> ErrorCode {
    if is_transport_failure(status) { ErrorCode::Unavailable } else { ErrorCode::from_grpc(status.code()) }
}

/// The gRPC code a caller should act on: `UNAVAILABLE` for a [transport failure](is_transport_failure)
/// (retry later), else the status's own code.
pub fn effective_code(status: &tonic::Status) -> tonic::Code {
    if is_transport_failure(status) { tonic::Code::Unavailable } else { status.code() }
}

/// A status's message followed by the chain of its sources (`tcp connect error: Connection refused`),
/// which tonic keeps out of the message for transport failures. Repeated texts are left out.
pub fn status_message(status: &tonic::Status) -> String {
    legion_common::text::status_chain(status)
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

/// A control-plane response without a REST shape is the control plane's bug: `500 INTERNAL`, logged.
impl From<crate::view::Error> for Problem {
    fn from(error: crate::view::Error) -> Self {
        tracing::error!(%error, "control plane response has no REST shape");
        Self::new(ErrorCode::Internal, error.to_string())
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

    /// Regression: a watch whose connection dropped mid-stream came back as `UNKNOWN` with the I/O
    /// error as its source, and was answered as 500 `INTERNAL` instead of 503 `UNAVAILABLE`.
    #[test]
    fn transport_failures_are_unavailable_whatever_their_code() {
        let cut = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let status = tonic::Status::from_error(Box::new(cut));
        assert_eq!(status.code(), tonic::Code::Unknown, "tonic's code for a bare i/o error");
        assert!(is_transport_failure(&status));
        assert_eq!(effective_code(&status), tonic::Code::Unavailable);
        let p = Problem::from_status(&status);
        assert_eq!((p.status, p.code.as_str()), (503, "UNAVAILABLE"));
        assert!(p.detail.starts_with("control plane unavailable") && p.detail.contains("connection reset"), "{p}");

        for code in [tonic::Code::Internal, tonic::Code::Cancelled, tonic::Code::Unavailable] {
            let mut status = tonic::Status::new(code, "h2 protocol error: stream reset");
            status.set_source(std::sync::Arc::new(std::io::Error::other("connection closed")));
            let p = Problem::from_status(&status);
            assert_eq!((p.status, p.code.as_str()), (503, "UNAVAILABLE"), "{code:?}");
        }
    }

    #[test]
    fn statuses_sent_by_the_control_plane_keep_their_meaning() {
        for (code, http) in [
            (tonic::Code::Unknown, 500),
            (tonic::Code::Internal, 500),
            (tonic::Code::Cancelled, 500),
            (tonic::Code::NotFound, 404),
        ] {
            let status = tonic::Status::new(code, "from the control plane");
            assert!(!is_transport_failure(&status), "{code:?}");
            assert_eq!(effective_code(&status), code);
            assert_eq!(Problem::from_status(&status).status, http, "{code:?}");
        }
        // A refusal that carries a source keeps its meaning: only failure codes are transport failures.
        let mut status = tonic::Status::permission_denied("inadequate security");
        status.set_source(std::sync::Arc::new(std::io::Error::other("h2")));
        assert_eq!(Problem::from_status(&status).status, 403);
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
