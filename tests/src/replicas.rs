//! Several control planes on one test's database and vhost (DESIGN.md section 4: every replica serves
//! the API, only the leader of the scheduler lease fires schedules), and stopping, killing and
//! restarting the env's own control plane.
//!
//! A replica ([`TestEnv::start_replica`]) starts from a copy of the env's control-plane settings file
//! (same `data.url`, `transport.url`, certificates, bootstrap admin key and extra settings) with its
//! own gRPC and admin ports. Its holder name (`<host>/<random>`, see `control-plane/src/leader.rs`) is
//! not derived from anything the harness knows, so tests map names to processes by starting replicas
//! one at a time and waiting for each new name in `ListNodes.control_planes`
//! ([`new_replica_name`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use legion_proto::v1::{ControlPlane as ReplicaInfo, Leadership, ListNodesRequest, ListNodesResponse};
use serde_json::Value;

use crate::TestEnv;
use crate::auth::Auth;
use crate::certs::Identity;
use crate::env::{CONTROL_PLANE, Error};
use crate::grpc::{self, AuthChannel, CatalogClient};
use crate::process::{self, Service};
use crate::ready::wait_http_ready;
use crate::settings;
use crate::wait;

/// How long a control plane may take to drain after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// A control plane started next to the env's own; SIGKILLed when dropped.
#[derive(Debug)]
#[must_use = "dropping the handle kills the replica"]
pub struct ControlPlane {
    service: Service,
    label: String,
    settings: PathBuf,
    grpc: SocketAddr,
    admin: SocketAddr,
    channel: AuthChannel,
    http: reqwest::Client,
    work_dir: PathBuf,
}

impl ControlPlane {
    /// Its label (`control-plane-<n>`): the name of its settings file and log.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its gRPC listener (TLS).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// Its admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// A channel to it (TLS, no client certificate) sending the bootstrap admin key.
    pub fn channel(&self) -> AuthChannel {
        self.channel.clone()
    }

    /// A `CatalogService` client on [`ControlPlane::channel`].
    pub fn catalog(&self) -> CatalogClient {
        CatalogClient::new(self.channel())
    }

    /// The process.
    pub fn service(&mut self) -> &mut Service {
        &mut self.service
    }

    /// Kills it with SIGKILL: no lease released, nothing drained.
    pub fn kill(&mut self) {
        self.service.kill();
    }

    /// SIGTERM, then up to [`STOP_GRACE`] to drain; see [`Service::terminate`].
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        self.service.terminate(STOP_GRACE).await
    }

    /// Starts it again (after [`ControlPlane::kill`] or [`ControlPlane::stop`]; a running process is
    /// killed first) with the same settings and ports, and waits until its `/readyz` answers 200.
    ///
    /// # Errors
    /// [`Error::NotReady`] with its log tail, or a process error.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.service.kill();
        self.service = spawn(&self.label, &self.settings, &self.work_dir)?;
        wait_http_ready(&self.http, &mut self.service, &format!("http://{}/readyz", self.admin)).await
    }
}

fn spawn(label: &str, settings: &std::path::Path, work_dir: &std::path::Path) -> Result<Service, Error> {
    let mut command = process::command("legion-control-plane", work_dir)?;
    command.arg("--settings").arg(settings);
    Ok(Service::spawn(label, command, &work_dir.join("logs").join(format!("{label}.log")))?)
}

impl TestEnv {
    /// Starts another control plane on the env's database and vhost: a copy of
    /// [`TestEnv::control_plane_settings`] with free gRPC and admin ports, and waits until its
    /// `/readyz` answers 200.
    ///
    /// # Errors
    /// [`Error::NotReady`] with its log tail, or a setup error.
    pub async fn start_replica(&self) -> Result<ControlPlane, Error> {
        let label = self.next_label(CONTROL_PLANE);
        let text = std::fs::read_to_string(self.control_plane_settings())?;
        let mut replica: Value = serde_json::from_str(&text).map_err(std::io::Error::other)?;
        let (grpc, admin) = (crate::ports::free_addr()?, crate::ports::free_addr()?);
        settings::merge(
            &mut replica,
            serde_json::json!({"control_plane": {
                "listen": grpc.to_string(),
                "admin_listen": admin.to_string(),
                "url": settings::control_plane_url(grpc),
            }}),
        );
        let file = settings::write(self.work_dir(), &label, &replica)?;
        let mut service = spawn(&label, &file, self.work_dir())?;
        wait_http_ready(self.http(), &mut service, &format!("http://{admin}/readyz")).await?;
        let channel = grpc::connect_lazy(&settings::control_plane_url(grpc), &self.certs().tls(Identity::None))?;
        let channel = grpc::authenticated(channel, &Auth::admin())?;
        Ok(ControlPlane {
            service,
            label,
            settings: file,
            grpc,
            admin,
            channel,
            http: self.http().clone(),
            work_dir: self.work_dir().to_path_buf(),
        })
    }

    /// Kills the env's control plane with SIGKILL (no lease released, nothing drained). The env's
    /// clients fail until [`TestEnv::restart_control_plane`].
    pub fn kill_control_plane(&mut self) {
        if let Some(service) = self.control_plane_process().as_mut() {
            service.kill();
        }
    }

    /// Stops the env's control plane as an operator would (SIGTERM, up to [`STOP_GRACE`] to drain):
    /// its exit status, or `None` when it was not running or had to be killed.
    pub async fn stop_control_plane(&mut self) -> Option<ExitStatus> {
        match self.control_plane_process().as_mut() {
            Some(service) => service.terminate(STOP_GRACE).await,
            None => None,
        }
    }

    /// Starts the env's control plane again (a running one is killed first) with the same settings
    /// file, ports and log, and waits until its `/readyz` answers 200. The env's clients reconnect.
    ///
    /// # Errors
    /// [`Error::NotReady`] with its log tail, or a process error.
    pub async fn restart_control_plane(&mut self) -> Result<(), Error> {
        if let Some(mut old) = self.control_plane_process().take() {
            old.kill();
        }
        let mut service = spawn(CONTROL_PLANE, &self.control_plane_settings(), self.work_dir())?;
        let ready = wait_http_ready(self.http(), &mut service, &format!("http://{}/readyz", self.admin_addr())).await;
        *self.control_plane_process() = Some(service);
        ready
    }
}

/// `ListNodes` through `catalog`: the replicas seen lately and the scheduler lease.
///
/// # Errors
/// The control plane's status.
pub async fn list_nodes(catalog: &mut CatalogClient) -> Result<ListNodesResponse, tonic::Status> {
    Ok(catalog.list_nodes(grpc::request(ListNodesRequest {})).await?.into_inner())
}

/// Waits until `ListNodes.control_planes` names a replica not in `known`, and returns its name: the
/// replica just started, when replicas are started one at a time.
///
/// # Errors
/// [`wait::Timeout`] naming the replicas seen last.
pub async fn new_replica_name(
    catalog: &CatalogClient,
    known: &[String],
    timeout: Duration,
) -> Result<String, wait::Timeout> {
    wait::eventually("a new control plane in ListNodes.control_planes", timeout, || {
        let mut catalog = catalog.clone();
        async move {
            let replicas: Vec<ReplicaInfo> =
                list_nodes(&mut catalog).await.map_err(|s| format!("ListNodes: {s}"))?.control_planes;
            let new: Vec<&str> =
                replicas.iter().map(|r| r.name.as_str()).filter(|n| !known.iter().any(|k| k == n)).collect();
            match new.as_slice() {
                [one] => Ok((*one).to_owned()),
                _ => Err(format!("known {known:?}; listed {:?}", replicas.iter().map(|r| &r.name).collect::<Vec<_>>())),
            }
        }
    })
    .await
}

/// Waits until `ListNodes.leadership` satisfies `accept` (e.g. a holder other than a killed one, at a
/// higher epoch) and one of the listed replicas reports `leader`, and returns it.
///
/// # Errors
/// [`wait::Timeout`] with the leadership seen last.
pub async fn wait_leadership(
    catalog: &CatalogClient,
    timeout: Duration,
    accept: impl Fn(&Leadership) -> bool,
) -> Result<Leadership, wait::Timeout> {
    let accept = &accept;
    wait::eventually("the scheduler lease held by an accepted replica", timeout, || {
        let mut catalog = catalog.clone();
        async move {
            let nodes = list_nodes(&mut catalog).await.map_err(|s| format!("ListNodes: {s}"))?;
            let leading: Vec<&str> =
                nodes.control_planes.iter().filter(|r| r.leader).map(|r| r.name.as_str()).collect();
            match nodes.leadership {
                Some(lease) if accept(&lease) && leading == [lease.holder.as_str()] => Ok(lease),
                other => Err(format!("leadership {other:?}; replicas reporting leader: {leading:?}")),
            }
        }
    })
    .await
}
