//! gRPC clients for the control plane: TLS with the test's CA and, optionally, a client certificate.
//! User-facing clients ([`TaskClient`], [`CatalogClient`]) carry a credential on every call
//! ([`AuthChannel`], by default [`crate::ADMIN_KEY`]); the executor service authenticates by client
//! certificate only.

use std::time::Duration;

pub use legion_common::credential::{AuthChannel, Credential};
use legion_common::settings::TlsSettings;
use legion_proto::v1::catalog_service_client::CatalogServiceClient;
use legion_proto::v1::executor_service_client::ExecutorServiceClient;
use legion_proto::v1::task_service_client::TaskServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Client of `legion.v1.TaskService`, sending its channel's credential.
pub type TaskClient = TaskServiceClient<AuthChannel>;
/// Client of `legion.v1.CatalogService`, sending its channel's credential.
pub type CatalogClient = CatalogServiceClient<AuthChannel>;
/// Client of `legion.v1.ExecutorService`.
pub type ExecutorClient = ExecutorServiceClient<Channel>;

/// Deadline of one call, in seconds (WatchTask streams excepted: they end with their task).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Channel setup failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS material could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] legion_common::tls::Error),
    /// The credential is not a valid metadata value.
    #[error(transparent)]
    Credential(#[from] legion_common::credential::Invalid),
    /// The endpoint is invalid or the connection (TCP or TLS handshake) failed.
    #[error("cannot connect to {url}: {source:?}")]
    Connect {
        /// The control plane's URL.
        url: String,
        /// The transport error, with its sources.
        source: tonic::transport::Error,
    },
}

fn endpoint(url: &str, tls: &TlsSettings) -> Result<Endpoint, Error> {
    crate::init();
    let conn = |source| Error::Connect { url: url.to_owned(), source };
    Endpoint::from_shared(url.to_owned())
        .map_err(conn)?
        .tls_config(legion_common::tls::client_config(tls)?)
        .map_err(conn)
        .map(|e| e.connect_timeout(Duration::from_secs(5)))
}

/// Connects (TCP and TLS handshake) to the control plane at `url` (`https://127.0.0.1:<port>`),
/// trusting `tls.ca` and presenting `tls.cert`/`tls.key` when set.
///
/// # Errors
/// [`Error::Tls`] when a PEM file cannot be read, [`Error::Connect`] when the connection fails.
pub async fn connect(url: &str, tls: &TlsSettings) -> Result<Channel, Error> {
    endpoint(url, tls)?.connect().await.map_err(|source| Error::Connect { url: url.to_owned(), source })
}

/// Like [`connect`], but the connection is made at the first call, so handshake failures surface as
/// the call's status.
///
/// # Errors
/// [`Error::Tls`] when a PEM file cannot be read.
pub fn connect_lazy(url: &str, tls: &TlsSettings) -> Result<Channel, Error> {
    Ok(endpoint(url, tls)?.connect_lazy())
}

/// `channel` with `auth` put on every call.
///
/// # Errors
/// [`Error::Credential`] when the secret is not a valid metadata value.
pub fn authenticated(channel: Channel, auth: &crate::Auth) -> Result<AuthChannel, Error> {
    Ok(AuthChannel::new(channel, auth.credential()?))
}

/// A request carrying the standard per-call deadline.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}
