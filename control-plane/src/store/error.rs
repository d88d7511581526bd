//! Storage errors, mapped from sqlx by SQLSTATE (never by message text), as quickwit's metastore does.

use legion_common::ErrorCode;

/// A storage failure. Variants carry what the caller may show; database details are logged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A unique constraint refused a row (SQLSTATE 23505).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The row is not in a state that allows the change, or a foreign key refused it (SQLSTATE 23503).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database refused a value (SQLSTATE class 22, e.g. text it cannot store).
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The transaction lost a deadlock or serialization race (SQLSTATE 40P01, 40001); retry it.
    #[error("transaction conflict, retry: {0}")]
    Conflict(String),
    /// The database cannot be reached (I/O, TLS, pool timeout, shutdown).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row holds a value this version does not understand.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(String),
}

/// Storage results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The meaning of the error for gRPC and REST callers.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::InvalidData(_) => ErrorCode::InvalidArgument,
            Self::Conflict(_) | Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Corrupt(_) | Self::Database(_) => ErrorCode::Internal,
        }
    }

    /// Whether running the same transaction again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

/// SQLSTATE of a unique violation.
pub const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE of a foreign-key violation.
pub const FOREIGN_KEY_VIOLATION: &str = "23503";
/// SQLSTATE of a serialization failure.
pub const SERIALIZATION_FAILURE: &str = "40001";
/// SQLSTATE of a detected deadlock.
pub const DEADLOCK_DETECTED: &str = "40P01";

/// Maps an SQLSTATE (and the constraint or message, for the text) to an error.
pub fn from_sqlstate(code: &str, detail: String) -> Error {
    match code {
        UNIQUE_VIOLATION => Error::AlreadyExists(detail),
        FOREIGN_KEY_VIOLATION => Error::FailedPrecondition(detail),
        SERIALIZATION_FAILURE | DEADLOCK_DETECTED => Error::Conflict(detail),
        // Class 22: data exception; class 08: connection exception; 57P01..57P03: shutdown / cannot connect.
        c if c.starts_with("22") => Error::InvalidData(detail),
        c if c.starts_with("08") || c.starts_with("57P") || c == "53300" => Error::Unavailable(detail),
        _ => Error::Database(detail),
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) => {
                let detail = match db.constraint() {
                    Some(constraint) => format!("{} ({constraint})", db.message()),
                    None => db.message().to_owned(),
                };
                match db.code() {
                    Some(code) => from_sqlstate(&code, detail),
                    None => Error::Database(detail),
                }
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Error::Unavailable(error.to_string()),
            sqlx::Error::RowNotFound => Error::NotFound("row not found".into()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => Error::Corrupt(error.to_string()),
            _ => Error::Database(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_meanings() {
        let cases = [
            ("23505", ErrorCode::AlreadyExists),
            ("23503", ErrorCode::FailedPrecondition),
            ("40001", ErrorCode::Unavailable),
            ("40P01", ErrorCode::Unavailable),
            ("22P05", ErrorCode::InvalidArgument),
            ("08006", ErrorCode::Unavailable),
            ("57P01", ErrorCode::Unavailable),
            ("42P01", ErrorCode::Internal),
        ];
        for (state, code) in cases {
            assert_eq!(from_sqlstate(state, String::new()).code(), code, "{state}");
        }
        assert!(from_sqlstate("40P01", String::new()).is_retryable());
        assert!(!from_sqlstate("23505", String::new()).is_retryable());
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        assert_eq!(Error::from(sqlx::Error::PoolTimedOut).code(), ErrorCode::Unavailable);
    }
}
