//! A control plane over TLS that answers `ScheduleService` the way schedules.proto describes it:
//! schedules kept in memory (ALREADY_EXISTS for a taken name, NOT_FOUND for an unknown one), the next
//! five slots computed by `legion_common::slots` from a fixed clock ([`NOW`]) and none while paused
//! (schedules are created paused when asked),
//! three fires per schedule, and every `CreateSchedule` request kept for the tests to inspect.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use legion_common::slots::Cadence;
use legion_proto::v1;
use legion_proto::v1::schedule_service_server::{ScheduleService, ScheduleServiceServer};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::testing::tls_listener;

/// The fake's clock: 2026-03-07T00:00:00Z.
pub const NOW: i64 = 1_772_841_600;

/// What the fake holds and saw.
#[derive(Default)]
pub struct State {
    /// Schedules by name.
    pub schedules: Mutex<BTreeMap<String, v1::Schedule>>,
    /// Every `CreateSchedule` request, in order.
    pub created: Mutex<Vec<v1::Schedule>>,
    /// `page_size` of every list call, in order.
    pub page_sizes: Mutex<Vec<u32>>,
}

#[derive(Clone)]
struct Fake(Arc<State>);

fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

fn next_fires(s: &v1::Schedule) -> Vec<prost_types::Timestamp> {
    let now = DateTime::<Utc>::from_timestamp(NOW, 0).expect("in range");
    let cadence = match (&s.cron, s.interval_ms) {
        (Some(cron), _) => Cadence::cron(cron, Some(&s.timezone)).expect("valid"),
        (None, Some(ms)) => Cadence::interval(ms, now).expect("valid"),
        (None, None) => return Vec::new(),
    };
    cadence.next_slots(now, 5).into_iter().map(legion_proto::timestamp).collect()
}

/// The fires of every schedule, newest first: a fired slot, an overlap, and a catch-up that stands
/// for two missed slots.
pub fn fires() -> Vec<v1::ScheduleFire> {
    vec![
        v1::ScheduleFire {
            slot: ts(NOW, 0),
            fired_at: ts(NOW, 250_000_000),
            task_id: "0190f5c8-7e4a-7b3c-9d2e-000000000002".into(),
            status: "succeeded".into(),
            outcome: "fired".into(),
            reason: String::new(),
            missed: 0,
            epoch: 4,
        },
        v1::ScheduleFire {
            slot: ts(NOW - 300, 0),
            fired_at: ts(NOW - 300, 0),
            status: "overlap".into(),
            outcome: "overlap".into(),
            reason: "the previous task is unfinished".into(),
            epoch: 4,
            ..v1::ScheduleFire::default()
        },
        v1::ScheduleFire {
            slot: ts(NOW - 600, 0),
            fired_at: ts(NOW - 590, 0),
            task_id: "0190f5c8-7e4a-7b3c-9d2e-000000000001".into(),
            status: "failed".into(),
            outcome: "fired".into(),
            reason: "catch-up for 3 slots".into(),
            missed: 2,
            epoch: 3,
        },
    ]
}

fn lock<T>(mutex: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, Status> {
    mutex.lock().map_err(|_| Status::internal("poisoned"))
}

impl Fake {
    fn change(&self, name: &str, paused: bool) -> Result<Response<v1::Schedule>, Status> {
        let mut schedules = lock(&self.0.schedules)?;
        let s = schedules.get_mut(name).ok_or_else(|| Status::not_found(format!("schedule {name} not found")))?;
        s.paused = paused;
        s.next_fires = if paused { Vec::new() } else { next_fires(s) };
        Ok(Response::new(s.clone()))
    }
}

#[tonic::async_trait]
impl ScheduleService for Fake {
    async fn create_schedule(
        &self,
        request: Request<v1::CreateScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let given = request.into_inner().schedule.ok_or_else(|| Status::invalid_argument("schedule: required"))?;
        lock(&self.0.created)?.push(given.clone());
        if given.cron.is_some() == given.interval_ms.is_some() {
            return Err(Status::invalid_argument("cron: give either cron or interval_ms"));
        }
        let mut schedules = lock(&self.0.schedules)?;
        if schedules.contains_key(&given.name) {
            return Err(Status::already_exists(format!("schedule {} already exists", given.name)));
        }
        let mut s = v1::Schedule {
            timezone: if given.timezone.is_empty() { "UTC".into() } else { given.timezone.clone() },
            misfire: if given.misfire.is_empty() { "fire_once".into() } else { given.misfire.clone() },
            created_at: ts(NOW, 0),
            updated_at: ts(NOW, 0),
            created_by: "api-key/test".into(),
            last_fire: fires().first().cloned(),
            ..given
        };
        s.next_fires = if s.paused { Vec::new() } else { next_fires(&s) };
        schedules.insert(s.name.clone(), s.clone());
        Ok(Response::new(s))
    }

    async fn get_schedule(&self, request: Request<v1::GetScheduleRequest>) -> Result<Response<v1::Schedule>, Status> {
        let name = request.into_inner().name;
        let schedules = lock(&self.0.schedules)?;
        schedules
            .get(&name)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("schedule {name} not found")))
    }

    async fn list_schedules(
        &self,
        request: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let request = request.into_inner();
        lock(&self.0.page_sizes)?.push(request.page_size);
        // One schedule per page, so that a listing must follow the tokens.
        let schedules = lock(&self.0.schedules)?;
        let mut after = schedules.values().filter(|s| s.name > request.page_token);
        let page: Vec<v1::Schedule> = after.next().cloned().into_iter().collect();
        let next_page_token = match (page.first(), after.next()) {
            (Some(last), Some(_)) => last.name.clone(),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListSchedulesResponse { schedules: page, next_page_token }))
    }

    async fn delete_schedule(
        &self,
        request: Request<v1::DeleteScheduleRequest>,
    ) -> Result<Response<v1::DeleteScheduleResponse>, Status> {
        let name = request.into_inner().name;
        let removed = lock(&self.0.schedules)?.remove(&name);
        removed
            .map(|_| Response::new(v1::DeleteScheduleResponse {}))
            .ok_or_else(|| Status::not_found(format!("schedule {name} not found")))
    }

    async fn pause_schedule(
        &self,
        request: Request<v1::SetSchedulePausedRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.change(&request.into_inner().name, true)
    }

    async fn resume_schedule(
        &self,
        request: Request<v1::SetSchedulePausedRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.change(&request.into_inner().name, false)
    }

    async fn list_schedule_fires(
        &self,
        request: Request<v1::ListScheduleFiresRequest>,
    ) -> Result<Response<v1::ListScheduleFiresResponse>, Status> {
        let request = request.into_inner();
        lock(&self.0.page_sizes)?.push(request.page_size);
        if !lock(&self.0.schedules)?.contains_key(&request.name) {
            return Err(Status::not_found(format!("schedule {} not found", request.name)));
        }
        let all = fires();
        let start: usize = if request.page_token.is_empty() {
            0
        } else {
            request.page_token.parse().map_err(|_| Status::invalid_argument("page_token"))?
        };
        let end = (start + request.page_size.max(1) as usize).min(all.len());
        let next_page_token = if end < all.len() { end.to_string() } else { String::new() };
        Ok(Response::new(v1::ListScheduleFiresResponse {
            fires: all.get(start..end).unwrap_or_default().to_vec(),
            next_page_token,
        }))
    }

    async fn preview_schedule(
        &self,
        _: Request<v1::PreviewScheduleRequest>,
    ) -> Result<Response<v1::PreviewScheduleResponse>, Status> {
        Err(Status::unimplemented("the CLI previews locally"))
    }
}

/// Serves the fake over TLS with the development control-plane certificate written to `dir`; returns
/// its address and state.
pub async fn serve(dir: &Path) -> (SocketAddr, Arc<State>) {
    let (listener, addr, tls) = tls_listener(dir).await;
    let state = Arc::new(State::default());
    let server = Server::builder()
        .tls_config(tls)
        .expect("tls config")
        .add_service(ScheduleServiceServer::new(Fake(state.clone())));
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    (addr, state)
}
