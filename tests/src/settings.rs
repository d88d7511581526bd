//! The settings file of each process a test starts (JSON, passed with `--settings FILE`; the harness
//! never sets environment variables). Every file is complete on its own: the children run with an
//! isolated `HOME` and working directory, so no other settings layer applies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::certs::{Identity, TestCerts};

/// `https://127.0.0.1:<port>`: the control plane's certificate is valid for 127.0.0.1.
pub fn control_plane_url(grpc: SocketAddr) -> String {
    format!("https://{grpc}")
}

/// Control-plane settings with a short node lease, `lease_ms`, for tests that wait for a silent node to
/// be declared lost; `executor.heartbeat_ms` 500 keeps the lease longer than the heartbeat, as the
/// settings check requires.
pub fn short_node_lease(lease_ms: u64) -> Value {
    json!({"control_plane": {"node_lease_ms": lease_ms}, "executor": {"heartbeat_ms": 500}})
}

/// Where a test's control plane listens and what it uses.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// `data.url`.
    pub database_url: String,
    /// `transport.url`.
    pub amqp_url: String,
    /// gRPC listener (TLS).
    pub grpc: SocketAddr,
    /// Admin HTTP listener.
    pub admin: SocketAddr,
}

/// The control plane's settings: small pool, fast outbox polling, TLS with its server certificate, and
/// the bootstrap admin key [`crate::ADMIN_KEY`].
pub fn control_plane(config: &ControlPlaneConfig, certs: &TestCerts) -> Value {
    json!({
        "data": { "url": config.database_url, "max_connections": 6 },
        "transport": { "url": config.amqp_url, "outbox_poll_ms": 200 },
        "control_plane": {
            "listen": config.grpc.to_string(),
            "admin_listen": config.admin.to_string(),
            "url": control_plane_url(config.grpc),
        },
        "tls": certs.tls_json(Identity::ControlPlane),
        "auth": { "bootstrap_admin_key": crate::ADMIN_KEY },
        "logging": { "format": "console", "level": "info" },
    })
}

/// Deep-merges `extra` into `base`, as the settings loader merges layers: where both are objects,
/// key by key; otherwise `extra` replaces `base`. `null` leaves `base` unchanged.
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (_, Value::Null) => {}
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// An executor's settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// `transport.url`.
    pub amqp_url: String,
    /// The control plane's gRPC listener.
    pub control_plane: SocketAddr,
    /// Admin HTTP listener.
    pub admin: SocketAddr,
    /// `executor.concurrency`.
    pub concurrency: u32,
    /// `executor.heartbeat_ms`.
    pub heartbeat_ms: u64,
}

/// The executor's settings: its node certificate (the node name comes from the certificate set).
pub fn executor(config: &ExecutorConfig, certs: &TestCerts) -> Value {
    json!({
        "transport": { "url": config.amqp_url },
        "control_plane": { "url": control_plane_url(config.control_plane) },
        "tls": certs.tls_json(Identity::Executor),
        "executor": {
            "name": certs.node_name(),
            "concurrency": config.concurrency,
            "heartbeat_ms": config.heartbeat_ms,
            "admin_listen": config.admin.to_string(),
            "shutdown_grace_ms": 2000,
        },
        "logging": { "format": "console", "level": "info" },
    })
}

/// The gateway's settings: its gateway certificate and listener.
pub fn gateway(control_plane: SocketAddr, listen: SocketAddr, certs: &TestCerts) -> Value {
    json!({
        "control_plane": { "url": control_plane_url(control_plane) },
        "tls": certs.tls_json(Identity::Gateway),
        "api": { "listen": listen.to_string() },
        "logging": { "format": "console", "level": "info" },
    })
}

/// The CLI's settings: the control plane and the CA, no client certificate (a user).
pub fn cli(control_plane: SocketAddr, certs: &TestCerts) -> Value {
    json!({
        "control_plane": { "url": control_plane_url(control_plane) },
        "tls": certs.tls_json(Identity::None),
        "logging": { "format": "console", "level": "warn" },
    })
}

/// Writes `settings` to `dir/<name>.json`.
///
/// # Errors
/// When the file cannot be written.
pub fn write(dir: &Path, name: &str, settings: &Value) -> std::io::Result<PathBuf> {
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(settings).map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use legion_common::Settings;
    use legion_common::settings::Sources;

    use super::*;

    fn load(dir: &Path, name: &str, value: &Value) -> Settings {
        let file = write(dir, name, value).expect("write");
        let sources = Sources {
            files: vec![file],
            skip_standard_dirs: true,
            env: Some(std::collections::BTreeMap::new()),
            ..Sources::default()
        };
        Settings::load(&sources).unwrap_or_else(|e| panic!("{name} settings must load: {e}"))
    }

    #[test]
    fn every_generated_file_passes_the_settings_loader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = TestCerts::write(&dir.path().join("certs"), "e2e-exec").expect("certs");
        let grpc = SocketAddr::from(([127, 0, 0, 1], 40001));
        let admin = SocketAddr::from(([127, 0, 0, 1], 40002));
        let amqp_url = "amqp://guest:guest@127.0.0.1:5672/legion-e2e-x".to_owned();

        let cp = load(
            dir.path(),
            "cp",
            &control_plane(
                &ControlPlaneConfig {
                    database_url: "postgres://postgres@127.0.0.1:5432/legion_e2e_x".into(),
                    amqp_url: amqp_url.clone(),
                    grpc,
                    admin,
                },
                &certs,
            ),
        );
        assert_eq!(cp.control_plane.listen, grpc);
        assert_eq!(cp.control_plane.admin_listen, admin);
        assert_eq!(cp.data.url, "postgres://postgres@127.0.0.1:5432/legion_e2e_x");
        assert_eq!(cp.tls.cert, Some(certs.dir().join("control-plane.pem")));
        assert_eq!(cp.auth.bootstrap_admin_key.as_deref(), Some(crate::ADMIN_KEY));

        let ex = load(
            dir.path(),
            "ex",
            &executor(
                &ExecutorConfig { amqp_url, control_plane: grpc, admin, concurrency: 3, heartbeat_ms: 500 },
                &certs,
            ),
        );
        assert_eq!((ex.executor.name.as_str(), ex.executor.concurrency), ("e2e-exec", 3));
        assert_eq!(ex.control_plane.url, "https://127.0.0.1:40001");
        assert_eq!(ex.tls.key, Some(certs.dir().join("executor-key.pem")));

        let gw = load(dir.path(), "gw", &gateway(grpc, admin, &certs));
        assert_eq!(gw.api.listen, admin);
        assert_eq!(gw.tls.cert, Some(certs.dir().join("gateway.pem")));

        let cli = load(dir.path(), "cli", &cli(grpc, &certs));
        assert_eq!((cli.tls.ca, cli.tls.cert), (Some(certs.ca()), None));
    }

    #[test]
    fn merge_replaces_leaves_and_keeps_siblings() {
        let mut base =
            json!({"auth": {"bootstrap_admin_key": "k", "cache_ttl_ms": 1000}, "logging": {"level": "info"}});
        merge(&mut base, json!({"auth": {"cache_ttl_ms": 0}, "crypt": {"jwt": {"hs_secret": "s"}}}));
        merge(&mut base, Value::Null);
        assert_eq!(
            base,
            json!({
                "auth": {"bootstrap_admin_key": "k", "cache_ttl_ms": 0},
                "logging": {"level": "info"},
                "crypt": {"jwt": {"hs_secret": "s"}},
            })
        );
    }
}
