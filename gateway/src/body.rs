//! The JSON request body extractor: content type, size limit and emptiness are checked here, so
//! that every refusal is a problem+json naming the reason.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use legion_common::ErrorCode;

use crate::input::is_json_content_type;
use crate::problem::Problem;
use crate::state::AppState;

/// A request body that claims to be JSON, not empty and at most `api.max_body_bytes` long; parsing
/// is left to the handler so that its errors name fields.
///
/// Rejections: 415 when `Content-Type` is not `application/json` (or `application/*+json`); 413 when
/// the body is longer than `api.max_body_bytes`; 400 when it is empty.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

/// The 413 problem for a body over `limit` bytes.
pub fn too_large(limit: usize) -> Problem {
    Problem::with_status(
        413,
        ErrorCode::ResourceExhausted.name(),
        format!("body: larger than api.max_body_bytes ({limit} bytes)"),
    )
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.max_body_bytes;
        let content_type = request.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not ASCII)"));
        let unsupported = |ct: Option<&str>| {
            Problem::with_status(
                415,
                ErrorCode::InvalidArgument.name(),
                format!(
                    "content-type: expected application/json, got {}",
                    ct.map_or_else(|| "none".to_owned(), |c| format!("{c:?}"))
                ),
            )
        };
        if content_type.is_some() && !is_json_content_type(content_type) {
            return Err(unsupported(content_type));
        }
        let content_type = content_type.map(str::to_owned);
        let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => too_large(limit),
            other => Problem::invalid("body", other.body_text()),
        })?;
        if bytes.is_empty() {
            return Err(Problem::invalid("body", "required: send a JSON object"));
        }
        if content_type.is_none() {
            return Err(unsupported(None));
        }
        Ok(Self(bytes))
    }
}
