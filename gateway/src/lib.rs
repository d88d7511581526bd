//! Legion's REST gateway: JSON over HTTP in front of the control plane's gRPC API (DESIGN.md
//! section 7).
//!
//! Every request becomes one gRPC call on a single lazily connected mTLS channel to
//! `control_plane.url`; the gateway keeps no state of its own. Errors are `application/problem+json`
//! with the gRPC code name in `code` ([`problem`]). The caller's credential headers (`Authorization`,
//! `X-API-Key`) and socket address are passed on: the control plane authenticates and authorizes every
//! call itself ([`client`]); the gateway never authenticates or vouches for a caller. Only
//! [`PUBLIC_PATHS`] are meant to be used without a credential.
//!
//! [`view`] holds the REST shapes of Legion's objects; the `legion` CLI prints the same shapes.

pub mod body;
pub mod client;
pub mod input;
mod layers;
pub mod metrics;
pub mod problem;
mod routes;
mod state;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::middleware::{from_fn, from_fn_with_state};
use legion_common::Settings;
use legion_common::failover::Failover;
use legion_common::settings::ApiSettings;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::layers::{
    HOST_EXEMPT_PATHS, MAX_AUTHORIZATION_BYTES, MAX_CREDENTIAL_BYTES, MAX_FORWARDED_BYTES, MAX_HEADER_BYTES,
    MAX_HEADER_COUNT, MAX_HEADER_VALUE_BYTES, MAX_REQUEST_ID_BYTES, MAX_URI_BYTES,
};
use crate::metrics::HttpMetrics;
use crate::routes::{audit, auth, catalog, chains, config, dead_letters, events, policies, schedules, system, tasks};
use crate::state::AppState;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings for the control-plane channel are unusable (`control_plane.url`, `tls.*`).
    #[error(transparent)]
    Settings(#[from] client::Error),
    /// `api.listen` could not be bound.
    #[error("cannot bind api.listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("http server failed: {0}")]
    Serve(std::io::Error),
}

impl Error {
    /// Whether the error is a settings problem (the binary exits 64 for those).
    pub fn is_settings(&self) -> bool {
        matches!(self, Self::Settings(_))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Legion REST API",
        description = "Submit and follow tasks, define chains and schedules, inspect the extension catalog and the nodes, manage API keys \
            and policies, read the audit trail and the settings. Every route but the operations ones and \
            /.well-known/jwks.json needs a credential: `X-API-Key: <key>` or `Authorization: Bearer <JWT>`; \
            the control plane authorizes each call against the caller's policies (401 UNAUTHENTICATED without \
            a valid credential, 403 PERMISSION_DENIED without the capability). Errors are \
            application/problem+json (RFC 9457) with the gRPC code name in `code`."
    ),
    tags(
        (name = "tasks", description = "Submit, inspect, list, cancel and watch tasks"),
        (name = "dead-letters", description = "Tasks that ended dead_lettered (delivered more than \
            transport.delivery_limit times, or unroutable): list them and replay them"),
        (name = "chains", description = "Chains: named sets of relationships that turn the completion of one task \
            into the next; submit a task with `chain` to start a run"),
        (name = "schedules", description = "Schedules: a function (or the root of a chain run) fired on a cron \
            expression in an IANA time zone or every interval_ms, each slot exactly once across the control-plane \
            replicas; their fires; previews of a cadence's slots"),
        (name = "catalog", description = "Extensions, executor nodes, and the control-plane replicas with the \
            scheduler lease"),
        (name = "auth", description = "API keys, tokens, capabilities and the token-verifying keys"),
        (name = "policies", description = "Vault-style ACL policies"),
        (name = "audit", description = "The append-only, hash-chained audit trail"),
        (name = "config", description = "The control plane's effective settings, secrets redacted"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    ),
    components(schemas(problem::Problem, view::TaskEvent))
)]
struct ApiDoc;

/// The routes with their OpenAPI description. Every route but `/events` is bounded by `timeout`.
fn api_routes(timeout: Duration) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tasks::submit_task, tasks::list_tasks))
        .routes(routes!(tasks::get_task))
        .routes(routes!(tasks::cancel_task))
        .routes(routes!(tasks::list_attempts))
        .routes(routes!(dead_letters::list_dead_letters))
        .routes(routes!(dead_letters::replay_dead_letter))
        .routes(routes!(chains::apply_chain, chains::list_chains))
        .routes(routes!(chains::get_chain, chains::delete_chain))
        .routes(routes!(schedules::create_schedule, schedules::list_schedules))
        .routes(routes!(schedules::get_schedule, schedules::delete_schedule))
        .routes(routes!(schedules::pause_schedule))
        .routes(routes!(schedules::resume_schedule))
        .routes(routes!(schedules::list_schedule_fires))
        .routes(routes!(schedules::preview_schedule))
        .routes(routes!(catalog::list_extensions))
        .routes(routes!(catalog::disable_extension))
        .routes(routes!(catalog::enable_extension))
        .routes(routes!(catalog::list_nodes))
        .routes(routes!(auth::create_api_key, auth::list_api_keys))
        .routes(routes!(auth::revoke_api_key))
        .routes(routes!(auth::issue_token))
        .routes(routes!(auth::capabilities))
        .routes(routes!(auth::whoami))
        .routes(routes!(auth::jwks))
        .routes(routes!(policies::list_policies))
        .routes(routes!(policies::put_policy, policies::get_policy, policies::delete_policy))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(config::get_config))
        .routes(routes!(config::patch_config))
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi))
        .layer(from_fn_with_state(timeout, layers::timeout))
        .routes(routes!(events::watch_task))
        .split_for_parts();
    (routes, with_security(document))
}

/// The paths served to anyone, without a credential; the control plane refuses every other call that
/// lacks one. Matched exactly: no prefix, case or trailing-slash variant is public.
pub const PUBLIC_PATHS: &[&str] =
    &["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/.well-known/jwks.json"];

/// Declares the credentials in the OpenAPI document: the `api_key` (`X-API-Key` header) and `bearer`
/// (JWT) schemes, required by every operation except those of [`PUBLIC_PATHS`] (which declare an empty
/// requirement), and the 401 and 403 problems each other operation may answer.
fn with_security(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "An API key, as created by POST /api/v1/api-keys",
        ))),
    );
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some("A JWT from POST /api/v1/auth/token, or signed with a crypt.jwt key"))
                .build(),
        ),
    );
    let none: [&str; 0] = [];
    document.security = Some(vec![SecurityRequirement::new("api_key", none), SecurityRequirement::new("bearer", none)]);
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                problem::PROBLEM_JSON,
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build()
    };
    for (path, item) in &mut document.paths.paths {
        if PUBLIC_PATHS.contains(&path.as_str()) {
            continue;
        }
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            responses
                .entry("401".to_owned())
                .or_insert_with(|| problem("No valid credential (UNAUTHENTICATED)").into());
            responses
                .entry("403".to_owned())
                .or_insert_with(|| problem("The caller's policies do not allow it (PERMISSION_DENIED)").into());
        }
    }
    document
}

/// The OpenAPI 3.1 document of the REST API, as served at `GET /api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes(Duration::from_secs(1)).1
}

/// The REST API over `channel` (see [`client::connect_lazy`]), with its middleware: request ids
/// (`x-request-id`, generated when absent or unusable, echoed in the response), a tracing span per
/// request, metrics, the request-head limits ([`MAX_HEADER_VALUE_BYTES`], [`MAX_HEADER_BYTES`],
/// [`MAX_HEADER_COUNT`], [`MAX_FORWARDED_BYTES`], [`MAX_URI_BYTES`]: 431 or 414 before anything is
/// forwarded), the `Host` checks (one `Host`, agreeing with the target's authority, in
/// `api.allowed_hosts` except on [`HOST_EXEMPT_PATHS`]), the `api.max_body_bytes` limit and the
/// `api.request_timeout_ms` timeout. `shutdown` ends open event streams, each with a final
/// `event: error` problem (503 `UNAVAILABLE`, "gateway shutting down"), so that a graceful shutdown
/// completes and clients know to reconnect. Serve it with `axum::serve` and
/// `into_make_service_with_connect_info::<SocketAddr>()`, so that calls carry the caller's address
/// ([`client::CLIENT_ADDR_METADATA`]); served without it, they carry none.
pub fn router(api: &ApiSettings, channel: impl Into<Failover>, shutdown: CancellationToken) -> Router {
    let (routes, document) = api_routes(Duration::from_millis(api.request_timeout_ms));
    let openapi = document.to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot serialize the openapi document");
        "{}".to_owned()
    });
    let metrics = Arc::new(HttpMetrics::new());
    let state = AppState::new(channel.into(), metrics.clone(), openapi, api.max_body_bytes, shutdown);
    let allowed_hosts: Arc<[String]> = api.allowed_hosts.clone().into();
    routes
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(api.max_body_bytes))
        .layer(from_fn_with_state(allowed_hosts, layers::check_host))
        .layer(from_fn(layers::limit_headers))
        .layer(from_fn(layers::ensure_problem))
        .layer(from_fn_with_state(metrics, metrics::track))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::WARN)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(from_fn(layers::sanitize_request_id))
        .with_state(state)
}

fn request_span(request: &axum::http::Request<Body>) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // The span exists before the limits are checked: a path is logged up to 256 bytes.
    let path = layers::quoted(request.uri().path(), 256);
    tracing::info_span!("http_request", method = %request.method(), route, %path, request_id)
}

/// Runs the gateway until `shutdown` is cancelled: checks its identity ([`client::check_identity`]:
/// `tls.cert` and `tls.key` are required), connects (lazily) to the control plane, binds `api.listen`
/// and serves [`router`], then drains in-flight requests; open event streams end with a final
/// `503 UNAVAILABLE` "gateway shutting down" problem.
///
/// # Errors
/// [`Error::Settings`] for unset or unusable `tls.*` or an unusable `control_plane.url`,
/// [`Error::Bind`], [`Error::Serve`].
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    client::check_identity(&settings).map_err(Error::from)?;
    let channel = client::connect_lazy(&settings).map_err(Error::from)?;
    let app = router(&settings.api, channel, shutdown.clone());
    let addr = settings.api.listen;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
    tracing::info!(listen = %addr, control_plane = %settings.control_plane.url, failover = ?settings.control_plane.failover_urls, "gateway listening");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(Error::Serve)?;
    tracing::info!("gateway stopped");
    Ok(())
}
