//! The control-plane client: the four calls of `legion.v1.ExecutorService` behind the
//! [`ControlPlane`] trait, implemented over one tonic `Channel` with mTLS ([`GrpcControlPlane`]), and
//! the start-up registration that retries until the control plane answers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use legion_common::settings::TlsSettings;
use legion_proto::v1::executor_service_client::ExecutorServiceClient;
use legion_proto::v1::{
    CompleteTaskRequest, CompleteTaskResponse, HeartbeatRequest, HeartbeatResponse, RegisterNodeRequest,
    RegisterNodeResponse, StartTaskRequest, StartTaskResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::backoff::Backoff;

/// Client setup and registration failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `control_plane.url` is not a valid endpoint.
    #[error("control_plane.url: {0}")]
    Url(String),
    /// The TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] legion_common::tls::Error),
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
    /// extensions.
    async fn heartbeat(&self, request: HeartbeatRequest) -> Result<HeartbeatResponse, Status>;
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
    client: ExecutorServiceClient<Channel>,
}

impl GrpcControlPlane {
    /// A client of `url` (`https://host:port`). Does not connect until the first call.
    ///
    /// # Errors
    /// [`Error::Url`] for a malformed URL, [`Error::Tls`] when the PEM files cannot be read.
    pub fn connect_lazy(url: &str, tls: &TlsSettings) -> Result<Self, Error> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Error::Url(e.to_string()))?
            .tls_config(legion_common::tls::client_config(tls)?)
            .map_err(|e| Error::Url(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(Self { client: ExecutorServiceClient::new(endpoint.connect_lazy()) })
    }
}

#[async_trait]
impl ControlPlane for GrpcControlPlane {
    async fn register(&self, request: RegisterNodeRequest) -> Result<RegisterNodeResponse, Status> {
        Ok(self.client.clone().register_node(request).await?.into_inner())
    }

    async fn heartbeat(&self, request: HeartbeatRequest) -> Result<HeartbeatResponse, Status> {
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

/// Registers the node, retrying transient failures with capped backoff (100 ms to 5 s) until the
/// control plane answers. Returns `None` when `shutdown` is cancelled first.
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
    loop {
        let answer = tokio::select! {
            answer = control_plane.register(request.clone()) => answer,
            () = shutdown.cancelled() => return Ok(None),
        };
        match answer {
            Ok(response) => return Ok(Some(response)),
            Err(status) if is_transient(&status) && !is_credential_error(&status) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    node = %request.name, code = ?status.code(), error = %status.message(),
                    retry_in_ms = delay.as_millis(), "control plane not answering registration, retrying"
                );
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
                None => Ok(RegisterNodeResponse { heartbeat_ms: 1234, disabled_extensions: vec!["http".into()] }),
            }
        }
        async fn heartbeat(&self, _r: HeartbeatRequest) -> Result<HeartbeatResponse, Status> {
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
        assert!(GrpcControlPlane::connect_lazy("https://localhost:50051", &tls).is_ok());
        assert!(matches!(GrpcControlPlane::connect_lazy("not a url", &tls), Err(Error::Url(_))));
        let missing = TlsSettings { ca: None, ..tls };
        assert!(matches!(GrpcControlPlane::connect_lazy("https://localhost:50051", &missing), Err(Error::Tls(_))));
    }
}
