//! A control plane started with [`legion_control_plane::run_with`] against a test database, its own RabbitMQ
//! vhost (reached through a TCP proxy the test can cut) and fresh dev certificates.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use legion_common::Settings;
pub use legion_common::credential::{AuthChannel, Credential};
use legion_common::settings::TlsSettings;
use legion_proto::v1::catalog_service_client::CatalogServiceClient;
use legion_proto::v1::executor_service_client::ExecutorServiceClient;
use legion_proto::v1::task_service_client::TaskServiceClient;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::TestDb;

/// The executor node name in the test certificates.
pub const NODE: &str = "exec-1";

/// A `RegisterNodeRequest` for [`NODE`] (region `default`, 8 slots) offering `core.util.<f>` for each
/// of `functions`.
pub fn core_manifest(functions: &[&str]) -> legion_proto::v1::RegisterNodeRequest {
    use legion_proto::v1;
    v1::RegisterNodeRequest {
        name: NODE.into(),
        region: "default".into(),
        version: "0.1.0".into(),
        concurrency: 8,
        extensions: vec![v1::ExtensionManifest {
            name: "core".into(),
            version: "0.1.0".into(),
            runners: vec![v1::Runner {
                name: "util".into(),
                functions: functions
                    .iter()
                    .map(|f| v1::Function { name: (*f).to_owned(), description: String::new() })
                    .collect(),
            }],
        }],
    }
}

/// A RabbitMQ vhost `legion-cp-test-<uuid>`, deleted with this guard.
pub struct Vhost(pub String);

impl Vhost {
    pub fn create() -> Self {
        let name = format!("legion-cp-test-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self(name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().expect("run rabbitmqctl (tests need it on PATH)");
    assert!(output.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A TCP proxy to RabbitMQ that the test can stop (every connection is cut) and start again.
pub struct Proxy {
    pub port: u16,
    target: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn new(target: SocketAddr) -> Self {
        Self { port: free_port(), target, acceptor: None }
    }

    pub async fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind proxy");
        let target = self.target;
        self.acceptor = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the acceptor drops it, which cuts them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    pub async fn stop(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.abort();
            let _ = acceptor.await;
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The bootstrap admin API key of every test control plane (`auth.bootstrap_admin_key`).
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef0123456789";

/// A running control plane and what it needs.
pub struct Stack {
    pub settings: Settings,
    pub certs: tempfile::TempDir,
    pub proxy: Proxy,
    pub vhost: Vhost,
    pub db: TestDb,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<anyhow::Result<()>>,
}

impl Stack {
    /// Starts a control plane; the broker proxy is started too unless `broker_up` is false.
    pub async fn start(broker_up: bool, edit: impl FnOnce(&mut Settings)) -> Self {
        legion_common::install_crypto_provider();
        let db = TestDb::create().await;
        let vhost = Vhost::create();
        let mut proxy = Proxy::new(SocketAddr::from(([127, 0, 0, 1], 5672)));
        if broker_up {
            proxy.start().await;
        }
        let certs = tempfile::tempdir().expect("tempdir");
        legion_common::tls::write_dev_certs(certs.path(), NODE).expect("dev certs");
        let mut settings = Settings { data: db.data_settings(), ..Settings::default() };
        settings.transport.url = format!("amqp://guest:guest@127.0.0.1:{}/{}", proxy.port, vhost.0);
        settings.transport.outbox_poll_ms = 100;
        settings.control_plane.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        settings.control_plane.admin_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        settings.control_plane.url = format!("https://localhost:{}", settings.control_plane.listen.port());
        settings.tls = TlsSettings {
            ca: Some(certs.path().join("ca.pem")),
            cert: Some(certs.path().join("control-plane.pem")),
            key: Some(certs.path().join("control-plane-key.pem")),
        };
        settings.auth.bootstrap_admin_key = Some(ADMIN_KEY.to_owned());
        edit(&mut settings);
        settings.validate().expect("valid test settings");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(legion_control_plane::run_with(settings.clone(), options(), shutdown.clone()));
        let stack = Self { settings, certs, proxy, vhost, db, shutdown, server };
        super::eventually("the admin listener", Duration::from_secs(30), || async {
            reqwest_like_get(stack.settings.control_plane.admin_listen, "/healthz")
                .await
                .filter(|(code, _)| *code == 200)
        })
        .await;
        stack
    }

    fn tls(&self, identity: Option<&str>) -> TlsSettings {
        TlsSettings {
            ca: Some(self.certs.path().join("ca.pem")),
            cert: identity.map(|name| self.certs.path().join(format!("{name}.pem"))),
            key: identity.map(|name| self.certs.path().join(format!("{name}-key.pem"))),
        }
    }

    /// A channel to the gRPC port, presenting the `identity` certificate (`executor`, `gateway`) if any.
    pub async fn channel(&self, identity: Option<&str>) -> Channel {
        let tls = legion_common::tls::client_config(&self.tls(identity)).expect("client tls");
        Endpoint::from_shared(self.settings.control_plane.url.clone())
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .expect("connect to the control plane")
    }

    /// A channel whose calls carry the bootstrap admin key.
    pub async fn admin_channel(&self) -> AuthChannel {
        self.channel_as(Credential::api_key(ADMIN_KEY).expect("key")).await
    }

    /// A channel whose calls carry `credential`.
    pub async fn channel_as(&self, credential: Credential) -> AuthChannel {
        tonic::service::interceptor::InterceptedService::new(self.channel(None).await, credential)
    }

    pub async fn tasks(&self) -> TaskServiceClient<AuthChannel> {
        TaskServiceClient::new(self.admin_channel().await)
    }

    pub async fn catalog(&self) -> CatalogServiceClient<AuthChannel> {
        CatalogServiceClient::new(self.admin_channel().await)
    }

    pub async fn executor(&self) -> ExecutorServiceClient<Channel> {
        ExecutorServiceClient::new(self.channel(Some("executor")).await)
    }

    /// A direct broker connection to the test vhost (not through the proxy).
    pub async fn broker(&self) -> lapin::Channel {
        let mut transport = self.settings.transport.clone();
        transport.url = format!("amqp://guest:guest@127.0.0.1:5672/{}", self.vhost.0);
        let connection = legion_common::broker::connect(&transport, "control plane test").await.expect("broker");
        connection.create_channel().await.expect("channel")
    }

    /// `GET path` on the admin listener: `(status, body)`.
    pub async fn admin(&self, path: &str) -> (u16, String) {
        reqwest_like_get(self.settings.control_plane.admin_listen, path).await.expect("admin listener answers")
    }

    /// Stops the control plane (as an operator would), waits `downtime`, and starts it again on the
    /// same database, broker and ports.
    pub async fn restart(&mut self, downtime: Duration) {
        self.shutdown.cancel();
        let server = std::mem::replace(&mut self.server, tokio::spawn(async { Ok(()) }));
        tokio::time::timeout(Duration::from_secs(20), server)
            .await
            .expect("run() returns within 20 s of shutdown")
            .expect("run() does not panic")
            .expect("clean shutdown");
        tokio::time::sleep(downtime).await;
        self.shutdown = CancellationToken::new();
        self.server =
            tokio::spawn(legion_control_plane::run_with(self.settings.clone(), options(), self.shutdown.clone()));
        let admin = self.settings.control_plane.admin_listen;
        super::eventually("the restarted admin listener", Duration::from_secs(30), || async {
            reqwest_like_get(admin, "/healthz").await.filter(|(code, _)| *code == 200)
        })
        .await;
    }

    /// A pool on the test database, for checks the API does not offer.
    pub async fn pool(&self) -> sqlx::PgPool {
        legion_control_plane::store::pg::connect(&self.db.data_settings()).await.expect("connect")
    }

    /// Cancels the shutdown token and waits for `run` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.server)
            .await
            .expect("run() returns within 20 s of shutdown")
            .expect("run() does not panic");
        drop(self.proxy);
        result
    }
}

/// A minimal HTTP/1.1 GET (the admin listener is plain HTTP); `None` when the connection fails.
pub async fn reqwest_like_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

pub fn cert_dir(stack: &Stack) -> PathBuf {
    stack.certs.path().to_path_buf()
}

/// The control plane's options in tests: transformations run in the built `legion-control-plane` binary
/// (the test binary is not one).
pub fn options() -> legion_control_plane::Options {
    legion_control_plane::Options { sandbox_program: env!("CARGO_BIN_EXE_legion-control-plane").into() }
}
