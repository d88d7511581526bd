//! What every handler shares: the gRPC clients over the one channel, the metrics and the limits.

use std::sync::Arc;
use std::time::Duration;

use legion_common::failover::Failover;
use legion_proto::v1::audit_service_client::AuditServiceClient;
use legion_proto::v1::auth_service_client::AuthServiceClient;
use legion_proto::v1::catalog_service_client::CatalogServiceClient;
use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::v1::config_service_client::ConfigServiceClient;
use legion_proto::v1::dead_letter_service_client::DeadLetterServiceClient;
use legion_proto::v1::policy_service_client::PolicyServiceClient;
use legion_proto::v1::schedule_service_client::ScheduleServiceClient;
use legion_proto::v1::task_service_client::TaskServiceClient;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_client::HealthClient;

use crate::client::MAX_RESPONSE_BYTES;
use crate::metrics::HttpMetrics;

/// Shared state of the REST handlers. Cheap to clone: the clients share one channel.
#[derive(Clone)]
pub struct AppState {
    /// `legion.v1.TaskService`.
    pub tasks: TaskServiceClient<Failover>,
    /// `legion.v1.DeadLetterService`.
    pub dead_letters: DeadLetterServiceClient<Failover>,
    /// `legion.v1.CatalogService`.
    pub catalog: CatalogServiceClient<Failover>,
    /// `legion.v1.ChainService`.
    pub chains: ChainServiceClient<Failover>,
    /// `legion.v1.ScheduleService`.
    pub schedules: ScheduleServiceClient<Failover>,
    /// `legion.v1.AuthService`: API keys, tokens, capabilities, the JWKS.
    pub auth: AuthServiceClient<Failover>,
    /// `legion.v1.PolicyService`.
    pub policies: PolicyServiceClient<Failover>,
    /// `legion.v1.AuditService`.
    pub audit: AuditServiceClient<Failover>,
    /// `legion.v1.ConfigService`.
    pub config: ConfigServiceClient<Failover>,
    /// `grpc.health.v1.Health`, for `/readyz`.
    pub health: HealthClient<Failover>,
    /// HTTP metrics.
    pub metrics: Arc<HttpMetrics>,
    /// The OpenAPI document, serialized once.
    pub openapi: Arc<String>,
    /// `api.max_body_bytes`.
    pub max_body_bytes: usize,
    /// Cancelled at shutdown; ends open event streams so the server can drain.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Clients over `channel`.
    pub fn new(
        channel: Failover,
        metrics: Arc<HttpMetrics>,
        openapi: String,
        max_body_bytes: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            tasks: TaskServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            dead_letters: DeadLetterServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            catalog: CatalogServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            chains: ChainServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            schedules: ScheduleServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            auth: AuthServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            policies: PolicyServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            audit: AuditServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            config: ConfigServiceClient::new(channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            health: HealthClient::new(channel),
            metrics,
            openapi: Arc::new(openapi),
            max_body_bytes,
            shutdown,
        }
    }
}

/// How long `/readyz` waits for the control plane's health answer, in ms.
pub const READY_TIMEOUT: Duration = Duration::from_millis(2000);
