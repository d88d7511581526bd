//! Executors under their own node names, for fault tests: each [`Node`] presents a certificate for its
//! own name (signed by the test's CA with `legion_common::tls::write_node_cert`), so the control plane
//! tracks its lease, its attempts and its status apart from every other executor of the test. Extra
//! settings are deep-merged into its file (`executor.shutdown_grace_ms`, `limits.max_result_bytes`,
//! `logging.levels`, …). A node can be killed (SIGKILL), stopped as an operator would (SIGTERM),
//! frozen (SIGSTOP) and thawed (SIGCONT), and its Prometheus metrics read.
//!
//! [`TestEnv::start_executor`] always uses the env's one node name ([`crate::env::NODE_NAME`]); two
//! executors under one name share a lease, so a frozen one is never declared lost while the other
//! heartbeats. Fault tests that need the control plane to tell executors apart use [`TestEnv::start_node`].
//!
//! [`TestEnv::start_node_from`] picks the binary: [`EXECUTOR_BINARY`] or the fault-injection build
//! [`FAULTS_BINARY`]. A [`NodeLauncher`] ([`TestEnv::node_launcher`]) starts the same executor again
//! and again (same name, certificate and spool) without waiting for readiness, for supervisors
//! ([`crate::supervisor`]) and for executors started while the control plane is down;
//! [`TestEnv::wait_node_ready`] waits for one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use legion_proto::v1::{ListNodesRequest, NodeStatus};
use serde_json::{Value, json};

use crate::TestEnv;
use crate::env::{Error, NODE_NAME, READY_TIMEOUT};
use crate::grpc;
use crate::process::{self, Service};
use crate::ready::{not_ready, wait_http_ready};
use crate::settings;
use crate::wait;

/// The ordinary executor binary.
pub const EXECUTOR_BINARY: &str = "legion-executor";
/// The fault-injection executor (`executor/README.md`, "Fault injection"): `legion-executor` plus the
/// extension `fault` (`fault.process.abort`, `fault.process.hang`, `fault.result.oversize`).
pub const FAULTS_BINARY: &str = "legion-executor-faults";

/// How to start a [`Node`].
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `executor.name`; a name other than [`NODE_NAME`] gets its own certificate (`certs/node-<name>.pem`).
    /// Default [`NODE_NAME`].
    pub name: String,
    /// `executor.concurrency`. Default 4.
    pub concurrency: u32,
    /// `executor.heartbeat_ms`. Default 1000. The control plane may ask for a shorter interval (a third
    /// of its `control_plane.node_lease_ms`).
    pub heartbeat_ms: u64,
    /// Deep-merged into the executor's settings file last (see [`settings::merge`]), e.g.
    /// `{"executor": {"shutdown_grace_ms": 2000}, "limits": {"max_result_bytes": 1024}}`.
    pub extra: Value,
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self { name: NODE_NAME.to_owned(), concurrency: 4, heartbeat_ms: 1000, extra: Value::Null }
    }
}

impl NodeSpec {
    /// The defaults under node name `name`.
    pub fn named(name: &str) -> Self {
        Self { name: name.to_owned(), ..Self::default() }
    }
}

/// A running executor under its own node name; SIGKILLed when dropped (a frozen one is thawed first,
/// so that it can die).
#[derive(Debug)]
#[must_use = "dropping the handle kills the executor"]
pub struct Node {
    service: Service,
    name: String,
    admin: SocketAddr,
    http: reqwest::Client,
}

impl Node {
    /// The node name (`executor.name`, the name in `ListNodes` and in `task_attempts.node`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The process.
    pub fn service(&mut self) -> &mut Service {
        &mut self.service
    }

    /// SIGKILL: nothing drained, nothing acked, no final heartbeat.
    pub fn kill(&mut self) {
        self.signal("CONT");
        self.service.kill();
    }

    /// SIGTERM, then up to `grace` for the executor to drain and exit (see [`Service::terminate`]).
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.service.terminate(grace).await
    }

    /// Sends SIGTERM without waiting: the executor starts draining; [`Node::wait_exit`] awaits its exit.
    /// Returns whether the signal was delivered.
    pub fn begin_terminate(&mut self) -> bool {
        self.signal("TERM")
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status, or `None` when it
    /// still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.service.exited() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP: the process is frozen (no heartbeat, no completion, its sockets stay open). Returns
    /// whether the signal was delivered.
    pub fn freeze(&mut self) -> bool {
        self.signal("STOP")
    }

    /// SIGCONT: a frozen process runs on from where it stopped. Returns whether the signal was delivered.
    pub fn thaw(&mut self) -> bool {
        self.signal("CONT")
    }

    fn signal(&mut self, name: &str) -> bool {
        self.service.signal(name)
    }

    /// The node's `/metrics` text (Prometheus exposition format).
    ///
    /// # Errors
    /// The HTTP error as text.
    pub async fn metrics(&self) -> Result<String, String> {
        let url = format!("http://{}/metrics", self.admin);
        let response = self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        response.text().await.map_err(|e| format!("GET {url}: {e}"))
    }

    /// The sum of the samples of metric `name` whose labels include every `labels` pair (see
    /// [`sample_sum`]), read from `/metrics` now.
    ///
    /// # Errors
    /// The HTTP error as text.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, String> {
        Ok(sample_sum(&self.metrics().await?, name, labels))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A frozen process ignores nothing but SIGKILL; thaw it anyway so a test never leaves one behind.
        self.signal("CONT");
    }
}

/// The sum of every sample of metric `name` (the series name up to `{` or the space) in `text` whose
/// label set contains each `labels` pair (`key="value"`). 0 when none matches.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, label_text) = series.split_once('{').unwrap_or((series, ""));
            metric == name && labels.iter().all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// Starts one executor again and again with the same settings (node name, certificate, spool,
/// extensions), each time on a fresh admin port, as a supervisor (Kubernetes) restarts a crashed pod.
/// Owns everything it needs, so it can live in a task of its own (see [`crate::supervisor`]).
#[derive(Debug)]
pub struct NodeLauncher {
    binary: String,
    name: String,
    label: String,
    settings: Value,
    work_dir: PathBuf,
    log_dir: PathBuf,
    http: reqwest::Client,
    spawned: u32,
}

impl NodeLauncher {
    /// The node name every process it starts runs under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many processes it started.
    pub fn spawned(&self) -> u32 {
        self.spawned
    }

    /// Starts the next process and returns at once, without waiting for it to be ready: for
    /// executors that may die again before they are ready (a poison message) or that start while the
    /// control plane is down. Each process gets its own settings file and log: `<label>.json` and
    /// `logs/<label>.log` for the first, `<label>-restart-<n>` for the n-th restart.
    ///
    /// # Errors
    /// A free port, the settings file or the spawn failed.
    pub fn spawn(&mut self) -> Result<Node, Error> {
        let label =
            if self.spawned == 0 { self.label.clone() } else { format!("{}-restart-{}", self.label, self.spawned) };
        let admin = crate::ports::free_addr()?;
        let mut file = self.settings.clone();
        settings::merge(&mut file, json!({"executor": {"admin_listen": admin.to_string()}}));
        let path = settings::write(&self.work_dir, &label, &file)?;
        let mut command = process::command(&self.binary, &self.work_dir)?;
        command.arg("--settings").arg(&path);
        let service = Service::spawn(&label, command, &self.log_dir.join(format!("{label}.log")))?;
        self.spawned += 1;
        Ok(Node { service, name: self.name.clone(), admin, http: self.http.clone() })
    }
}

impl TestEnv {
    /// Starts an executor as `spec` says, under its own node certificate when `spec.name` is not
    /// [`NODE_NAME`], against the env's control plane, and waits until its `/readyz` answers 200 and
    /// `ListNodes` shows node `spec.name` `active`.
    ///
    /// # Errors
    /// [`Error::NotReady`] with its log tail, or a setup error (the certificate, the settings file).
    pub async fn start_node(&self, spec: &NodeSpec) -> Result<Node, Error> {
        self.start_node_from(EXECUTOR_BINARY, spec).await
    }

    /// Like [`TestEnv::start_node`] with the executor binary `binary` ([`EXECUTOR_BINARY`] or
    /// [`FAULTS_BINARY`]).
    ///
    /// # Errors
    /// As [`TestEnv::start_node`].
    pub async fn start_node_from(&self, binary: &str, spec: &NodeSpec) -> Result<Node, Error> {
        let mut node = self.spawn_node(binary, spec)?;
        self.wait_node_ready(&mut node).await?;
        Ok(node)
    }

    /// Starts binary `binary` as the executor `spec` describes and returns at once, without waiting
    /// for it to be ready (see [`NodeLauncher::spawn`]).
    ///
    /// # Errors
    /// A setup error (the certificate, the settings file, a missing binary).
    pub fn spawn_node(&self, binary: &str, spec: &NodeSpec) -> Result<Node, Error> {
        self.node_launcher(binary, spec)?.spawn()
    }

    /// A [`NodeLauncher`] for binary `binary` as `spec` says, under its own node certificate when
    /// `spec.name` is not [`NODE_NAME`], against the env's control plane.
    ///
    /// # Errors
    /// A setup error (the certificate, a missing binary).
    pub fn node_launcher(&self, binary: &str, spec: &NodeSpec) -> Result<NodeLauncher, Error> {
        process::binary(binary)?;
        let config = settings::ExecutorConfig {
            amqp_url: self.amqp_url()?,
            control_plane: self.control_plane_addr(),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            concurrency: spec.concurrency,
            heartbeat_ms: spec.heartbeat_ms,
        };
        let mut file = settings::executor(&config, self.certs());
        if spec.name != NODE_NAME {
            let (cert, key) = node_certificate(self.certs().dir(), &spec.name)?;
            settings::merge(&mut file, json!({"tls": {"cert": cert, "key": key}, "executor": {"name": spec.name}}));
        }
        settings::merge(&mut file, spec.extra.clone());
        Ok(NodeLauncher {
            binary: binary.to_owned(),
            name: spec.name.clone(),
            label: self.next_label(&format!("node-{}", spec.name)),
            settings: file,
            work_dir: self.work_dir().to_path_buf(),
            log_dir: self.log_dir().to_path_buf(),
            http: self.http().clone(),
            spawned: 0,
        })
    }

    /// Waits until `node`'s `/readyz` answers 200 and `ListNodes` shows it `active`.
    ///
    /// # Errors
    /// [`Error::NotReady`] with its log tail (also when it exits first).
    pub async fn wait_node_ready(&self, node: &mut Node) -> Result<(), Error> {
        let url = format!("http://{}/readyz", node.admin);
        wait_http_ready(self.http(), &mut node.service, &url).await?;
        let name = node.name.clone();
        let listed = wait::eventually(&format!("node {name} active in ListNodes"), READY_TIMEOUT, || async {
            match self.node_status(&name).await? {
                Some(NodeStatus::Active) => Ok(()),
                other => Err(format!("node status {other:?}")),
            }
        })
        .await;
        if let Err(timeout) = listed {
            return Err(not_ready(&node.service, timeout.to_string()));
        }
        Ok(())
    }

    /// The status `ListNodes` gives node `name` now; `None` when it is not listed.
    ///
    /// # Errors
    /// The call's status as text.
    pub async fn node_status(&self, name: &str) -> Result<Option<NodeStatus>, String> {
        let nodes = self
            .catalog()
            .list_nodes(grpc::request(ListNodesRequest {}))
            .await
            .map_err(|s| format!("ListNodes: {s}"))?
            .into_inner()
            .nodes;
        Ok(nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| NodeStatus::try_from(n.status).unwrap_or(NodeStatus::Unspecified)))
    }

    /// The env's `transport.url` (its vhost), read from the control plane's settings file.
    ///
    /// # Errors
    /// When the file cannot be read or holds no `transport.url`.
    pub fn amqp_url(&self) -> Result<String, Error> {
        let text = std::fs::read_to_string(self.control_plane_settings())?;
        let file: Value = serde_json::from_str(&text).map_err(std::io::Error::other)?;
        file["transport"]["url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Io(std::io::Error::other("the control plane's settings hold no transport.url")))
    }
}

/// The certificate and key of node `name` in `dir`, signed by the CA there on first use.
fn node_certificate(dir: &std::path::Path, name: &str) -> Result<(std::path::PathBuf, std::path::PathBuf), Error> {
    let (cert, key) = (dir.join(format!("node-{name}.pem")), dir.join(format!("node-{name}-key.pem")));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    Ok(legion_common::tls::write_node_cert(dir, name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_sum_matches_name_and_labels() {
        let text = "# HELP legion_executor_runs Finished attempts.\n\
                    # TYPE legion_executor_runs counter\n\
                    legion_executor_runs_total{outcome=\"succeeded\"} 3\n\
                    legion_executor_runs_total{outcome=\"aborted\"} 1\n\
                    legion_executor_runs_total_other{outcome=\"aborted\"} 7\n\
                    legion_executor_in_flight 2\n";
        assert_eq!(sample_sum(text, "legion_executor_runs_total", &[("outcome", "aborted")]), 1.0);
        assert_eq!(sample_sum(text, "legion_executor_runs_total", &[]), 4.0);
        assert_eq!(sample_sum(text, "legion_executor_in_flight", &[]), 2.0);
        assert_eq!(sample_sum(text, "legion_executor_runs_total", &[("outcome", "timeout")]), 0.0);
        assert_eq!(sample_sum(text, "absent", &[]), 0.0);
    }

    #[test]
    fn a_default_spec_uses_the_env_node_name() {
        let spec = NodeSpec::default();
        assert_eq!((spec.name.as_str(), spec.concurrency, spec.heartbeat_ms), (NODE_NAME, 4, 1000));
        assert_eq!(NodeSpec::named("e2e-b").name, "e2e-b");
    }
}
