//! The audit trail (DESIGN.md section 6): every authorization decision (allow and deny) and every change
//! is appended to `audit_log`, an append-only, hash-chained table (`migrations/0002_security.sql`).
//!
//! - [`chain`]: the record content, its hash and the verifier, without I/O.
//! - [`AuditLog`]: the group-commit writer, one background task per process. Writers of several
//!   control-plane replicas serialize on the `audit_head` row, so the database holds one chain.
//! - [`list`] and [`verify`]: reading the trail, and checking that it was not tampered with.
//!
//! `detail` never holds secrets: the writer runs [`legion_common::settings::redact`] over it before
//! it is hashed.

pub mod chain;
mod query;
mod writer;

use legion_common::ErrorCode;

pub use chain::{Head, Record, Verification};
pub use query::{
    AuditFilter, AuditPage, DEFAULT_LIMIT, MAX_LIMIT, MalformedToken, VERIFY_CHUNK, decode_page_token,
    encode_page_token, list, page_limit, verify,
};
pub use writer::{AuditLog, MAX_DETAIL_BYTES, detail_text};

/// The outcome recorded for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Access granted, or a change made.
    Allow,
    /// Access refused by the caller's policies.
    Deny,
    /// Authentication failed, or the call failed before a decision.
    Error,
}

impl Decision {
    /// Every decision.
    pub const ALL: [Self; 3] = [Self::Allow, Self::Deny, Self::Error];

    /// `allow`, `deny` or `error`, as stored in `audit_log.decision`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Error => "error",
        }
    }

    /// The decision named `name` (as [`Self::as_str`] spells it); `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to append. The writer assigns the id, the time and the hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// `authorize` for decisions; `policy.put`, `api_key.create`, … for changes.
    pub action: String,
    /// `api-key/<id>`, `jwt/<sub>`, `node/<name>`, `anonymous`.
    pub principal: String,
    /// Resource path, e.g. `tasks/core/util/echo`.
    pub resource: String,
    /// Capability checked (`create`, `read`, …); empty for changes.
    pub capability: String,
    /// The outcome.
    pub decision: Decision,
    /// The request id of the call.
    pub request_id: String,
    /// The caller's address as the control plane saw it (or as the gateway reported it).
    pub source: String,
    /// What changed or why access was denied. Values under secret-looking keys (and URL passwords) are
    /// redacted before the record is hashed; an object is stored as is, `null` as `{}`, any other
    /// value as `{"value": …}`, and text over [`MAX_DETAIL_BYTES`] as a digest (see [`detail_text`]).
    pub detail: serde_json::Value,
}

/// An audit failure. Database details are in the message; callers log them rather than return them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached (I/O, TLS, pool timeout, shutdown): callers refuse the request.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The transaction lost a serialization race (SQLSTATE 40001, 40P01) even after retries.
    #[error("transaction conflict, retry: {0}")]
    Conflict(String),
    /// The audit tables hold something this version cannot use (e.g. no `audit_head` row, or a head
    /// hash that is not 32 bytes): appending stops until an operator repairs it.
    #[error("corrupt audit table: {0}")]
    Corrupt(String),
    /// Any other database error (e.g. a row with the next id already exists: a forged row).
    #[error("database error: {0}")]
    Database(String),
    /// The writer stopped: the process is shutting down.
    #[error("the audit writer stopped (the control plane is shutting down)")]
    ShuttingDown,
}

impl Error {
    /// The meaning of the error for gRPC and REST callers.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) | Self::Conflict(_) | Self::ShuttingDown => ErrorCode::Unavailable,
            Self::Corrupt(_) | Self::Database(_) => ErrorCode::Internal,
        }
    }
}

impl From<sqlx::Error> for Error {
    /// Maps by SQLSTATE, as [`crate::store::Error`] does.
    fn from(error: sqlx::Error) -> Self {
        use crate::store::Error as Store;
        match Store::from(error) {
            Store::Unavailable(message) => Self::Unavailable(message),
            Store::Conflict(message) => Self::Conflict(message),
            Store::Corrupt(message) => Self::Corrupt(message),
            other => Self::Database(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_through_their_names() {
        for decision in Decision::ALL {
            assert_eq!(Decision::parse(decision.as_str()), Some(decision));
            assert_eq!(decision.to_string(), decision.as_str());
        }
        assert_eq!(Decision::parse("Allow"), None);
        assert_eq!(Decision::parse(""), None);
    }

    #[test]
    fn an_unreachable_database_is_unavailable() {
        let error = Error::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(error, Error::Unavailable(_)), "{error:?}");
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert_eq!(Error::ShuttingDown.code(), ErrorCode::Unavailable);
        assert_eq!(Error::Corrupt(String::new()).code(), ErrorCode::Internal);
    }
}
