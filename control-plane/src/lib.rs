//! The Legion control plane: the gRPC API (tasks, catalog, executors), the durable state in PostgreSQL,
//! and the loops that keep tasks moving (outbox publisher, promoter of delayed tasks, lease sweeper,
//! and the scheduler, which acts only on the replica that leads: see [`schedules`]).
//!
//! [`run`] is the whole process; the binary only parses the command line, loads settings and handles
//! signals. Tests can call [`run`] with their own settings and shutdown token.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod chains;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod events;
pub mod grpc;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod schedules;
pub mod server;
pub mod store;
pub mod tasks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use legion_common::Settings;
use legion_common::admin::Readiness;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::auth::Auth;
use crate::auth::jwt::JwtKeys;
use crate::chains::fire::Firing;
use crate::chains::sandbox::{Sandbox, SandboxSettings};
use crate::dispatch::backoff::Backoff;
use crate::dispatch::lease::{LeaseSettings, Sweeper};
use crate::dispatch::promoter;
use crate::dispatch::publisher::Publisher;
use crate::events::Events;
use crate::grpc::audit::AuditApi;
use crate::grpc::catalog::CatalogApi;
use crate::grpc::chains::ChainApi;
use crate::grpc::config::ConfigApi;
use crate::grpc::dead_letters::DeadLetterApi;
use crate::grpc::executor::{ExecutorApi, ExecutorConfig};
use crate::grpc::schedules::ScheduleApi;
use crate::grpc::security::{AuthApi, PolicyApi};
use crate::grpc::tasks::TaskApi;
use crate::leader::LeaseStore;
use crate::metrics::Metrics;
use crate::schedules::evaluate::EvaluationSettings;
use crate::schedules::history::HistorySettings;
use crate::schedules::scheduler::{Scheduler, SchedulerParts, SchedulerSettings};
use crate::store::pg::PgStore;
use crate::store::schedules::{FireHistoryStore, ScheduleStore};
use crate::store::security::SecurityStore;
use crate::store::{OutboxStore, Store};
use crate::tasks::submit::{Signals, Submitter};

/// Most audit records committed in one transaction.
pub const AUDIT_BATCH: usize = 1024;

/// How long the leader waits between two sweeps of the fire history (`control_plane.schedule_history`).
pub const HISTORY_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How long startup keeps trying to reach PostgreSQL before it gives up.
pub const DATABASE_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings the control plane cannot run with, beyond `Settings::validate`.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `tls.*`: a file is missing or unreadable, is not PEM, or the key does not belong to the
    /// certificate. The message names the setting.
    #[error(transparent)]
    Tls(#[from] legion_common::tls::Error),
    /// `limits.max_list_bytes` leaves no room in a gRPC message for the page.
    #[error(
        "settings key limits.max_list_bytes: {0} bytes is more than {max} (half the control plane's \
         largest gRPC message, server::MAX_MESSAGE_BYTES)",
        max = MAX_LIST_BYTES
    )]
    ListBytes(usize),
    /// `crypt.jwt.*`: a key file is unreadable, not a key, or the RS256 pair does not match.
    #[error(transparent)]
    Jwt(#[from] auth::jwt::SettingsError),
}

/// Largest accepted `limits.max_list_bytes`: half of [`server::MAX_MESSAGE_BYTES`], so a full page plus
/// its first task (which may pass the limit alone) fits in one response.
pub const MAX_LIST_BYTES: usize = server::MAX_MESSAGE_BYTES / 2;

/// Checks what the control plane needs from settings beyond `Settings::validate`: the TLS identity
/// (`tls.ca`, `tls.cert`, `tls.key` readable PEM, the key matching the certificate) and that
/// `limits.max_list_bytes` fits in a gRPC message. The binary exits 64 when this fails.
///
/// # Errors
/// [`SettingsError`], whose message names the setting at fault.
pub fn check_settings(settings: &Settings) -> Result<(), SettingsError> {
    legion_common::tls::check_identity(&settings.tls)?;
    legion_common::tls::server_config(&settings.tls)?;
    check_settings_limits(settings)?;
    JwtKeys::load(&settings.crypt.jwt)?;
    Ok(())
}

/// Checks that `limits.max_list_bytes` fits in a gRPC message (at start, and for changes made through
/// the API).
///
/// # Errors
/// [`SettingsError::ListBytes`].
pub fn check_settings_limits(settings: &Settings) -> Result<(), SettingsError> {
    if settings.limits.max_list_bytes > MAX_LIST_BYTES {
        return Err(SettingsError::ListBytes(settings.limits.max_list_bytes));
    }
    Ok(())
}

/// Connects to PostgreSQL and applies the migrations, then returns.
///
/// # Errors
/// When the database stays unreachable for [`DATABASE_STARTUP_TIMEOUT`] or a migration fails.
pub async fn migrate(settings: &Settings, shutdown: &CancellationToken) -> anyhow::Result<PgPool> {
    let pool = connect_database(settings, shutdown).await?;
    store::pg::migrate(&pool).await.context("cannot apply the database migrations")?;
    tracing::info!("database migrations applied");
    Ok(pool)
}

/// Runs the control plane until `shutdown` is cancelled, then drains: the gRPC server stops accepting
/// and finishes in-flight calls (watch streams end), the submit writer answers what it holds, the loops
/// finish their round, and the pool closes.
///
/// # Errors
/// Startup failures (database unreachable, migrations, TLS material, a listen address in use) and a
/// failing gRPC server.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let program = std::env::current_exe().context("cannot find the control plane's own executable")?;
    run_with(settings, Options { sandbox_program: program }, shutdown).await
}

/// What [`run_with`] takes beyond settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `legion-control-plane` executable, started as `sandbox` processes to evaluate chain and
    /// schedule transformations ([`chains::sandbox`]). [`run`] uses the running executable; tests that run the
    /// control plane in their own process pass the built binary.
    pub sandbox_program: std::path::PathBuf,
}

/// [`run`] with explicit [`Options`].
///
/// # Errors
/// As [`run`].
pub async fn run_with(settings: Settings, options: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    check_settings(&settings)?;
    let tls = legion_common::tls::server_config(&settings.tls).context("invalid TLS settings")?;
    let pool = migrate(&settings, &shutdown).await?;
    let (limits_tx, limits) = tokio::sync::watch::channel(settings.limits.clone());
    let sandbox_settings = SandboxSettings {
        program: options.sandbox_program,
        workers: settings.control_plane.transform_workers,
        timeout: Duration::from_millis(settings.control_plane.transform_timeout_ms),
        memory_bytes: settings.control_plane.transform_memory_bytes,
        max_output_bytes: settings.control_plane.transform_max_output_bytes,
    };
    // Chains and schedules each have their own pool: slow schedule transformations cannot hold up the
    // firing of chains, nor the reverse.
    let sandbox = Sandbox::new(sandbox_settings.clone());
    let schedule_sandbox = Sandbox::new(sandbox_settings);
    let pg = PgStore::new(pool.clone())
        .with_firing(Firing::new(
            sandbox.clone(),
            limits.clone(),
            Duration::from_millis(settings.control_plane.transform_budget_ms),
        ))
        .with_retry(settings.retry.clone())
        .with_idempotency_retention(Duration::from_secs(settings.control_plane.idempotency_retention_s));
    let store: Arc<dyn Store> = Arc::new(pg.clone());
    let leases: Arc<dyn LeaseStore> = Arc::new(pg.clone());
    let schedules: Arc<dyn ScheduleStore> = Arc::new(pg.clone());
    let fire_history: Arc<dyn FireHistoryStore> = Arc::new(pg.clone());
    let security: Arc<dyn SecurityStore> = Arc::new(pg);
    config::apply_overrides(security.as_ref(), &settings, &limits_tx)
        .await
        .context("cannot read the settings changed through the API")?;

    let listener = tokio::net::TcpListener::bind(settings.control_plane.listen)
        .await
        .with_context(|| format!("cannot bind control_plane.listen {}", settings.control_plane.listen))?;
    // Nodes can reach this process from now on: the lease sweeper's grace starts here.
    let listening_since = tokio::time::Instant::now();
    let (registry, metrics) = metrics::registry();
    let readiness = Readiness::default();
    let admin =
        legion_common::admin::serve(settings.control_plane.admin_listen, readiness.clone(), registry, shutdown.clone())
            .await?;

    // Loops stop after the gRPC server has drained, so in-flight calls still find them running.
    let background = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let events = Events::new();
    let broker_up = Arc::new(AtomicBool::new(false));
    let mut loops = JoinSet::new();
    loops.spawn(
        Publisher::new(
            store.clone(),
            settings.transport.clone(),
            wake.clone(),
            events.clone(),
            metrics.clone(),
            broker_up.clone(),
        )
        .run(background.clone()),
    );
    loops.spawn(promoter::run(store.clone(), wake.clone(), events.clone(), background.clone()));
    let lease_settings = LeaseSettings {
        lease: Duration::from_millis(settings.control_plane.node_lease_ms),
        delivery_limit: settings.transport.delivery_limit,
    };
    loops.spawn(
        Sweeper::new(store.clone(), lease_settings, listening_since, wake.clone(), events.clone(), metrics.clone())
            .run(background.clone()),
    );
    loops.spawn(watch_readiness(store.clone(), broker_up, readiness, metrics.clone(), background.clone()));
    // The leader runs the work that must be single: the scheduler. Every replica records itself in
    // `nodes` under the name with which it contends for the lease.
    let holder = leader::holder_name(settings.control_plane.listen);
    let leader_lease = Duration::from_millis(settings.control_plane.leader_lease_ms);
    let (leadership, elector) =
        leader::spawn(leases.clone(), leader::SCHEDULER_LEASE, holder.clone(), leader_lease, background.clone());
    loops.spawn(announce_replica(schedules.clone(), holder.clone(), leader_lease / 3, background.clone()));

    let writers = usize::try_from(settings.data.max_connections / 4).unwrap_or(1).clamp(1, 4);
    let signals = Signals { wake: wake.clone(), events: events.clone(), metrics: metrics.clone() };
    let (submitter, writer) = Submitter::spawn(
        store.clone(),
        settings.control_plane.submit_batch,
        writers,
        signals.clone(),
        background.clone(),
    );

    let (audit, audit_writer) = AuditLog::spawn(pool.clone(), AUDIT_BATCH, background.clone());
    let jwt = JwtKeys::load(&settings.crypt.jwt).context("invalid crypt.jwt settings")?;
    let auth = Auth::new(security.clone(), audit.clone(), jwt, Duration::from_millis(settings.auth.cache_ttl_ms));
    auth.bootstrap(settings.auth.bootstrap_admin_key.as_deref()).await.context("cannot bootstrap the admin policy")?;
    auth.record_settings_loaded(settings.redacted()).await.context("cannot write the audit trail")?;
    loops.spawn(config::poll_overrides(security.clone(), settings.clone(), limits_tx.clone(), background.clone()));
    // Creates and resumes through this replica wake its scheduler at once.
    let schedule_changed = Arc::new(Notify::new());
    let scheduler_settings = SchedulerSettings {
        batch: settings.control_plane.schedule_batch,
        poll: Duration::from_millis(settings.control_plane.schedule_poll_ms),
        grace: Duration::from_millis(settings.control_plane.misfire_grace_ms),
        evaluation: EvaluationSettings {
            workers: settings.control_plane.transform_workers,
            timeout: Duration::from_millis(settings.control_plane.transform_timeout_ms),
            budget: Duration::from_millis(settings.control_plane.transform_budget_ms),
        },
    };
    let scheduler = Scheduler::new(
        SchedulerParts {
            schedules: schedules.clone(),
            store: store.clone(),
            auth: auth.clone(),
            audit: audit.clone(),
            sandbox: schedule_sandbox.clone(),
            limits: limits.clone(),
            signals,
        },
        scheduler_settings,
    );
    // The leader also keeps each schedule's fire history within control_plane.schedule_history.
    let history = HistorySettings { keep: settings.control_plane.schedule_history, every: HISTORY_SWEEP_EVERY };
    loops.spawn(schedules::history::run(fire_history, history, leadership.clone(), background.clone()));
    loops.spawn(scheduler.run(holder, leadership, schedule_changed.clone(), background.clone()));
    let heartbeat_ms = settings.executor.heartbeat_ms.min(settings.control_plane.node_lease_ms / 3).max(1);
    let services = server::Services {
        tasks: TaskApi::new(store.clone(), submitter, events.clone(), limits.clone(), auth.clone(), shutdown.clone())
            .with_retry(settings.retry.clone()),
        // Replicas seen within three scheduler leases are listed.
        catalog: CatalogApi::new(store.clone(), auth.clone(), schedules.clone(), leases, 3 * leader_lease),
        auth: AuthApi::new(auth.clone()),
        policies: PolicyApi::new(auth.clone()),
        audit: AuditApi::new(pool.clone(), auth.clone()),
        chains: ChainApi::new(store.clone(), limits.clone(), auth.clone()).with_retry(settings.retry.clone()),
        dead_letters: DeadLetterApi::new(store.clone(), limits.clone(), auth.clone(), events.clone(), wake.clone())
            .with_retry(&settings.retry),
        schedules: ScheduleApi::new(
            schedules,
            store.clone(),
            limits.clone(),
            auth.clone(),
            schedule_sandbox.clone(),
            schedule_changed,
        )
        .with_retry(settings.retry.clone()),
        config: ConfigApi::new(auth, settings.clone(), limits_tx),
        executor: ExecutorApi::new(
            store.clone(),
            ExecutorConfig {
                delivery_limit: settings.transport.delivery_limit,
                commit_batch: settings.control_plane.commit_batch,
                limits,
                heartbeat_ms: u32::try_from(heartbeat_ms).unwrap_or(u32::MAX),
                node_lease_ms: u32::try_from(settings.control_plane.node_lease_ms).unwrap_or(u32::MAX),
                touch_interval: touch_interval(lease_settings.lease),
            },
            events.clone(),
            wake.clone(),
            metrics.clone(),
        ),
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    tracing::info!(
        listen = %settings.control_plane.listen,
        admin_listen = %settings.control_plane.admin_listen,
        "control plane serving"
    );
    let served =
        server::serve(listener, tls, services, health, health_service, shutdown.clone().cancelled_owned()).await;
    tracing::info!("grpc server stopped; stopping background loops");
    background.cancel();
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "submit writer panicked");
    }
    if let Err(e) = audit_writer.await {
        tracing::error!(error = %e, "audit writer panicked");
    }
    if let Err(e) = elector.await {
        tracing::error!(error = %e, "leader election panicked");
    }
    while let Some(joined) = loops.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "background loop panicked");
        }
    }
    sandbox.shutdown().await;
    schedule_sandbox.shutdown().await;
    pool.close().await;
    shutdown.cancel();
    let _ = admin.await;
    served?;
    tracing::info!("control plane stopped");
    Ok(())
}

/// How stale a node's `last_heartbeat` may get before a StartTask or CompleteTask refreshes it: a
/// quarter of the lease, at most a second, so busy nodes do not write their row on every call.
pub fn touch_interval(lease: Duration) -> Duration {
    (lease / 4).min(Duration::from_secs(1))
}

/// Records this replica in `nodes` (kind `control_plane`, name `holder`) every `every` until `shutdown`,
/// then removes its row, so that `ListNodes` shows the replicas running.
async fn announce_replica(
    schedules: Arc<dyn ScheduleStore>,
    holder: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        if let Err(e) = schedules.touch_control_plane(&holder, env!("CARGO_PKG_VERSION")).await {
            tracing::warn!(replica = %holder, error = %e, "cannot record this control-plane replica");
        }
    }
    if let Err(e) = schedules.forget_control_plane(&holder).await {
        tracing::warn!(replica = %holder, error = %e, "cannot remove this control-plane replica's record");
    }
}

/// Opens the pool, retrying while PostgreSQL is unreachable (for up to [`DATABASE_STARTUP_TIMEOUT`]).
async fn connect_database(settings: &Settings, shutdown: &CancellationToken) -> anyhow::Result<PgPool> {
    let deadline = tokio::time::Instant::now() + DATABASE_STARTUP_TIMEOUT;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match store::pg::connect(&settings.data).await {
            Ok(pool) => return Ok(pool),
            Err(error) => {
                let message = error.to_string();
                let unreachable = matches!(store::Error::from(error), store::Error::Unavailable(_));
                if !unreachable || tokio::time::Instant::now() >= deadline || shutdown.is_cancelled() {
                    anyhow::bail!("cannot connect to the database (data.url): {message}");
                }
                let delay = backoff.next_delay();
                tracing::warn!(error = %message, retry_in_ms = delay.as_millis(), "database unreachable, retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }
}

/// Ready = PostgreSQL answers and the publisher holds a broker connection. Also samples the outbox depth.
async fn watch_readiness(
    store: Arc<dyn Store>,
    broker_up: Arc<AtomicBool>,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let database_up = matches!(tokio::time::timeout(Duration::from_secs(2), store.ping()).await, Ok(Ok(())));
        let ready = database_up && broker_up.load(Ordering::Relaxed);
        if ready != readiness.get() {
            tracing::info!(ready, database_up, broker_up = broker_up.load(Ordering::Relaxed), "readiness changed");
        }
        readiness.set(ready);
        if database_up
            && round.is_multiple_of(5)
            && let Ok(depth) = OutboxStore::outbox_depth(store.as_ref()).await
        {
            metrics.outbox_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        round += 1;
    }
    readiness.set(false);
}

#[cfg(test)]
mod tests {
    use legion_common::settings::TlsSettings;

    use super::*;

    fn settings_with(dir: &std::path::Path, cert: &str, key: &str) -> Settings {
        Settings {
            tls: TlsSettings { ca: Some(dir.join("ca.pem")), cert: Some(dir.join(cert)), key: Some(dir.join(key)) },
            ..Settings::default()
        }
    }

    #[test]
    fn tls_material_is_checked_and_named() {
        legion_common::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        legion_common::tls::write_dev_certs(dir.path(), "exec-1").expect("dev certs");
        check_settings(&settings_with(dir.path(), "control-plane.pem", "control-plane-key.pem")).expect("valid");

        // A key of another certificate: used to fail the first handshake with "KeyMismatch".
        let err = check_settings(&settings_with(dir.path(), "control-plane.pem", "gateway-key.pem"))
            .expect_err("mismatched key")
            .to_string();
        assert!(err.contains("tls.key"), "{err}");
        // A key where the certificate belongs.
        let err = check_settings(&settings_with(dir.path(), "control-plane-key.pem", "control-plane-key.pem"))
            .expect_err("not a certificate")
            .to_string();
        assert!(err.contains("tls.cert"), "{err}");
        // A file that is not PEM at all.
        std::fs::write(dir.path().join("garbage.pem"), "not pem").expect("write");
        let err = check_settings(&settings_with(dir.path(), "control-plane.pem", "garbage.pem"))
            .expect_err("not pem")
            .to_string();
        assert!(err.contains("tls.key"), "{err}");
    }

    #[test]
    fn a_list_page_must_fit_in_a_message() {
        legion_common::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        legion_common::tls::write_dev_certs(dir.path(), "exec-1").expect("dev certs");
        let mut settings = settings_with(dir.path(), "control-plane.pem", "control-plane-key.pem");
        settings.limits.max_list_bytes = MAX_LIST_BYTES + 1;
        let err = check_settings(&settings).expect_err("too large").to_string();
        assert!(err.starts_with("settings key limits.max_list_bytes: "), "{err}");
        settings.limits.max_list_bytes = MAX_LIST_BYTES;
        check_settings(&settings).expect("the largest page fits");
    }

    #[test]
    fn busy_nodes_refresh_their_row_at_most_once_a_second() {
        assert_eq!(touch_interval(Duration::from_secs(30)), Duration::from_secs(1));
        assert_eq!(touch_interval(Duration::from_millis(2000)), Duration::from_millis(500));
    }
}
