//! What every Legion process shares: the settings loader, TLS and principals, the error-code mapping,
//! logging, graceful shutdown, the admin HTTP server, the broker topology, the broker message and the
//! status enums (task status, extension state, node status).

pub mod admin;
pub mod broker;
pub mod credential;
pub mod error;
pub mod failover;
pub mod function;
pub mod settings;
pub mod shutdown;
pub mod slots;
pub mod status;
pub mod telemetry;
pub mod text;
pub mod tls;

pub use error::ErrorCode;
pub use function::FunctionName;
pub use settings::Settings;
pub use status::{ExtensionState, NodeStatus, TaskStatus};

/// Exit code for bad settings or command-line usage (`EX_USAGE` in sysexits.h).
pub const EXIT_USAGE: i32 = 64;

/// Installs rustls' ring crypto provider as the process default. Call once at startup, before any TLS
/// client or server is built; later calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
