//! The gRPC server: TLS only (client certificates verified against `tls.ca`, optional at the TLS layer),
//! the Legion services, `grpc.health.v1` (every service SERVING, NOT_SERVING once draining) and
//! reflection in both `grpc.reflection.v1` and `v1alpha` (grpcurl 1.8.6 speaks only v1alpha).
//!
//! Message sizes are set explicitly on each Legion service, in both directions, to
//! [`MAX_MESSAGE_BYTES`]: tonic's defaults (4 MiB to decode, no limit to encode) would refuse a batch of
//! completions with large results, and would let a response grow without bound. What fills a response
//! is capped below that: a `ListTasks` page by `limits.max_list_bytes` (at most half of it, checked at
//! start), a task by `limits.max_payload_bytes` and `limits.max_result_bytes`. Clients must accept
//! responses that large (tonic clients default to 4 MiB: raise `max_decoding_message_size`). Health
//! and reflection keep tonic's defaults; their messages are small.

use std::future::Future;

use legion_proto::v1::audit_service_server::AuditServiceServer;
use legion_proto::v1::auth_service_server::AuthServiceServer;
use legion_proto::v1::catalog_service_server::CatalogServiceServer;
use legion_proto::v1::chain_service_server::ChainServiceServer;
use legion_proto::v1::config_service_server::ConfigServiceServer;
use legion_proto::v1::dead_letter_service_server::DeadLetterServiceServer;
use legion_proto::v1::executor_service_server::ExecutorServiceServer;
use legion_proto::v1::policy_service_server::PolicyServiceServer;
use legion_proto::v1::schedule_service_server::ScheduleServiceServer;
use legion_proto::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::grpc::audit::AuditApi;
use crate::grpc::catalog::CatalogApi;
use crate::grpc::chains::ChainApi;
use crate::grpc::config::ConfigApi;
use crate::grpc::dead_letters::DeadLetterApi;
use crate::grpc::executor::ExecutorApi;
use crate::grpc::schedules::ScheduleApi;
use crate::grpc::security::{AuthApi, PolicyApi};
use crate::grpc::tasks::TaskApi;

/// Largest gRPC message the Legion services decode or encode, in bytes (64 MiB): room for a batch of
/// completions with `limits.max_result_bytes` results (4 MiB by default), and for a `ListTasks` page of
/// `limits.max_list_bytes` (16 MiB by default, at most half of this) plus one oversize task.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Server failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reflection could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed.
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The Legion services to serve.
pub struct Services {
    /// `legion.v1.TaskService`.
    pub tasks: TaskApi,
    /// `legion.v1.CatalogService`.
    pub catalog: CatalogApi,
    /// `legion.v1.ExecutorService`.
    pub executor: ExecutorApi,
    /// `legion.v1.AuthService`.
    pub auth: AuthApi,
    /// `legion.v1.PolicyService`.
    pub policies: PolicyApi,
    /// `legion.v1.AuditService`.
    pub audit: AuditApi,
    /// `legion.v1.ConfigService`.
    pub config: ConfigApi,
    /// `legion.v1.ChainService`.
    pub chains: ChainApi,
    /// `legion.v1.ScheduleService`.
    pub schedules: ScheduleApi,
    /// `legion.v1.DeadLetterService`.
    pub dead_letters: DeadLetterApi,
}

/// The fully qualified names of the Legion services, as health reports them.
pub fn service_names() -> [&'static str; 10] {
    [
        <TaskServiceServer<TaskApi> as NamedService>::NAME,
        <CatalogServiceServer<CatalogApi> as NamedService>::NAME,
        <ExecutorServiceServer<ExecutorApi> as NamedService>::NAME,
        <AuthServiceServer<AuthApi> as NamedService>::NAME,
        <PolicyServiceServer<PolicyApi> as NamedService>::NAME,
        <AuditServiceServer<AuditApi> as NamedService>::NAME,
        <ConfigServiceServer<ConfigApi> as NamedService>::NAME,
        <ChainServiceServer<ChainApi> as NamedService>::NAME,
        <ScheduleServiceServer<ScheduleApi> as NamedService>::NAME,
        <DeadLetterServiceServer<DeadLetterApi> as NamedService>::NAME,
    ]
}

/// Sets every Legion service (and the server as a whole, `""`) to `status`.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in service_names() {
        reporter.set_service_status(name, status).await;
    }
}

/// The span of one gRPC call: its method and the caller's `x-request-id` (the gateway always sends one),
/// so that every log line of the call carries the request id.
fn request_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= crate::auth::credential::MAX_REQUEST_ID_BYTES)
        .unwrap_or("");
    tracing::info_span!("grpc", method = %request.uri().path(), request_id)
}

/// Serves `services` on `listener` until `shutdown` resolves, then drains in-flight calls.
///
/// # Errors
/// [`Error`] when reflection cannot be built or the server fails.
pub async fn serve(
    listener: TcpListener,
    tls: ServerTlsConfig,
    services: Services,
    health: HealthReporter,
    health_service: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    set_health(&health, ServingStatus::Serving).await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(legion_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .trace_fn(request_span)
        .tls_config(tls)?
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            TaskServiceServer::new(services.tasks)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            CatalogServiceServer::new(services.catalog)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ExecutorServiceServer::new(services.executor)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(AuthServiceServer::new(services.auth))
        .add_service(PolicyServiceServer::new(services.policies))
        .add_service(AuditServiceServer::new(services.audit).max_encoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(ConfigServiceServer::new(services.config))
        .add_service(
            ChainServiceServer::new(services.chains)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ScheduleServiceServer::new(services.schedules)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(DeadLetterServiceServer::new(services.dead_letters).max_encoding_message_size(MAX_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            set_health(&health, ServingStatus::NotServing).await;
        })
        .await?;
    Ok(())
}
