//! The control-plane client: the four calls of `legion.v1.ExecutorService` behind the
//! [`ControlPlane`] trait, implemented over tonic channels to the replicas with mTLS ([`GrpcControlPlane`]), and
//! the start-up registration that retries until the control plane answers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use legion_common::failover::Failover;
use legion_common::settings::TlsSettings;
use legion_proto::v1::executor_service_client::ExecutorServiceClient;
use legion_proto::v1::{
    CompleteTaskRequest, CompleteTaskResponse, HeartbeatRequest, HeartbeatResponse, RegisterNodeRequest,
    RegisterNodeResponse, StartTaskRequest, StartTaskResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic::{Code, Status};

use crate::backoff::Backoff;

/// Client setup and registration failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `control_plane.url` or one of `control_plane.failover_urls` is not a valid endpoint.
    #[error("control_plane.url or control_plane.failover_urls: {0}")]
    Url(String),
    /// The TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] legion_common::tls::Error),
    /// The TLS material was read but the client config could not be built from it.
    #[error("tls.cert, tls.key: cannot build the TLS client config: {0}")]
    TlsConfig(String),
    /// The control plane refused the registration for good (e.g. the name does not match the
    /// certificate).
    #[error("the control plane refused to register node {name}: {status}")]
    Refused {
        /// `executor.name`.
        name: String,
        /// The control plane's answer.
        status: Status,
    },
}

/// Longest wait for one call to the control plane.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a TCP/TLS connection to the control plane.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What an executor says to the control plane. One implementation talks gRPC; tests provide their
/// own. Every method is one RPC with no retry: callers decide with [`is_transient`].
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// `RegisterNode`: announces the node, its slots and its extensions.
    async fn register(&self, request: RegisterNodeRequest) -> Result<RegisterNodeResponse, Status>;
    /// `Heartbeat`: reports running attempts and extension states; answers aborts and disabled
    /// extensions. A call without an answer within `timeout` fails (`CANCELLED`, "Timeout expired"),
    /// and the gRPC client moves to the next control-plane replica ([`legion_common::failover`]), so
    /// that a replica that stopped answering (frozen, cut off) is left within one heartbeat.
    async fn heartbeat(&self, request: HeartbeatRequest, timeout: Duration) -> Result<HeartbeatResponse, Status>;
    /// `StartTask`: one decision per item, in order.
    async fn start_tasks(&self, request: StartTaskRequest) -> Result<StartTaskResponse, Status>;
    /// `CompleteTask`: one ack per item, in order.
    async fn complete_tasks(&self, request: CompleteTaskRequest) -> Result<CompleteTaskResponse, Status>;
}

/// Whether a failed call may succeed when retried unchanged: transport errors, `UNAVAILABLE`,
/// `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `ABORTED`, `INTERNAL`, `UNKNOWN`, `CANCELLED`, and the
/// credential errors `UNAUTHENTICATED`/`PERMISSION_DENIED` (an operator can fix a certificate; a
/// completion must not be dropped for it). The rest (`INVALID_ARGUMENT`, `NOT_FOUND`,
/// `FAILED_PRECONDITION`, …) mean the request itself is refused.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
            | Code::Unauthenticated
            | Code::PermissionDenied
    )
}

/// [`ControlPlane`] over gRPC: one lazily connected HTTP/2 channel (reconnected by tonic), TLS that
/// trusts `tls.ca` and presents `tls.cert`/`tls.key` as the node's client certificate.
#[derive(Debug, Clone)]
pub struct GrpcControlPlane {
    client: ExecutorServiceClient<Failover>,
}

impl GrpcControlPlane {
    /// A client of the replicas at `urls` (`https://host:port` each, at least one; the first is called
    /// until it cannot be connected to, then the next: [`legion_common::failover`]). Does not connect
    /// until the first call.
    ///
    /// # Errors
    /// [`Error::Url`] for a malformed URL or none, [`Error::Tls`] when the PEM files cannot be read,
    /// [`Error::TlsConfig`] when they cannot be used.
    pub fn connect_lazy(urls: &[String], tls: &TlsSettings) -> Result<Self, Error> {
        if urls.is_empty() {
            return Err(Error::Url("no control-plane URL".into()));
        }
        let config = legion_common::tls::client_config(tls)?;
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in urls {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| Error::Url(format!("{url:?}: {e}")))?
                .tls_config(config.clone())
                .map_err(|e| Error::TlsConfig(error_chain(&e)))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(legion_common::failover::KEEP_ALIVE_INTERVAL)
                .keep_alive_timeout(legion_common::failover::KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(true);
            endpoints.push((url.clone(), endpoint));
        }
        Ok(Self { client: ExecutorServiceClient::new(Failover::connect_lazy(endpoints)) })
    }
}

#[async_trait]
impl ControlPlane for GrpcControlPlane {
    async fn register(&self, request: RegisterNodeRequest) -> Result<RegisterNodeResponse, Status> {
        Ok(self.client.clone().register_node(request).await?.into_inner())
    }

    async fn heartbeat(&self, request: HeartbeatRequest, timeout: Duration) -> Result<HeartbeatResponse, Status> {
        // A gRPC deadline (`grpc-timeout`), enforced inside the channel, so that the failover sees it.
        let mut request = tonic::Request::new(request);
        request.set_timeout(timeout);
        Ok(self.client.clone().heartbeat(request).await?.into_inner())
    }

    async fn start_tasks(&self, request: StartTaskRequest) -> Result<StartTaskResponse, Status> {
        Ok(self.client.clone().start_task(request).await?.into_inner())
    }

    async fn complete_tasks(&self, request: CompleteTaskRequest) -> Result<CompleteTaskResponse, Status> {
        Ok(self.client.clone().complete_task(request).await?.into_inner())
    }
}

fn is_credential_error(status: &Status) -> bool {
    matches!(status.code(), Code::PermissionDenied | Code::Unauthenticated)
}

/// Consecutive transport failures of the registration after which each retry log carries a hint
/// (see [`transport_hint`]).
pub const HINT_AFTER: u32 = 3;

pub use legion_common::text::{error_chain, status_chain};

/// What an operator should check when calls keep failing with `status` before reaching the control
/// plane's service (a transport error), judged from the code and the error chain:
/// - the TLS handshake or the first exchange fails (`UNKNOWN` or `CANCELLED` with a "transport error",
///   e.g. the connection closed right after the handshake, or a chain naming a certificate, an alert
///   or a handshake): the control plane may refuse this node's certificate (signed
///   by another CA than the control plane's `tls.ca`, expired, or not a client certificate), or this
///   node may refuse the control plane's (not signed by this node's `tls.ca`);
/// - the connection is refused or times out: the control plane is down or `control_plane.url` is wrong.
///
/// `None` for answers of the service itself.
pub fn transport_hint(status: &Status) -> Option<&'static str> {
    let chain = status_chain(status).to_ascii_lowercase();
    let tls = ["certificate", "alert", "handshake", "tls", "unknownissuer", "unknownca", "badcertificate"]
        .iter()
        .any(|word| chain.contains(word));
    match status.code() {
        Code::Unknown | Code::Unavailable | Code::Cancelled if tls => Some(
            "the TLS exchange with the control plane fails: the control plane may refuse this node's certificate \
             (tls.cert signed by another CA than the control plane's tls.ca, expired, or not a client certificate), \
             or tls.ca here may not be the CA of the control plane's certificate",
        ),
        Code::Unknown | Code::Cancelled if chain.contains("transport error") => Some(
            "the connection to the control plane fails after it was opened: the control plane may refuse this \
             node's certificate (e.g. signed by another CA than its tls.ca) or close the connection",
        ),
        Code::Unavailable | Code::DeadlineExceeded => {
            Some("the control plane does not answer: check that it runs and that control_plane.url points to it")
        }
        _ => None,
    }
}

/// Registers the node, retrying transient failures with capped backoff (100 ms to 5 s) until the
/// control plane answers. Returns `None` when `shutdown` is cancelled first. Each retry is logged with
/// the error chain; after [`HINT_AFTER`] consecutive transport failures the log carries a hint
/// ([`transport_hint`]), e.g. that the control plane may refuse this node's certificate.
///
/// # Errors
/// [`Error::Refused`] when the control plane refuses the registration itself (`INVALID_ARGUMENT`,
/// `FAILED_PRECONDITION`, …) or the node's credentials (`PERMISSION_DENIED`, e.g. `executor.name` not
/// matching the certificate; `UNAUTHENTICATED`): retrying would not help.
pub async fn register(
    control_plane: &Arc<dyn ControlPlane>,
    request: &RegisterNodeRequest,
    shutdown: &CancellationToken,
) -> Result<Option<RegisterNodeResponse>, Error> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut transport_failures = 0u32;
    loop {
        let answer = tokio::select! {
            answer = control_plane.register(request.clone()) => answer,
            () = shutdown.cancelled() => return Ok(None),
        };
        match answer {
            Ok(response) => return Ok(Some(response)),
            Err(status) if is_transient(&status) && !is_credential_error(&status) => {
                let delay = backoff.next_delay();
                let hint = transport_hint(&status);
                transport_failures = if hint.is_some() { transport_failures.saturating_add(1) } else { 0 };
                let error = status_chain(&status);
                match hint.filter(|_| transport_failures >= HINT_AFTER) {
                    Some(hint) => tracing::warn!(
                        node = %request.name, code = ?status.code(), %error, failures = transport_failures, hint,
                        retry_in_ms = delay.as_millis(), "control plane not answering registration, retrying"
                    ),
                    None => tracing::warn!(
                        node = %request.name, code = ?status.code(), %error,
                        retry_in_ms = delay.as_millis(), "control plane not answering registration, retrying"
                    ),
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Ok(None),
                }
            }
            Err(status) => return Err(Error::Refused { name: request.name.clone(), status }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Answers registration with the queued statuses, then succeeds.
    struct Flaky(Mutex<Vec<Status>>);

    #[async_trait]
    impl ControlPlane for Flaky {
        async fn register(&self, _r: RegisterNodeRequest) -> Result<RegisterNodeResponse, Status> {
            match self.0.lock().expect("lock").pop() {
                Some(status) => Err(status),
                None => Ok(RegisterNodeResponse {
                    heartbeat_ms: 1234,
                    disabled_extensions: vec!["http".into()],
                    node_lease_ms: 0,
                }),
            }
        }
        async fn heartbeat(&self, _r: HeartbeatRequest, _t: Duration) -> Result<HeartbeatResponse, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn start_tasks(&self, _r: StartTaskRequest) -> Result<StartTaskResponse, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn complete_tasks(&self, _r: CompleteTaskRequest) -> Result<CompleteTaskResponse, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    fn request() -> RegisterNodeRequest {
        RegisterNodeRequest { name: "exec-1".into(), ..RegisterNodeRequest::default() }
    }

    #[test]
    fn transient_codes_are_retried() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Internal, Code::Unknown, Code::PermissionDenied] {
            assert!(is_transient(&Status::new(code, "x")), "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::NotFound, Code::FailedPrecondition, Code::Unimplemented] {
            assert!(!is_transient(&Status::new(code, "x")), "{code:?}");
        }
    }

    #[tokio::test]
    async fn registration_retries_until_the_control_plane_answers() {
        let cp: Arc<dyn ControlPlane> =
            Arc::new(Flaky(Mutex::new(vec![Status::unavailable("down"), Status::unavailable("down")])));
        let response = register(&cp, &request(), &CancellationToken::new()).await.expect("registered");
        assert_eq!(response.map(|r| r.heartbeat_ms), Some(1234));
    }

    #[tokio::test]
    async fn refused_registration_is_an_error() {
        for status in [
            Status::invalid_argument("concurrency: must be 1 to 65535"),
            Status::permission_denied("name: \"exec-1\" does not match the node name of the client certificate"),
        ] {
            let cp: Arc<dyn ControlPlane> = Arc::new(Flaky(Mutex::new(vec![status])));
            let err = register(&cp, &request(), &CancellationToken::new()).await.expect_err("refused");
            assert!(err.to_string().contains("refused to register node exec-1"), "{err}");
        }
    }

    #[tokio::test]
    async fn shutdown_stops_the_retries() {
        let cp: Arc<dyn ControlPlane> = Arc::new(Flaky(Mutex::new(vec![Status::unavailable("down"); 1000])));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        assert!(register(&cp, &request(), &shutdown).await.expect("no error").is_none());
    }

    #[test]
    fn hints_follow_the_kind_of_transport_failure() {
        let refused = Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert!(transport_hint(&refused).is_some_and(|h| h.contains("control_plane.url")));
        let tls = Status::unavailable("invalid peer certificate: UnknownIssuer");
        assert!(transport_hint(&tls).is_some_and(|h| h.contains("certificate")));
        let closed = Status::unknown("transport error");
        assert!(transport_hint(&closed).is_some_and(|h| h.contains("certificate")));
        let cancelled = Status::cancelled("operation was canceled: transport error: connection closed");
        assert!(transport_hint(&cancelled).is_some_and(|h| h.contains("certificate")));
        let alert = Status::unknown("transport error: connection error: received fatal alert: DecryptError");
        assert!(transport_hint(&alert).is_some_and(|h| h.contains("refuse this node's certificate")));
        assert_eq!(transport_hint(&Status::cancelled("request dropped")), None);
        for answered in [Status::invalid_argument("x"), Status::internal("database"), Status::not_found("node")] {
            assert_eq!(transport_hint(&answered), None, "{answered}");
        }
    }

    /// Regression: an executor whose certificate the control plane refuses (signed by another CA)
    /// logged only "code=Unknown transport error". Against a real TLS server: the failure is a
    /// transport error whose hint names the certificate.
    #[tokio::test]
    async fn a_certificate_the_server_refuses_gets_a_certificate_hint() {
        legion_common::install_crypto_provider();
        let ours = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        legion_common::tls::write_dev_certs(ours.path(), "exec-1").expect("certs");
        legion_common::tls::write_dev_certs(other.path(), "exec-1").expect("other CA");
        let server_tls = TlsSettings {
            ca: Some(ours.path().join("ca.pem")),
            cert: Some(ours.path().join("control-plane.pem")),
            key: Some(ours.path().join("control-plane-key.pem")),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = tonic::transport::Server::builder()
            .tls_config(legion_common::tls::server_config(&server_tls).expect("server tls"))
            .expect("tls config")
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        let server = tokio::spawn(server);
        let url = format!("https://localhost:{port}");
        let client = |dir: &std::path::Path| {
            let tls = TlsSettings {
                ca: Some(ours.path().join("ca.pem")),
                cert: Some(dir.join("executor.pem")),
                key: Some(dir.join("executor-key.pem")),
            };
            GrpcControlPlane::connect_lazy(std::slice::from_ref(&url), &tls).expect("client")
        };
        // A certificate of the server's CA gets through TLS (this server has no executor service).
        let through = client(ours.path()).register(request()).await.expect_err("service not served");
        assert_eq!(through.code(), Code::Unimplemented, "{through}");
        assert_eq!(transport_hint(&through), None);
        // A certificate of another CA is refused in the TLS exchange.
        let refused = client(other.path()).register(request()).await.expect_err("certificate refused");
        assert!(is_transient(&refused), "{refused}");
        let hint = transport_hint(&refused).unwrap_or_else(|| panic!("no hint for {}", status_chain(&refused)));
        assert!(hint.contains("refuse this node's certificate"), "{hint}");
        server.abort();
    }

    #[tokio::test]
    async fn malformed_urls_are_settings_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        legion_common::tls::write_dev_certs(dir.path(), "exec-1").expect("certs");
        let tls = TlsSettings {
            ca: Some(dir.path().join("ca.pem")),
            cert: Some(dir.path().join("executor.pem")),
            key: Some(dir.path().join("executor-key.pem")),
        };
        legion_common::install_crypto_provider();
        assert!(GrpcControlPlane::connect_lazy(&["https://localhost:50051".into()], &tls).is_ok());
        assert!(matches!(GrpcControlPlane::connect_lazy(&["not a url".into()], &tls), Err(Error::Url(_))));
        let missing = TlsSettings { ca: None, ..tls };
        assert!(matches!(
            GrpcControlPlane::connect_lazy(&["https://localhost:50051".into()], &missing),
            Err(Error::Tls(_))
        ));
    }
}
