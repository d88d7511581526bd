//! A test's world: the service lock, a database, a vhost, certificates, a working directory with the
//! settings files and process logs, and the control plane; executors and gateways on demand.
//!
//! Dropping a [`TestEnv`] kills its control plane, deletes the vhost and the database and removes the
//! working directory. When the test is panicking, it first prints the last lines of every process log
//! and keeps the working directory, naming its path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use legion_proto::v1::{ListNodesRequest, NodeStatus};
use serde_json::Value;
use tonic::transport::Channel;

use crate::auth::Auth;
use crate::certs::{Identity, TestCerts};
use crate::db::TestDatabase;
use crate::grpc::{self, AuthChannel, CatalogClient, TaskClient};
use crate::lock::{Mode, ServiceLock};
use crate::process::{self, Service};
use crate::rabbit::{RabbitOutage, TestVhost};
use crate::ready::{not_ready, wait_http_ready};
use crate::rest::RestClient;
use crate::settings;
use crate::wait;

/// The node name in the test's executor certificate.
pub const NODE_NAME: &str = "e2e-exec";
/// How long a process may take to become ready (migrations, broker connection, registration).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a short task may take from submit to a terminal status.
pub const TASK_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of each process log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 80;
/// Name of the env's control plane: its settings file (`<name>.json` in the working directory) and
/// its log (`logs/<name>.log`).
pub const CONTROL_PLANE: &str = "control-plane";

/// Setup failures; the readiness ones carry the tail of the process log. `Debug` prints the same
/// text as `Display`, so `expect` in a test shows the log tail readably.
#[derive(thiserror::Error)]
pub enum Error {
    /// The service lock.
    #[error(transparent)]
    Lock(#[from] crate::lock::Error),
    /// PostgreSQL.
    #[error(transparent)]
    Db(#[from] crate::db::Error),
    /// RabbitMQ.
    #[error(transparent)]
    Rabbit(#[from] crate::rabbit::Error),
    /// Certificates.
    #[error(transparent)]
    Certs(#[from] legion_common::tls::Error),
    /// A gRPC channel.
    #[error(transparent)]
    Grpc(#[from] crate::grpc::Error),
    /// A child process.
    #[error(transparent)]
    Process(#[from] crate::process::Error),
    /// A one-shot run.
    #[error(transparent)]
    Run(#[from] crate::cli::Error),
    /// Files of the working directory, or ports.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP client.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// A blocking setup step panicked.
    #[error("setup task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A process did not become ready.
    #[error("{what} not ready: {reason}\n--- last lines of {log} ---\n{tail}\n---")]
    NotReady {
        /// The process.
        what: String,
        /// The last observation (exit status, HTTP status, connection error).
        reason: String,
        /// Its log file.
        log: String,
        /// The last lines of its log.
        tail: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// How to start an executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// `executor.concurrency`: task slots and broker prefetch. Default 4.
    pub concurrency: u32,
    /// `executor.heartbeat_ms`. Default 1000.
    pub heartbeat_ms: u64,
    /// The control plane it talks to (gRPC listener); `None` (the default): the env's own. Tests with
    /// several replicas ([`TestEnv::start_replica`]) point it at one they do not stop.
    pub control_plane: Option<SocketAddr>,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self { concurrency: 4, heartbeat_ms: 1000, control_plane: None }
    }
}

/// A running executor; SIGKILLed when dropped.
#[derive(Debug)]
#[must_use = "dropping the handle kills the executor"]
pub struct Executor {
    service: Service,
    admin: SocketAddr,
}

impl Executor {
    /// Kills the executor with SIGKILL (nothing is drained, nothing acked).
    pub fn kill(&mut self) {
        self.service.kill();
    }

    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The process.
    pub fn service(&mut self) -> &mut Service {
        &mut self.service
    }
}

/// A running gateway; SIGKILLed when dropped.
#[derive(Debug)]
#[must_use = "dropping the handle kills the gateway"]
pub struct Gateway {
    _service: Service,
    rest: RestClient,
}

impl Gateway {
    /// A REST client for it.
    pub fn rest(&self) -> &RestClient {
        &self.rest
    }
}

/// Everything one end-to-end test runs against (see the module docs).
#[derive(Debug)]
pub struct TestEnv {
    // Fields drop in this order: processes before the vhost and database, the lock last.
    control_plane: Option<Service>,
    vhost: TestVhost,
    db: TestDatabase,
    certs: TestCerts,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    http: reqwest::Client,
    channel: Channel,
    admin_channel: AuthChannel,
    log_dir: PathBuf,
    spawned: AtomicU32,
    work: Option<tempfile::TempDir>,
    lock: ServiceLock,
}

impl TestEnv {
    /// Takes the shared service lock and starts a control plane on a fresh database and vhost, with
    /// `auth.bootstrap_admin_key` = [`crate::ADMIN_KEY`].
    ///
    /// # Errors
    /// [`Error`] when a step fails; a control plane that does not become ready is reported with the
    /// tail of its log.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(Mode::Shared, Value::Null).await
    }

    /// Like [`TestEnv::start`] with the exclusive service lock, for tests that stop a shared service.
    ///
    /// # Errors
    /// As [`TestEnv::start`].
    pub async fn start_exclusive() -> Result<Self, Error> {
        Self::start_with(Mode::Exclusive, Value::Null).await
    }

    /// Like [`TestEnv::start`], with `extra` deep-merged into the control plane's settings (objects
    /// merge key by key, anything else replaces), e.g. `{"crypt": {"jwt": {"hs_secret": "…"}}}`.
    ///
    /// # Errors
    /// As [`TestEnv::start`]; settings the control plane refuses show as [`Error::NotReady`] with its
    /// log tail.
    pub async fn start_with_settings(extra: Value) -> Result<Self, Error> {
        Self::start_with(Mode::Shared, extra).await
    }

    async fn start_with(mode: Mode, extra: Value) -> Result<Self, Error> {
        crate::init();
        let lock = tokio::task::spawn_blocking(move || ServiceLock::acquire(mode)).await??;
        let db = TestDatabase::create().await?;
        let vhost = tokio::task::spawn_blocking(TestVhost::create).await??;
        let work = tempfile::Builder::new().prefix("legion-e2e-").tempdir()?;
        let certs = TestCerts::write(&work.path().join("certs"), NODE_NAME)?;
        let log_dir = work.path().join("logs");
        std::fs::create_dir_all(&log_dir)?;
        let grpc_addr = crate::ports::free_addr()?;
        let admin_addr = crate::ports::free_addr()?;
        let config = settings::ControlPlaneConfig {
            database_url: db.url(),
            amqp_url: vhost.url(),
            grpc: grpc_addr,
            admin: admin_addr,
        };
        let mut cp_settings = settings::control_plane(&config, &certs);
        settings::merge(&mut cp_settings, extra);
        let file = settings::write(work.path(), CONTROL_PLANE, &cp_settings)?;
        let mut command = process::command("legion-control-plane", work.path())?;
        command.arg("--settings").arg(&file);
        let service = Service::spawn(CONTROL_PLANE, command, &log_dir.join(format!("{CONTROL_PLANE}.log")))?;
        let channel = grpc::connect_lazy(&settings::control_plane_url(grpc_addr), &certs.tls(Identity::None))?;
        let admin_channel = grpc::authenticated(channel.clone(), &Auth::admin())?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build()?;
        let mut env = Self {
            control_plane: Some(service),
            vhost,
            db,
            certs,
            grpc_addr,
            admin_addr,
            http,
            channel,
            admin_channel,
            log_dir,
            spawned: AtomicU32::new(0),
            work: Some(work),
            lock,
        };
        let url = format!("http://{admin_addr}/readyz");
        if let Some(service) = env.control_plane.as_mut() {
            wait_http_ready(&env.http, service, &url).await?;
        }
        Ok(env)
    }

    /// The test's certificates.
    pub fn certs(&self) -> &TestCerts {
        &self.certs
    }

    /// The test's database.
    pub fn db(&self) -> &TestDatabase {
        &self.db
    }

    /// `https://127.0.0.1:<port>` of the control plane's gRPC listener.
    pub fn control_plane_url(&self) -> String {
        settings::control_plane_url(self.grpc_addr)
    }

    /// The test's RabbitMQ vhost (`legion-e2e-<uuid>`), e.g. for [`crate::rabbit::queue_counts`].
    pub fn vhost_name(&self) -> &str {
        self.vhost.name()
    }

    /// The control plane's gRPC listener.
    pub fn control_plane_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The control plane's admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The working directory: settings files, `certs/`, `logs/`.
    pub fn work_dir(&self) -> &Path {
        self.work.as_ref().map_or(Path::new("/nonexistent"), |w| w.path())
    }

    /// The process-log directory.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// A shared HTTP client (10 s timeout).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The shared channel to the control plane (TLS, no client certificate: a user), without a
    /// credential.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The shared channel with `auth` on every call.
    ///
    /// # Errors
    /// [`grpc::Error::Credential`] when the secret is not a valid metadata value.
    pub fn channel_as(&self, auth: &Auth) -> Result<AuthChannel, grpc::Error> {
        grpc::authenticated(self.channel.clone(), auth)
    }

    /// A `TaskService` client on the shared channel, sending the bootstrap admin key.
    pub fn tasks(&self) -> TaskClient {
        TaskClient::new(self.admin_channel.clone())
    }

    /// A `TaskService` client on the shared channel, sending `auth`.
    ///
    /// # Errors
    /// As [`TestEnv::channel_as`].
    pub fn tasks_as(&self, auth: &Auth) -> Result<TaskClient, grpc::Error> {
        Ok(TaskClient::new(self.channel_as(auth)?))
    }

    /// A `CatalogService` client on the shared channel, sending the bootstrap admin key.
    pub fn catalog(&self) -> CatalogClient {
        CatalogClient::new(self.admin_channel.clone())
    }

    /// A `CatalogService` client on the shared channel, sending `auth`.
    ///
    /// # Errors
    /// As [`TestEnv::channel_as`].
    pub fn catalog_as(&self, auth: &Auth) -> Result<CatalogClient, grpc::Error> {
        Ok(CatalogClient::new(self.channel_as(auth)?))
    }

    /// The settings file of the env's control plane (replicas start from a copy of it).
    pub fn control_plane_settings(&self) -> PathBuf {
        self.work_dir().join(format!("{CONTROL_PLANE}.json"))
    }

    /// The service lock the env holds (outage guards check that it is exclusive).
    pub(crate) fn service_lock(&self) -> &ServiceLock {
        &self.lock
    }

    /// The env's control-plane process (killed, stopped and restarted by [`crate::replicas`]).
    pub(crate) fn control_plane_process(&mut self) -> &mut Option<Service> {
        &mut self.control_plane
    }

    /// `<kind>-<n>`: a label unique within the env, for a process's settings file and log.
    pub(crate) fn next_label(&self, kind: &str) -> String {
        format!("{kind}-{}", self.spawned.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Starts an executor with the test's node certificate (node [`NODE_NAME`]) and waits until its
    /// `/readyz` answers 200 and `ListNodes` shows the node `active`.
    ///
    /// # Errors
    /// [`Error::NotReady`] with its log tail, or a setup error.
    pub async fn start_executor(&self, options: &ExecutorOptions) -> Result<Executor, Error> {
        let label = self.next_label("executor");
        let admin = crate::ports::free_addr()?;
        let config = settings::ExecutorConfig {
            amqp_url: self.vhost.url(),
            control_plane: options.control_plane.unwrap_or(self.grpc_addr),
            admin,
            concurrency: options.concurrency,
            heartbeat_ms: options.heartbeat_ms,
        };
        let file = settings::write(self.work_dir(), &label, &settings::executor(&config, &self.certs))?;
        let mut command = process::command("legion-executor", self.work_dir())?;
        command.arg("--settings").arg(&file);
        let mut service = Service::spawn(&label, command, &self.log_dir.join(format!("{label}.log")))?;
        wait_http_ready(&self.http, &mut service, &format!("http://{admin}/readyz")).await?;
        let catalog = self.catalog();
        let node = self.certs.node_name().to_owned();
        let listed = wait::eventually(&format!("node {node} active in ListNodes"), READY_TIMEOUT, || {
            let (mut catalog, node) = (catalog.clone(), node.clone());
            async move {
                let nodes = catalog
                    .list_nodes(grpc::request(ListNodesRequest {}))
                    .await
                    .map_err(|s| format!("ListNodes: {s}"))?
                    .into_inner()
                    .nodes;
                match nodes.iter().find(|n| n.name == node) {
                    Some(n) if n.status == NodeStatus::Active as i32 => Ok(()),
                    Some(n) => Err(format!("node status {:?}", NodeStatus::try_from(n.status))),
                    None => Err(format!("nodes: {:?}", nodes.iter().map(|n| &n.name).collect::<Vec<_>>())),
                }
            }
        })
        .await;
        if let Err(timeout) = listed {
            return Err(not_ready(&service, timeout.to_string()));
        }
        Ok(Executor { service, admin })
    }

    /// Starts a gateway with the gateway certificate and waits until its `/readyz` answers 200. Its
    /// [`Gateway::rest`] client sends the bootstrap admin key.
    ///
    /// # Errors
    /// [`Error::NotReady`] with its log tail, or a setup error.
    pub async fn start_gateway(&self) -> Result<Gateway, Error> {
        let label = self.next_label("gateway");
        let listen = crate::ports::free_addr()?;
        let file = settings::write(self.work_dir(), &label, &settings::gateway(self.grpc_addr, listen, &self.certs))?;
        let mut command = process::command("legion-gateway", self.work_dir())?;
        command.arg("--settings").arg(&file);
        let mut service = Service::spawn(&label, command, &self.log_dir.join(format!("{label}.log")))?;
        wait_http_ready(&self.http, &mut service, &format!("http://{listen}/readyz")).await?;
        Ok(Gateway { _service: service, rest: RestClient::new(&format!("http://{listen}"))? })
    }

    /// Writes the CLI's settings file (control plane URL and CA, no client certificate) and returns
    /// its path. The file holds no credential: pass one with [`Auth::cli_args`], or use
    /// [`TestEnv::legion`].
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn cli_settings(&self) -> Result<PathBuf, Error> {
        Ok(settings::write(self.work_dir(), "cli", &settings::cli(self.grpc_addr, &self.certs))?)
    }

    /// Runs `legion --settings <cli settings> --api-key <ADMIN_KEY> <args>` to its exit (at most
    /// `timeout`).
    ///
    /// # Errors
    /// When the settings file cannot be written, or as [`TestEnv::run_to_exit`].
    pub async fn legion(&self, args: &[&str], timeout: Duration) -> Result<crate::cli::Output, Error> {
        self.legion_as(&Auth::admin(), args, timeout).await
    }

    /// Like [`TestEnv::legion`] with the credential `auth` (`--api-key`, `--token` or none).
    ///
    /// # Errors
    /// As [`TestEnv::legion`].
    pub async fn legion_as(&self, auth: &Auth, args: &[&str], timeout: Duration) -> Result<crate::cli::Output, Error> {
        let settings = self.cli_settings()?.to_string_lossy().into_owned();
        let credential = auth.cli_args();
        let mut all = vec!["--settings", settings.as_str()];
        all.extend(credential.iter().map(String::as_str));
        all.extend_from_slice(args);
        self.run_to_exit("legion", &all, timeout).await
    }

    /// Runs binary `name` with `args` in the working directory until it exits (at most `timeout`).
    ///
    /// # Errors
    /// [`crate::cli::Error`] when it cannot run or does not exit in time.
    pub async fn run_to_exit(&self, name: &str, args: &[&str], timeout: Duration) -> Result<crate::cli::Output, Error> {
        Ok(crate::cli::run(name, self.work_dir(), args, timeout).await?)
    }

    /// Stops RabbitMQ's application until the returned guard ends or drops. Needs
    /// [`TestEnv::start_exclusive`].
    ///
    /// # Errors
    /// [`crate::rabbit::Error::NotExclusive`] under the shared lock, or `rabbitmqctl` failures.
    pub async fn stop_rabbitmq(&self) -> Result<RabbitOutage<'_>, Error> {
        Ok(RabbitOutage::begin(&self.lock).await?)
    }

    fn print_logs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.log_dir) else { return };
        let mut logs: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        logs.sort();
        for log in logs {
            eprintln!(
                "\n===== last {LOG_TAIL_LINES} lines of {} =====\n{}",
                process::file_name(&log),
                process::tail(&log, LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        drop(self.control_plane.take());
        if std::thread::panicking() {
            self.print_logs();
            if let Some(work) = self.work.take() {
                eprintln!("legion-tests: kept the working directory {} (logs, settings, certs)", work.keep().display());
            }
        }
    }
}
