//! Legion's executor: a stateless worker that consumes task messages from RabbitMQ, asks the control
//! plane whether to run each one (`StartTask`), runs it in a supervised pool of compiled-in extension
//! functions, reports the outcome (`CompleteTask`) and only then acks the message. See
//! docs/architecture.md for the delivery protocol and its fencing.
//!
//! Modules, one concept each: [`extensions`] (the functions), [`pool`] (running them),
//! [`client`] (the control plane), [`reporter`] (batched starts and completions), [`handler`] (one
//! delivery), [`deliveries`] (deliveries in flight; redeliveries attached to them), [`consumer`]
//! (the broker), [`spool`] (completions the control plane could not take, replayed later),
//! [`heartbeat`], [`state`] (what the node reports), [`metrics`], [`backoff`], [`cli`] (the binaries'
//! shared `main`).

pub mod backoff;
pub mod cli;
pub mod client;
pub mod consumer;
pub mod deliveries;
pub mod extensions;
pub mod handler;
pub mod heartbeat;
pub mod metrics;
pub mod pool;
pub mod reporter;
pub mod spool;
pub mod state;

#[cfg(test)]
mod fake;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use legion_common::Settings;
use legion_common::admin::Readiness;
use legion_common::tls::Principal;
use legion_proto::v1::{ExtensionState, RegisterNodeRequest};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{ControlPlane, GrpcControlPlane};
use crate::consumer::Consumer;
use crate::extensions::{Extension, Registry};
use crate::handler::Handler;
use crate::heartbeat::Heartbeat;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::reporter::Reporter;
use crate::spool::Spool;
use crate::state::NodeState;

/// The executor's version, reported at registration.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Settings that cannot work (unknown extension, certificate not matching `executor.name`, …). The
/// binary exits 64 for it; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Checks that `tls.ca`, `tls.cert` and `tls.key` are set, that the certificate names the node
/// `executor.name` (`spiffe://legion/node/<name>`), as the control plane requires, and that the files
/// are usable ([`legion_common::tls::check_identity`]): `tls.ca` and `tls.cert` hold PEM certificates
/// and `tls.key` is the PEM private key of the certificate.
///
/// # Errors
/// [`SettingsError`] naming the key, e.g. `settings key tls.key: <path> does not belong to the
/// certificate <path>: …`.
pub fn check_node_certificate(settings: &Settings) -> Result<(), SettingsError> {
    let tls = &settings.tls;
    if tls.ca.is_none() {
        return Err(SettingsError("tls.ca is required: the CA that signed the control plane's certificate".into()));
    }
    if tls.key.is_none() {
        return Err(SettingsError("tls.key is required: the key of the executor's node certificate".into()));
    }
    let Some(path) = &tls.cert else {
        return Err(SettingsError("tls.cert is required: the executor presents its node certificate".into()));
    };
    let der = CertificateDer::from_pem_file(path)
        .map_err(|e| SettingsError(format!("tls.cert: cannot read a certificate from {}: {e}", path.display())))?;
    let name = &settings.executor.name;
    match legion_common::tls::principal_from_certs(&[der]) {
        Some(Principal::Node(node)) if node == *name => check_tls_material(tls),
        Some(principal) => Err(SettingsError(format!(
            "executor.name: {name:?} does not match the certificate's principal {principal} ({})",
            path.display()
        ))),
        None => Err(SettingsError(format!(
            "tls.cert: {} names no node principal (a URI SAN spiffe://legion/node/<name>)",
            path.display()
        ))),
    }
}

/// [`legion_common::tls::check_identity`]: its errors name the setting at fault.
fn check_tls_material(tls: &legion_common::settings::TlsSettings) -> Result<(), SettingsError> {
    legion_common::tls::check_identity(tls).map_err(|e| SettingsError(e.to_string()))
}

/// Runs the executor until `shutdown` is cancelled, then drains (see [`run_with`]), talking gRPC with
/// mTLS to `control_plane.url` (and `control_plane.failover_urls` when it cannot be connected to).
///
/// # Errors
/// [`SettingsError`] for unusable settings (exit 64); other startup failures (admin port taken, the
/// control plane refusing the registration).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_extended(settings, Vec::new(), shutdown).await
}

/// [`run`] with `extra` extensions loaded besides the built-in ones (see
/// [`Registry::with_extensions`]); `legion-executor-faults` passes the `fault` extension.
///
/// # Errors
/// As [`run`].
pub async fn run_extended(
    settings: Settings,
    extra: Vec<Extension>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    legion_common::install_crypto_provider();
    check_node_certificate(&settings)?;
    let control_plane = GrpcControlPlane::connect_lazy(&settings.control_plane.urls(), &settings.tls)
        .map_err(|e| SettingsError(e.to_string()))?;
    run_with_extensions(settings, Arc::new(control_plane), extra, shutdown).await
}

/// Runs the executor against `control_plane` until `shutdown` is cancelled.
///
/// Start: loads the extensions, opens the completion spool (`executor.spool_*`; a bad key is a
/// settings error), serves the admin listener, registers (retrying until the control plane answers),
/// then replays the spool, consumes and heartbeats every `executor.heartbeat_ms` (or the control
/// plane's `heartbeat_ms`, when it asks for more frequent ones) and on every extension state change.
/// Completions the control plane cannot take for `executor.spool_after_ms` go to the spool.
/// Shutdown: marks the node draining (heartbeat sent at once), cancels the consumers, hands back at once
/// the deliveries still waiting for their `StartTask` answer, lets running tasks finish for up to
/// `executor.shutdown_grace_ms`, then aborts the rest and requeues their
/// messages, stops the replay (what is left stays in the spool for the next start), sends a final
/// heartbeat with every extension `stopped` and `stopped: true`, closes the broker channel and
/// connection, and returns `Ok`.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    settings: Settings,
    control_plane: Arc<dyn ControlPlane>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_extensions(settings, control_plane, Vec::new(), shutdown).await
}

/// [`run_with`] with `extra` extensions loaded besides the built-in ones.
///
/// # Errors
/// As [`run`].
pub async fn run_with_extensions(
    settings: Settings,
    control_plane: Arc<dyn ControlPlane>,
    extra: Vec<Extension>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    legion_common::install_crypto_provider();
    let ex = &settings.executor;
    let registry =
        Arc::new(Registry::load(&settings).map_err(|e| SettingsError(e.to_string()))?.with_extensions(extra));
    let prefetch = u16::try_from(ex.concurrency)
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| SettingsError("executor.concurrency: must be 1 to 65535".into()))?;
    let extensions = registry.extension_names();
    tracing::info!(node = %ex.name, extensions = ?extensions, functions = registry.function_names().len(), "extensions loaded");

    let metrics = Metrics::default();
    let mut prometheus = prometheus_client::registry::Registry::default();
    metrics.register(&mut prometheus);
    let spool = spool::Options::from_settings(ex).and_then(|options| Spool::open(options, metrics.clone())).map_err(
        |e| match e {
            spool::Error::Settings(message) => SettingsError(message),
            other => SettingsError(format!("executor.spool_dir: {other}")),
        },
    )?;
    let readiness = Readiness::default();
    let state = Arc::new(NodeState::new(&extensions, readiness.clone()));
    let admin_stop = CancellationToken::new();
    let admin =
        legion_common::admin::serve(ex.admin_listen, readiness, Arc::new(prometheus), admin_stop.clone()).await?;

    let registration = RegisterNodeRequest {
        name: ex.name.clone(),
        region: ex.region.clone(),
        version: VERSION.to_owned(),
        concurrency: ex.concurrency,
        extensions: registry.manifests(),
    };
    let response = match client::register(&control_plane, &registration, &shutdown).await {
        Ok(Some(response)) => response,
        Ok(None) => {
            admin_stop.cancel();
            let _ = admin.await;
            return Ok(());
        }
        Err(e) => {
            admin_stop.cancel();
            let _ = admin.await;
            return Err(e.into());
        }
    };
    state.set_registered();
    // Heartbeat at least as often as both the settings and the control plane ask.
    let interval = Duration::from_millis(match u64::from(response.heartbeat_ms) {
        0 => ex.heartbeat_ms,
        asked => asked.min(ex.heartbeat_ms),
    });
    tracing::info!(
        node = %ex.name, heartbeat_ms = interval.as_millis(), disabled = ?response.disabled_extensions,
        "registered with the control plane"
    );
    let (disabled_tx, disabled_rx) = watch::channel(response.disabled_extensions.into_iter().collect::<BTreeSet<_>>());

    let pool = Pool::new(usize::from(prefetch), settings.limits.max_result_bytes);
    let replay_stop = CancellationToken::new();
    let replay_task = tokio::spawn(spool::replay::run(
        spool.clone(),
        control_plane.clone(),
        spool::replay::Options::default(),
        replay_stop.clone(),
    ));
    let reporter = Reporter::spawn_with_spool(
        control_plane.clone(),
        reporter::Options { linger: Duration::from_millis(ex.report_linger_ms), ..reporter::Options::default() },
        metrics.clone(),
        spool,
        Duration::from_millis(ex.spool_after_ms),
    );
    let hard_stop = CancellationToken::new();
    let drain = CancellationToken::new();
    let handler = Arc::new(
        Handler::new(
            registry,
            pool.clone(),
            reporter,
            metrics,
            Duration::from_millis(u64::from(settings.limits.default_timeout_ms)),
            hard_stop.clone(),
        )
        .with_drain(drain.clone()),
    );
    let heartbeat =
        Arc::new(Heartbeat::new(control_plane, registration, pool.clone(), state.clone(), disabled_tx, interval));
    let heartbeat_stop = CancellationToken::new();
    let heartbeat_task = tokio::spawn(heartbeat.clone().run(heartbeat_stop.clone()));
    let tracker = TaskTracker::new();
    let consumer = Consumer::new(
        consumer::Options {
            transport: settings.transport.clone(),
            node: ex.name.clone(),
            prefetch,
            extensions,
            region: ex.region.clone(),
            heartbeat_s: (response.node_lease_ms > 0)
                .then(|| legion_common::broker::heartbeat_for_lease(u64::from(response.node_lease_ms))),
        },
        handler,
        state.clone(),
        disabled_rx,
        tracker.clone(),
    );
    let consumer_stop = CancellationToken::new();
    let consumer_task = tokio::spawn(consumer.run(consumer_stop.clone()));

    shutdown.cancelled().await;
    tracing::info!(node = %ex.name, in_flight = pool.in_flight(), "draining");
    state.set_draining(); // the heartbeat loop reports it at once
    drain.cancel();
    consumer_stop.cancel();
    let session = consumer_task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "consumer task failed");
        None
    });
    tracker.close();
    let grace = Duration::from_millis(ex.shutdown_grace_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            in_flight = pool.in_flight(),
            grace_ms = ex.shutdown_grace_ms,
            "shutdown grace over, aborting in-flight tasks and requeueing their messages"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
    heartbeat_stop.cancel();
    let _ = heartbeat_task.await;
    replay_stop.cancel();
    let _ = replay_task.await;
    state.set_all(ExtensionState::Stopped);
    if let Err(status) = heartbeat.beat_stopped().await {
        tracing::warn!(code = ?status.code(), error = %status.message(), "final heartbeat failed");
    }
    if let Some(session) = session {
        session.close().await;
    }
    admin_stop.cancel();
    let _ = admin.await;
    tracing::info!(node = %ex.name, "executor stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use legion_common::settings::TlsSettings;

    use super::*;

    fn settings_with_certs(dir: &std::path::Path, cert_name: &str, node: &str) -> Settings {
        legion_common::tls::write_dev_certs(dir, cert_name).expect("certs");
        let mut settings = Settings::default();
        settings.executor.name = node.into();
        settings.tls = TlsSettings {
            ca: Some(dir.join("ca.pem")),
            cert: Some(dir.join("executor.pem")),
            key: Some(dir.join("executor-key.pem")),
        };
        settings
    }

    #[test]
    fn the_certificate_must_name_the_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = settings_with_certs(dir.path(), "exec-1", "exec-1");
        check_node_certificate(&ok).expect("matching name");
        let mut other = ok.clone();
        other.executor.name = "exec-2".into();
        let err = check_node_certificate(&other).expect_err("mismatch");
        assert!(
            err.0.starts_with("executor.name: \"exec-2\" does not match the certificate's principal node/exec-1"),
            "{err}"
        );
        let mut gateway = ok.clone();
        gateway.tls.cert = Some(dir.path().join("gateway.pem"));
        assert!(check_node_certificate(&gateway).expect_err("gateway cert").0.contains("gateway/gateway"));
        let mut server = ok.clone();
        server.tls.cert = Some(dir.path().join("control-plane.pem"));
        assert!(check_node_certificate(&server).expect_err("server cert").0.contains("names no node principal"));
        let mut missing = ok;
        missing.tls.cert = None;
        assert!(check_node_certificate(&missing).expect_err("unset").0.starts_with("tls.cert is required"));
        let mut unreadable = other;
        unreadable.tls.cert = Some(dir.path().join("nope.pem"));
        assert!(check_node_certificate(&unreadable).expect_err("unreadable").0.starts_with("tls.cert: cannot read"));
    }

    /// Regression: a key that does not belong to the certificate passed the start-up check and was
    /// then reported as a `control_plane.url` error.
    #[tokio::test]
    async fn unusable_tls_material_is_a_settings_error_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = settings_with_certs(dir.path(), "exec-1", "exec-1");
        let mut mismatch = ok.clone();
        mismatch.tls.key = Some(dir.path().join("gateway-key.pem"));
        mismatch.executor.admin_listen = ([127, 0, 0, 1], 0).into();
        let err = check_node_certificate(&mismatch).expect_err("mismatched key");
        assert!(err.0.starts_with("settings key tls.key: ") && err.0.contains("does not belong"), "{err}");
        let err = tokio::time::timeout(Duration::from_secs(10), run(mismatch, CancellationToken::new()))
            .await
            .expect("refused at once")
            .expect_err("refused");
        let settings_error = err.downcast_ref::<SettingsError>().expect("a settings error (exit 64)");
        assert!(
            settings_error.0.contains("tls.key") && !settings_error.0.contains("control_plane.url"),
            "{settings_error}"
        );

        let mut not_a_key = ok.clone();
        not_a_key.tls.key = Some(dir.path().join("ca.pem"));
        assert!(check_node_certificate(&not_a_key).expect_err("not a key").0.starts_with("settings key tls.key: "));
        let mut missing_key = ok.clone();
        missing_key.tls.key = Some(dir.path().join("nope-key.pem"));
        assert!(
            check_node_certificate(&missing_key)
                .expect_err("no file")
                .0
                .starts_with("settings key tls.key: cannot read")
        );
        let mut not_a_ca = ok;
        not_a_ca.tls.ca = Some(dir.path().join("executor-key.pem"));
        assert!(check_node_certificate(&not_a_ca).expect_err("not a ca").0.starts_with("settings key tls.ca: "));
    }

    #[tokio::test]
    async fn a_spool_key_that_is_not_32_bytes_is_a_settings_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::default();
        settings.executor.spool_dir = Some(dir.path().join("spool"));
        settings.executor.spool_key = Some("c2hvcnQ=".into());
        settings.executor.admin_listen = ([127, 0, 0, 1], 0).into();
        let fake = Arc::new(fake::Fake::default());
        let err = run_with(settings, fake.clone(), CancellationToken::new()).await.expect_err("bad key");
        let settings_error = err.downcast_ref::<SettingsError>().expect("a settings error (exit 64)");
        assert_eq!(settings_error.0, "executor.spool_key: must be base64 of exactly 32 bytes, got 5");
        assert!(fake.registrations.lock().expect("lock").is_empty(), "refused before registering");
    }

    #[tokio::test]
    async fn unknown_extensions_are_settings_errors() {
        let mut settings = Settings::default();
        settings.executor.extensions = vec!["core".into(), "gpu".into()];
        let err =
            run_with(settings, Arc::new(fake::Fake::default()), CancellationToken::new()).await.expect_err("unknown");
        let settings_error = err.downcast_ref::<SettingsError>().expect("a settings error");
        assert!(settings_error.0.contains("unknown extension \"gpu\""), "{settings_error}");
    }
}
