//! Test support: an in-process control plane over TLS that answers `ChainService` (chains kept in
//! memory with versions, as chains.proto describes), the read side of `TaskService` (a fixed set
//! of tasks, listed newest first in pages, filtered by `root_id`) and `DeadLetterService` (the tasks
//! in status `dead_lettered`, filtered by `function`; a replay moves one to `pending`, once), and a
//! runner for `legion` command lines against it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use clap::Parser;
use legion_common::settings::TlsSettings;
use legion_proto::v1;
use legion_proto::v1::chain_service_server::{ChainService, ChainServiceServer};
use legion_proto::v1::dead_letter_service_server::{DeadLetterService, DeadLetterServiceServer};
use legion_proto::v1::task_service_server::{TaskService, TaskServiceServer};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::args::Cli;
use crate::error::Error;

/// What the fake control plane holds and saw.
#[derive(Default)]
pub struct State {
    /// Chains by name.
    pub chains: Mutex<BTreeMap<String, v1::Chain>>,
    /// Tasks, oldest first.
    pub tasks: Vec<v1::Task>,
    /// `page_size` of every `ListTasks` and `ListChains` call, in order.
    pub page_sizes: Mutex<Vec<u32>>,
    /// Ids of the tasks replayed, in order.
    pub replayed: Mutex<Vec<String>>,
}

/// The fake, shared by both services.
#[derive(Clone)]
pub struct Fake(pub Arc<State>);

fn page<T: Clone>(items: &[T], size: u32, token: &str) -> Result<(Vec<T>, String), Status> {
    let size = match size {
        0 => 100,
        1..=1000 => size as usize,
        _ => return Err(Status::invalid_argument("page_size: must be 1 to 1000")),
    };
    let start: usize =
        if token.is_empty() { 0 } else { token.parse().map_err(|_| Status::invalid_argument("page_token"))? };
    let end = (start + size).min(items.len());
    let next = if end < items.len() { end.to_string() } else { String::new() };
    Ok((items.get(start..end).unwrap_or_default().to_vec(), next))
}

#[tonic::async_trait]
impl ChainService for Fake {
    async fn apply_chain(
        &self,
        request: Request<v1::ApplyChainRequest>,
    ) -> Result<Response<v1::ApplyChainResponse>, Status> {
        let mut chain = request.into_inner().chain.ok_or_else(|| Status::invalid_argument("chain: required"))?;
        if let Some(i) = chain.relationships.iter().position(|r| r.trigger == r.action) {
            return Err(Status::invalid_argument(format!("relationships[{i}].action: same as the trigger")));
        }
        let mut chains = self.0.chains.lock().map_err(|_| Status::internal("poisoned"))?;
        let previous = chains.get(&chain.name).cloned();
        let changed =
            previous.as_ref().is_none_or(|p| p.relationships != chain.relationships || p.max_depth != chain.max_depth);
        chain.version = previous.as_ref().map_or(1, |p| p.version + i64::from(changed));
        chain.updated_by = "api-key/test".into();
        chain.updated_at = Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 });
        chains.insert(chain.name.clone(), chain.clone());
        Ok(Response::new(v1::ApplyChainResponse { chain: Some(chain), created: previous.is_none(), changed }))
    }

    async fn get_chain(&self, request: Request<v1::GetChainRequest>) -> Result<Response<v1::Chain>, Status> {
        let name = request.into_inner().name;
        let chains = self.0.chains.lock().map_err(|_| Status::internal("poisoned"))?;
        chains
            .get(&name)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("chain {name} not found")))
    }

    async fn list_chains(
        &self,
        request: Request<v1::ListChainsRequest>,
    ) -> Result<Response<v1::ListChainsResponse>, Status> {
        let request = request.into_inner();
        self.0.page_sizes.lock().map_err(|_| Status::internal("poisoned"))?.push(request.page_size);
        let all: Vec<v1::Chain> =
            self.0.chains.lock().map_err(|_| Status::internal("poisoned"))?.values().cloned().collect();
        let (chains, next_page_token) = page(&all, request.page_size, &request.page_token)?;
        Ok(Response::new(v1::ListChainsResponse { chains, next_page_token }))
    }

    async fn delete_chain(
        &self,
        request: Request<v1::DeleteChainRequest>,
    ) -> Result<Response<v1::DeleteChainResponse>, Status> {
        let name = request.into_inner().name;
        let removed = self.0.chains.lock().map_err(|_| Status::internal("poisoned"))?.remove(&name);
        removed
            .map(|_| Response::new(v1::DeleteChainResponse {}))
            .ok_or_else(|| Status::not_found(format!("chain {name} not found")))
    }
}

type Events = Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for Fake {
    type WatchTaskStream = Events;

    async fn submit_task(&self, _: Request<v1::SubmitTaskRequest>) -> Result<Response<v1::SubmitTaskResponse>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn get_task(&self, request: Request<v1::GetTaskRequest>) -> Result<Response<v1::Task>, Status> {
        let id = request.into_inner().id;
        let task = self.0.tasks.iter().find(|t| t.id == id).cloned();
        task.map(Response::new).ok_or_else(|| Status::not_found(format!("task {id} not found")))
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let request = request.into_inner();
        self.0.page_sizes.lock().map_err(|_| Status::internal("poisoned"))?.push(request.page_size);
        let matching: Vec<v1::Task> = self
            .0
            .tasks
            .iter()
            .rev()
            .filter(|t| request.root_id.is_none() || t.root_id == request.root_id)
            .cloned()
            .collect();
        let (tasks, next_page_token) = page(&matching, request.page_size, &request.page_token)?;
        Ok(Response::new(v1::ListTasksResponse { tasks, next_page_token }))
    }

    async fn cancel_task(&self, _: Request<v1::CancelTaskRequest>) -> Result<Response<v1::Task>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn watch_task(&self, _: Request<v1::WatchTaskRequest>) -> Result<Response<Self::WatchTaskStream>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn list_task_attempts(
        &self,
        _: Request<v1::ListTaskAttemptsRequest>,
    ) -> Result<Response<v1::ListTaskAttemptsResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
}

#[tonic::async_trait]
impl DeadLetterService for Fake {
    async fn list_dead_letters(
        &self,
        request: Request<v1::ListDeadLettersRequest>,
    ) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        let request = request.into_inner();
        let replayed = self.0.replayed.lock().map_err(|_| Status::internal("poisoned"))?.clone();
        let dead: Vec<v1::Task> = self
            .0
            .tasks
            .iter()
            .rev()
            .filter(|t| t.status() == v1::TaskStatus::DeadLettered && !replayed.contains(&t.id))
            .filter(|t| request.function.as_ref().is_none_or(|f| *f == t.function))
            .cloned()
            .collect();
        let (tasks, next_page_token) = page(&dead, request.page_size, &request.page_token)?;
        Ok(Response::new(v1::ListDeadLettersResponse { tasks, next_page_token }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<v1::ReplayDeadLetterRequest>,
    ) -> Result<Response<v1::ReplayDeadLetterResponse>, Status> {
        let id = request.into_inner().task_id;
        let task = self.0.tasks.iter().find(|t| t.id == id).cloned();
        let mut task = task.ok_or_else(|| Status::not_found(format!("task_id: no task {id}")))?;
        let mut replayed = self.0.replayed.lock().map_err(|_| Status::internal("poisoned"))?;
        if task.status() != v1::TaskStatus::DeadLettered || replayed.contains(&id) {
            return Err(Status::failed_precondition(format!("task {id} is not dead_lettered")));
        }
        replayed.push(id);
        task.set_status(v1::TaskStatus::Pending);
        task.finished_at = None;
        task.replays += 1;
        Ok(Response::new(v1::ReplayDeadLetterResponse { task: Some(task) }))
    }
}

/// Writes the development certificates to `dir` and binds a local port: the listener, its address
/// and the TLS configuration of a server holding the control plane's certificate.
pub async fn tls_listener(dir: &Path) -> (tokio::net::TcpListener, SocketAddr, tonic::transport::ServerTlsConfig) {
    legion_common::install_crypto_provider();
    legion_common::tls::write_dev_certs(dir, "executor").expect("dev certs");
    let tls = TlsSettings {
        ca: Some(dir.join("ca.pem")),
        cert: Some(dir.join("control-plane.pem")),
        key: Some(dir.join("control-plane-key.pem")),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr, legion_common::tls::server_config(&tls).expect("server tls"))
}

/// Serves a fake holding `tasks` over TLS with the development control-plane certificate written to
/// `dir`; returns its address and state.
pub async fn serve(dir: &Path, tasks: Vec<v1::Task>) -> (SocketAddr, Arc<State>) {
    let (listener, addr, tls) = tls_listener(dir).await;
    let state = Arc::new(State { tasks, ..State::default() });
    let fake = Fake(state.clone());
    let server = Server::builder()
        .tls_config(tls)
        .expect("tls config")
        .add_service(ChainServiceServer::new(fake.clone()))
        .add_service(DeadLetterServiceServer::new(fake.clone()))
        .add_service(TaskServiceServer::new(fake));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    (addr, state)
}

/// Runs `legion --api-key test ARGS` against the fake at `addr` (CA in `dir`) with `stdin`; returns the
/// result and the output.
pub async fn legion(addr: SocketAddr, dir: &Path, args: &[&str], stdin: &[u8]) -> (Result<u8, Error>, String) {
    let url = format!("https://localhost:{}", addr.port());
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let line =
        ["legion", "--control-plane", &url, "--ca", ca, "--api-key", "test"].into_iter().chain(args.iter().copied());
    let cli = Cli::try_parse_from(line).expect("parses");
    let mut out = Vec::new();
    let result = crate::run_with_input(cli, stdin, &mut out).await;
    (result, String::from_utf8(out).expect("utf-8"))
}
