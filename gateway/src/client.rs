//! The gateway's side of the control plane's gRPC API: one lazily connected TLS channel shared by
//! every request, and the metadata each call carries.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use legion_common::Settings;
use legion_common::failover::Failover;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::Endpoint;

use crate::problem::Problem;

/// Why the channel to the control plane could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `control_plane.url` or one of `control_plane.failover_urls` is not a valid URI.
    #[error("settings key control_plane.url or control_plane.failover_urls: {0}")]
    Url(String),
    /// The TLS material named by `tls.*` could not be loaded.
    #[error(transparent)]
    Tls(#[from] legion_common::tls::Error),
    /// The TLS configuration was refused by the transport.
    #[error("settings key tls: {0}")]
    TlsConfig(String),
    /// `tls.cert` or `tls.key` is not set: without its certificate the control plane would take the
    /// gateway for an anonymous caller.
    #[error("settings key {0} is required: the gateway authenticates to the control plane with its certificate")]
    MissingIdentity(&'static str),
}

/// Checks the gateway's identity before anything else starts: `tls.cert` and `tls.key` must be set
/// (the gateway's `spiffe://legion/gateway/<name>` certificate and its key), readable PEM, and a
/// matching pair; `tls.ca` must hold a certificate ([`legion_common::tls::check_identity`]).
///
/// # Errors
/// [`Error::MissingIdentity`] naming the unset key, or [`Error::Tls`] naming the unusable one.
pub fn check_identity(settings: &Settings) -> Result<(), Error> {
    if settings.tls.cert.is_none() {
        return Err(Error::MissingIdentity("tls.cert"));
    }
    if settings.tls.key.is_none() {
        return Err(Error::MissingIdentity("tls.key"));
    }
    legion_common::tls::check_identity(&settings.tls)?;
    Ok(())
}

/// How long establishing a TCP and TLS connection to the control plane may take, in ms.
pub const CONNECT_TIMEOUT_MS: u64 = 5000;

/// Largest gRPC response the gateway accepts, in bytes (a page of 1000 tasks with results).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// A channel to `control_plane.url` over TLS, trusting `tls.ca` and presenting `tls.cert`/`tls.key`
/// (the gateway's `spiffe://legion/gateway/<name>` certificate), failing over to
/// `control_plane.failover_urls` in order when the current replica cannot be connected to
/// ([`legion_common::failover`]). It connects on first use and reconnects by itself; calls made while
/// no replica is reachable fail with `UNAVAILABLE`. [`crate::run`] calls [`check_identity`] first;
/// this function does not require a certificate.
///
/// # Errors
/// [`Error`] naming the setting at fault.
pub fn connect_lazy(settings: &Settings) -> Result<Failover, Error> {
    let tls = legion_common::tls::client_config(&settings.tls)?;
    let mut endpoints = Vec::new();
    for url in settings.control_plane.urls() {
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Url(format!("{url:?}: {e}")))?
            .tls_config(tls.clone())
            .map_err(|e| Error::TlsConfig(e.to_string()))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(legion_common::failover::KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(legion_common::failover::KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        endpoints.push((url, endpoint));
    }
    Ok(Failover::connect_lazy(endpoints))
}

/// Request headers passed on unchanged to the control plane as gRPC metadata: the caller's
/// credential (authenticated by the control plane, never by the gateway) and the request id.
pub const FORWARDED_HEADERS: &[&str] = &["authorization", "x-api-key", "x-request-id"];

/// The headers of [`FORWARDED_HEADERS`] that carry a credential.
pub const CREDENTIAL_HEADERS: &[&str] = &["authorization", "x-api-key"];

/// gRPC metadata with the REST caller's socket address (`203.0.113.7:51234`, `[2001:db8::1]:443`), which
/// the control plane records as the `source` of its audit records. Set only from the connection, never
/// from a request header of that name.
pub const CLIENT_ADDR_METADATA: &str = "x-legion-client-addr";

/// The metadata of one REST request to put on its gRPC call(s). Its `Debug` form names the metadata
/// keys only, never their values (credentials).
#[derive(Clone, Default)]
pub struct CallMeta {
    metadata: Vec<(MetadataKey<tonic::metadata::Ascii>, MetadataValue<tonic::metadata::Ascii>)>,
}

impl std::fmt::Debug for CallMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMeta")
            .field("keys", &self.metadata.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl CallMeta {
    /// Collects the [`FORWARDED_HEADERS`] present in `headers`. A header value that is not visible
    /// ASCII is refused (400 naming the header) rather than dropped, so a credential is never lost
    /// silently.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, Problem> {
        let mut metadata = Vec::new();
        for name in FORWARDED_HEADERS {
            for value in headers.get_all(*name) {
                let text = value.to_str().map_err(|_| Problem::invalid(name, "header value must be visible ASCII"))?;
                let value = MetadataValue::try_from(text)
                    .map_err(|_| Problem::invalid(name, "header value must be visible ASCII"))?;
                metadata.push((MetadataKey::from_static(name), value));
            }
        }
        Ok(Self { metadata })
    }

    /// Adds the caller's socket address as [`CLIENT_ADDR_METADATA`].
    #[must_use]
    pub fn with_client_addr(mut self, addr: SocketAddr) -> Self {
        if let Ok(value) = MetadataValue::try_from(addr.to_string()) {
            self.metadata.push((MetadataKey::from_static(CLIENT_ADDR_METADATA), value));
        }
        self
    }

    /// The same metadata without the [`CREDENTIAL_HEADERS`], for calls that take no credential
    /// (`GetJwks`): a public route must answer whatever credential the caller sent along.
    #[must_use]
    pub fn without_credentials(mut self) -> Self {
        self.metadata.retain(|(key, _)| !CREDENTIAL_HEADERS.contains(&key.as_str()));
        self
    }

    /// Wraps `message` in a request carrying this metadata. No `grpc-timeout` is set: the gateway's
    /// request timeout drops the call, which resets its HTTP/2 stream and so cancels it in the control
    /// plane too.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (key, value) in &self.metadata {
            request.metadata_mut().append(key.clone(), value.clone());
        }
        request
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallMeta {
    type Rejection = Problem;

    /// [`CallMeta::from_headers`], plus the caller's address when the server records it (served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`, as [`crate::run`] does); a router served
    /// without it (tests) sends no address.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let meta = Self::from_headers(&parts.headers)?;
        Ok(match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => meta.with_client_addr(*addr),
            None => meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn credentials_and_request_id_are_forwarded_unchanged() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer abc.def"));
        headers.insert("x-api-key", HeaderValue::from_static("lgn_123"));
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        headers.insert("cookie", HeaderValue::from_static("session=1"));
        let meta = CallMeta::from_headers(&headers).expect("ascii");
        let request = meta.request(());
        let md = request.metadata();
        assert_eq!(md.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer abc.def"));
        assert_eq!(md.get("x-api-key").and_then(|v| v.to_str().ok()), Some("lgn_123"));
        assert_eq!(md.get("x-request-id").and_then(|v| v.to_str().ok()), Some("req-1"));
        assert!(md.get("cookie").is_none(), "only the listed headers travel");
    }

    #[test]
    fn the_client_address_comes_from_the_connection_only() {
        let mut headers = HeaderMap::new();
        headers.insert(CLIENT_ADDR_METADATA, HeaderValue::from_static("10.9.9.9:1"));
        headers.insert("x-api-key", HeaderValue::from_static("lgn_123"));
        let meta = CallMeta::from_headers(&headers).expect("ascii");
        assert!(meta.request(()).metadata().get(CLIENT_ADDR_METADATA).is_none(), "a caller cannot claim an address");
        let addr: SocketAddr = "[2001:db8::1]:4567".parse().expect("addr");
        let request = meta.with_client_addr(addr).request(());
        let values: Vec<_> = request.metadata().get_all(CLIENT_ADDR_METADATA).iter().collect();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].to_str().ok(), Some("[2001:db8::1]:4567"));
    }

    #[tokio::test]
    async fn the_extractor_adds_the_connection_address_when_known() {
        let request = axum::http::Request::get("/").header("x-api-key", "k").body(()).expect("request");
        let (mut parts, ()) = request.into_parts();
        let meta = CallMeta::from_request_parts(&mut parts, &()).await.expect("extracts");
        assert!(meta.request(()).metadata().get(CLIENT_ADDR_METADATA).is_none(), "no connect info, no address");
        parts.extensions.insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 5555))));
        let meta = CallMeta::from_request_parts(&mut parts, &()).await.expect("extracts");
        let request = meta.request(());
        assert_eq!(request.metadata().get(CLIENT_ADDR_METADATA).and_then(|v| v.to_str().ok()), Some("127.0.0.1:5555"));
    }

    #[test]
    fn public_calls_carry_no_credential_and_debug_shows_no_values() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer secret-token"));
        headers.insert("x-api-key", HeaderValue::from_static("secret-key"));
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        let meta = CallMeta::from_headers(&headers).expect("ascii");
        let debug = format!("{meta:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("x-api-key"), "{debug}");
        let request = meta.without_credentials().request(());
        let md = request.metadata();
        assert!(md.get("authorization").is_none() && md.get("x-api-key").is_none());
        assert_eq!(md.get("x-request-id").and_then(|v| v.to_str().ok()), Some("req-1"));
    }

    #[test]
    fn non_ascii_credentials_are_refused_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_bytes(b"k\xe9y").expect("obs-text is a valid header value"));
        let problem = CallMeta::from_headers(&headers).expect_err("refused");
        assert!(problem.detail.starts_with("x-api-key:"), "{}", problem.detail);
    }
}
