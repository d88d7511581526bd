//! The tonic adapters: they validate, convert and call the domain; nothing else.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod chains;
pub mod config;
pub mod convert;
pub mod dead_letters;
pub mod executor;
pub mod schedules;
pub mod security;
pub mod tasks;

use legion_common::ErrorCode;
use tonic::Status;
use uuid::Uuid;

use crate::store;

/// A gRPC status with the code of `code` and `message`.
pub fn status(code: ErrorCode, message: impl Into<String>) -> Status {
    Status::new(code.grpc(), message)
}

/// `INVALID_ARGUMENT` naming `field`.
pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// Parses a UUID field.
///
/// # Errors
/// `INVALID_ARGUMENT` naming `field`.
pub fn parse_uuid(field: &str, value: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(value).map_err(|_| invalid(field, format!("{value:?} is not a UUID")))
}

/// The status of a storage error. Internal details are logged, not returned.
pub fn store_status(error: store::Error) -> Status {
    let code = error.code();
    match code {
        ErrorCode::Internal => {
            tracing::error!(error = %error, "storage failed");
            status(code, "internal error")
        }
        ErrorCode::Unavailable => {
            tracing::warn!(error = %error, "storage unavailable");
            status(code, "the database is unavailable, retry later")
        }
        _ => status(code, error.to_string()),
    }
}
