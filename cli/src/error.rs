//! Failures of a `legion` command and the exit code each one gives.

use legion_common::EXIT_USAGE;

/// Exit code when a followed task ended in a status other than `succeeded`.
pub const EXIT_TASK_DID_NOT_SUCCEED: u8 = 2;

/// Exit code for a failed call or an I/O error.
pub const EXIT_FAILURE: u8 = 1;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or argument is unusable (exit 64).
    #[error("{0}")]
    Usage(String),
    /// The settings could not be loaded (exit 64).
    #[error(transparent)]
    Settings(#[from] legion_common::settings::Error),
    /// The TLS material could not be loaded (exit 64).
    #[error(transparent)]
    Tls(legion_common::tls::Error),
    /// Writing certificates failed (exit 1).
    #[error(transparent)]
    Certs(legion_common::tls::Error),
    /// The control plane answered with an error (exit 1); shown as `CODE: message`. A failure of the
    /// connection shows as `UNAVAILABLE`, whatever code tonic gave it, as the REST API does
    /// ([`legion_gateway::problem::effective_code`]).
    #[error("{}: {}", code_name(legion_gateway::problem::effective_code(.0)), legion_gateway::problem::status_message(.0))]
    Grpc(#[from] tonic::Status),
    /// A watch ended before the task reached a terminal status (exit 1).
    #[error("UNAVAILABLE: {0}")]
    WatchEnded(String),
    /// The control plane answered with a message that has no REST shape, such as a task whose status
    /// is unspecified (exit 1); shown as `INTERNAL: …`, as the REST API shows it.
    #[error("INTERNAL: {0}")]
    Response(#[from] legion_gateway::view::Error),
    /// Writing the output failed (exit 1).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// The process exit code: 64 for usage and settings problems, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Settings(_) | Self::Tls(_) => u8::try_from(EXIT_USAGE).unwrap_or(64),
            Self::Certs(_) | Self::Grpc(_) | Self::WatchEnded(_) | Self::Response(_) | Self::Output(_) => EXIT_FAILURE,
        }
    }
}

/// The canonical name of a gRPC status code (`INVALID_ARGUMENT`), as in the gRPC specification.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_errors_show_the_code_name_and_exit_1() {
        let e = Error::from(tonic::Status::not_found("task 0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e not found"));
        assert_eq!(e.to_string(), "NOT_FOUND: task 0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e not found");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(Error::from(tonic::Status::deadline_exceeded("x")).to_string(), "DEADLINE_EXCEEDED: x");
    }

    #[test]
    fn connection_failures_show_as_unavailable() {
        let cut = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let e = Error::from(tonic::Status::from_error(Box::new(cut)));
        assert_eq!(e.to_string(), "UNAVAILABLE: connection reset by peer");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(Error::from(tonic::Status::unknown("x")).to_string(), "UNKNOWN: x", "sent by the server");
    }

    #[test]
    fn usage_and_settings_problems_exit_64() {
        assert_eq!(Error::Usage("--control-plane: bad".into()).exit_code(), 64);
        assert_eq!(Error::Tls(legion_common::tls::Error::Missing("tls.ca")).exit_code(), 64);
        let settings = legion_common::settings::Error::Invalid { key: "data.url".into(), reason: "bad".into() };
        assert_eq!(Error::from(settings).exit_code(), 64);
    }
}
