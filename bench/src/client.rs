//! gRPC channels to the control plane: TLS with the dev CA (a client certificate is optional), and
//! the caller's credential (`X-API-Key` or `Authorization: Bearer`) on every call.
//!
//! Each [`Channel`] is one HTTP/2 connection; every call on it is a stream multiplexed over that
//! connection, so hundreds of calls in flight need no more than one channel.

use std::path::PathBuf;
use std::time::Duration;

pub use legion_common::credential::{AuthChannel, Credential};
use legion_common::settings::TlsSettings;
use legion_proto::v1::catalog_service_client::CatalogServiceClient;
use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::v1::task_service_client::TaskServiceClient;
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 connection flow-control window of each channel, in bytes (8 MiB).
pub const CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;

/// HTTP/2 stream flow-control window, in bytes (1 MiB).
pub const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;

/// Why a channel could not be set up. Each variant names the flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA, certificate or key file could not be read.
    #[error("--ca/--cert/--key: {0}")]
    Tls(#[from] legion_common::tls::Error),
    /// The control-plane URL is malformed or its TLS setup was refused.
    #[error("--control-plane {url:?}: {source}")]
    Url {
        /// The URL as given.
        url: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The URL is not `https://` (the control plane serves TLS only).
    #[error("--control-plane {0:?}: must start with https:// (the control plane serves TLS only)")]
    NotHttps(String),
    /// A credential holds characters that cannot travel in an HTTP header.
    #[error("{flag}: not a valid header value (visible ASCII only)")]
    Credential {
        /// `--api-key` or `--token`.
        flag: &'static str,
    },
    /// `--cert` was given without `--key` or the reverse.
    #[error("--cert and --key go together")]
    HalfIdentity,
}

/// Where the control plane is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://host:port` of the control plane's gRPC listener.
    pub url: String,
    /// PEM file of the CA that signed the control plane's certificate.
    pub ca: PathBuf,
    /// Optional client certificate (PEM), with `key`.
    pub cert: Option<PathBuf>,
    /// Optional client key (PEM), with `cert`.
    pub key: Option<PathBuf>,
    /// Sent as `x-api-key` when set.
    pub api_key: Option<String>,
    /// Sent as `authorization: Bearer <token>` when set (and no API key is).
    pub token: Option<String>,
}

/// The credential of `options`: the API key if set, else the bearer token, else none.
///
/// # Errors
/// [`Error::Credential`] when the value is not a valid header value.
pub fn credential(options: &ClientOptions) -> Result<Credential, Error> {
    Credential::from_options(options.api_key.as_deref(), options.token.as_deref())
        .map_err(|e| Error::Credential { flag: if e.0 == "API key" { "--api-key" } else { "--token" } })
}

/// A set of channels to the control plane and the clients built on them.
#[derive(Debug, Clone)]
pub struct Clients {
    /// One task client per channel (connection).
    pub tasks: Vec<TaskServiceClient<AuthChannel>>,
    /// A catalog client on the first channel.
    pub catalog: CatalogServiceClient<AuthChannel>,
    /// A chain client on the first channel (the `chain` scenario applies its chains with it).
    pub chains: ChainServiceClient<AuthChannel>,
}

/// The endpoint every client of the benchmark connects through: the control plane's URL (`https://`),
/// TLS with the CA and optional identity of `options`, and large fixed HTTP/2 windows.
///
/// # Errors
/// [`Error`] for an unreadable CA or identity, or a malformed URL.
pub fn endpoint(options: &ClientOptions) -> Result<Endpoint, Error> {
    if !options.url.starts_with("https://") {
        return Err(Error::NotHttps(options.url.clone()));
    }
    if options.cert.is_some() != options.key.is_some() {
        return Err(Error::HalfIdentity);
    }
    let tls = legion_common::tls::client_config(&TlsSettings {
        ca: Some(options.ca.clone()),
        cert: options.cert.clone(),
        key: options.key.clone(),
    })?;
    let url_err = |source| Error::Url { url: options.url.clone(), source };
    Ok(Endpoint::from_shared(options.url.clone())
        .map_err(url_err)?
        .tls_config(tls)
        .map_err(url_err)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        // A large, fixed connection window. h2 0.4.20 sends GOAWAY ENHANCE_YOUR_CALM
        // ("too_many_data_frames") when the small DATA frames received but not yet read exceed a
        // budget of half the connection window; with an adaptive window (starting at 64 KiB) a few
        // hundred small gRPC responses arriving at once trip it.
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES))
}

/// Builds `connections` (at least 1) lazily connected channels: a channel connects on its first call
/// and reconnects after a failure, so starting before the control plane answers is fine.
///
/// # Errors
/// [`Error`] for an unreadable CA or identity, a malformed URL or credential.
pub fn connect(options: &ClientOptions, connections: usize) -> Result<Clients, Error> {
    let endpoint = endpoint(options)?;
    let credential = credential(options)?;
    let channels: Vec<Channel> = (0..connections.max(1)).map(|_| endpoint.connect_lazy()).collect();
    let tasks = channels
        .iter()
        .map(|channel| TaskServiceClient::with_interceptor(channel.clone(), credential.clone()))
        .collect();
    let catalog = CatalogServiceClient::with_interceptor(channels[0].clone(), credential.clone());
    let chains = ChainServiceClient::with_interceptor(channels[0].clone(), credential);
    Ok(Clients { tasks, catalog, chains })
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn options() -> ClientOptions {
        ClientOptions {
            url: "https://localhost:1".into(),
            ca: PathBuf::from("/nonexistent/ca.pem"),
            cert: None,
            key: None,
            api_key: None,
            token: None,
        }
    }

    #[test]
    fn api_key_wins_over_token() {
        let mut opts = options();
        opts.api_key = Some("k1".into());
        opts.token = Some("t1".into());
        let mut credential = credential(&opts).expect("credential");
        let request = credential.call(tonic::Request::new(())).expect("call");
        assert_eq!(request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()), Some("k1"));
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn token_is_sent_as_bearer() {
        let mut opts = options();
        opts.token = Some("abc".into());
        let mut credential = credential(&opts).expect("credential");
        let request = credential.call(tonic::Request::new(())).expect("call");
        assert_eq!(request.metadata().get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer abc"));
    }

    #[test]
    fn no_credential_adds_nothing() {
        let mut credential = credential(&options()).expect("credential");
        let request = credential.call(tonic::Request::new(())).expect("call");
        assert!(request.metadata().is_empty());
    }

    #[test]
    fn bad_inputs_name_their_flag() {
        let mut opts = options();
        opts.api_key = Some("line\nbreak".into());
        assert!(credential(&opts).expect_err("newline").to_string().starts_with("--api-key"));

        let mut opts = options();
        opts.url = "http://localhost:1".into();
        assert!(connect(&opts, 1).expect_err("http").to_string().contains("https://"));

        let mut opts = options();
        opts.cert = Some(PathBuf::from("/tmp/c.pem"));
        assert!(matches!(connect(&opts, 1), Err(Error::HalfIdentity)));

        assert!(connect(&options(), 1).expect_err("missing ca").to_string().contains("/nonexistent/ca.pem"));
    }
}
