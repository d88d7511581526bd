//! An in-process control plane for the schedule routes: a `ScheduleService` that keeps schedules in
//! memory the way schedules.proto describes them (ALREADY_EXISTS for a taken name, NOT_FOUND for an
//! unknown one, INVALID_ARGUMENT naming the cadence field, schedules created paused when asked, the next
//! five slots computed by `legion_common::slots` from a fixed clock, paused schedules with none), and a
//! `CatalogService`
//! whose `ListNodes` answers one executor, two control-plane replicas and the scheduler lease.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use legion_common::slots::Cadence;
use legion_proto::v1;
use legion_proto::v1::catalog_service_server::CatalogService;
use legion_proto::v1::schedule_service_server::ScheduleService;
use tonic::{Request, Response, Status};

/// The fake's clock: the instant after which `next_fires` are computed (2026-03-07T00:00:00Z).
pub const NOW: i64 = 1_772_841_600;

/// Fires recorded for every schedule the fake creates, newest slot first.
pub const FIRES: usize = 3;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW, 0).expect("in range")
}

fn cadence(cron: Option<&str>, timezone: &str, interval_ms: Option<u64>) -> Result<Cadence, Status> {
    let invalid = |e: legion_common::slots::Invalid| Status::invalid_argument(e.to_string());
    match (cron, interval_ms) {
        (Some(expression), None) => Cadence::cron(expression, Some(timezone)).map_err(invalid),
        (None, Some(ms)) => Cadence::interval(ms, now()).map_err(invalid),
        _ => Err(Status::invalid_argument("cron: give either cron or interval_ms")),
    }
}

/// Schedules by name, with their fires; `created_by` is the `x-api-key` the call carried.
#[derive(Default)]
pub struct Schedules(Mutex<BTreeMap<String, (v1::Schedule, Vec<v1::ScheduleFire>)>>);

impl Schedules {
    fn with<T>(
        &self,
        name: &str,
        change: impl FnOnce(&mut v1::Schedule, &[v1::ScheduleFire]) -> T,
    ) -> Result<Response<T>, Status> {
        let mut schedules = self.0.lock().expect("lock");
        let (schedule, fires) =
            schedules.get_mut(name).ok_or_else(|| Status::not_found(format!("schedule {name} not found")))?;
        Ok(Response::new(change(schedule, fires)))
    }
}

fn next_fires(schedule: &v1::Schedule) -> Vec<prost_types::Timestamp> {
    let cadence = cadence(schedule.cron.as_deref(), &schedule.timezone, schedule.interval_ms).expect("stored valid");
    cadence.next_slots(now(), 5).into_iter().map(legion_proto::timestamp).collect()
}

fn fires(anchor: i64) -> Vec<v1::ScheduleFire> {
    (0..FIRES as i64)
        .map(|i| {
            let fired = i != 1;
            v1::ScheduleFire {
                slot: Some(prost_types::Timestamp { seconds: anchor - 60 * i, nanos: 0 }),
                fired_at: Some(prost_types::Timestamp { seconds: anchor - 60 * i, nanos: 250_000_000 }),
                task_id: if fired { format!("0190f5c8-7e4a-7b3c-9d2e-00000000000{i}") } else { String::new() },
                status: if fired { "succeeded" } else { "overlap" }.into(),
                outcome: if fired { "fired" } else { "overlap" }.into(),
                reason: if fired { String::new() } else { "the previous task is unfinished".into() },
                missed: 0,
                epoch: 4,
            }
        })
        .collect()
}

#[tonic::async_trait]
impl ScheduleService for Schedules {
    async fn create_schedule(
        &self,
        request: Request<v1::CreateScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        let caller = request.metadata().get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("anonymous");
        let caller = format!("api-key/{caller}");
        let given = request.into_inner().schedule.ok_or_else(|| Status::invalid_argument("schedule: required"))?;
        cadence(given.cron.as_deref(), &given.timezone, given.interval_ms)?;
        if given.created_at.is_some() || !given.next_fires.is_empty() || given.last_fire.is_some() {
            return Err(Status::invalid_argument("output-only fields were sent"));
        }
        let mut schedules = self.0.lock().expect("lock");
        if schedules.contains_key(&given.name) {
            return Err(Status::already_exists(format!("schedule {} already exists", given.name)));
        }
        let mut schedule = v1::Schedule {
            timezone: if given.timezone.is_empty() { "UTC".into() } else { given.timezone.clone() },
            misfire: if given.misfire.is_empty() { "fire_once".into() } else { given.misfire.clone() },
            created_at: Some(prost_types::Timestamp { seconds: NOW, nanos: 0 }),
            updated_at: Some(prost_types::Timestamp { seconds: NOW, nanos: 0 }),
            created_by: caller,
            ..given
        };
        schedule.next_fires = if schedule.paused { Vec::new() } else { next_fires(&schedule) };
        let history = fires(NOW);
        schedule.last_fire = history.first().cloned();
        schedules.insert(schedule.name.clone(), (schedule.clone(), history));
        Ok(Response::new(schedule))
    }

    async fn get_schedule(&self, request: Request<v1::GetScheduleRequest>) -> Result<Response<v1::Schedule>, Status> {
        self.with(&request.into_inner().name, |s, _| s.clone())
    }

    async fn list_schedules(
        &self,
        request: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let request = request.into_inner();
        let size = if request.page_size == 0 { 100 } else { request.page_size as usize };
        let schedules = self.0.lock().expect("lock");
        let mut page: Vec<v1::Schedule> = schedules
            .values()
            .map(|(s, _)| s)
            .filter(|s| s.name > request.page_token)
            .take(size + 1)
            .cloned()
            .collect();
        let next_page_token = if page.len() > size {
            page.truncate(size);
            page.last().map(|s| s.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListSchedulesResponse { schedules: page, next_page_token }))
    }

    async fn delete_schedule(
        &self,
        request: Request<v1::DeleteScheduleRequest>,
    ) -> Result<Response<v1::DeleteScheduleResponse>, Status> {
        let name = request.into_inner().name;
        match self.0.lock().expect("lock").remove(&name) {
            Some(_) => Ok(Response::new(v1::DeleteScheduleResponse {})),
            None => Err(Status::not_found(format!("schedule {name} not found"))),
        }
    }

    async fn pause_schedule(
        &self,
        request: Request<v1::SetSchedulePausedRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.with(&request.into_inner().name, |s, _| {
            s.paused = true;
            s.next_fires.clear();
            s.clone()
        })
    }

    async fn resume_schedule(
        &self,
        request: Request<v1::SetSchedulePausedRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.with(&request.into_inner().name, |s, _| {
            s.paused = false;
            s.next_fires = next_fires(s);
            s.clone()
        })
    }

    async fn list_schedule_fires(
        &self,
        request: Request<v1::ListScheduleFiresRequest>,
    ) -> Result<Response<v1::ListScheduleFiresResponse>, Status> {
        let request = request.into_inner();
        let size = if request.page_size == 0 { 100 } else { request.page_size as usize };
        let start: usize = if request.page_token.is_empty() {
            0
        } else {
            request.page_token.parse().map_err(|_| Status::invalid_argument("page_token: not from this server"))?
        };
        self.with(&request.name, |_, fires| {
            let end = (start + size).min(fires.len());
            let next_page_token = if end < fires.len() { end.to_string() } else { String::new() };
            v1::ListScheduleFiresResponse { fires: fires.get(start..end).unwrap_or_default().to_vec(), next_page_token }
        })
    }

    async fn preview_schedule(
        &self,
        request: Request<v1::PreviewScheduleRequest>,
    ) -> Result<Response<v1::PreviewScheduleResponse>, Status> {
        let request = request.into_inner();
        let from = request.from.as_ref().and_then(legion_proto::timestamp_to_chrono).unwrap_or_else(now);
        let cadence = match (request.cron.as_deref(), request.interval_ms) {
            (None, Some(ms)) => Cadence::interval(ms, from).map_err(|e| Status::invalid_argument(e.to_string()))?,
            (cron, interval_ms) => cadence(cron, &request.timezone, interval_ms)?,
        };
        let count = if request.count == 0 { 5 } else { request.count as usize };
        let slots = cadence.next_slots(from, count).into_iter().map(legion_proto::timestamp).collect();
        Ok(Response::new(v1::PreviewScheduleResponse { slots }))
    }
}

/// A catalog whose only answer is `ListNodes`.
pub struct Catalog;

#[tonic::async_trait]
impl CatalogService for Catalog {
    async fn list_extensions(
        &self,
        _: Request<v1::ListExtensionsRequest>,
    ) -> Result<Response<v1::ListExtensionsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_nodes(&self, _: Request<v1::ListNodesRequest>) -> Result<Response<v1::ListNodesResponse>, Status> {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        Ok(Response::new(v1::ListNodesResponse {
            nodes: vec![v1::Node {
                name: "exec-1".into(),
                region: "eu".into(),
                version: "0.1.0".into(),
                status: v1::NodeStatus::Active as i32,
                concurrency: 8,
                started_at: at(NOW),
                last_heartbeat: at(NOW + 5),
                extensions: BTreeMap::new().into_iter().collect(),
            }],
            control_planes: vec![
                v1::ControlPlane {
                    name: "cp-a/1f2e".into(),
                    version: "0.1.0".into(),
                    started_at: at(NOW),
                    last_seen: at(NOW + 10),
                    leader: true,
                },
                v1::ControlPlane {
                    name: "cp-b/9c8d".into(),
                    version: "0.1.0".into(),
                    started_at: at(NOW + 1),
                    last_seen: at(NOW + 9),
                    leader: false,
                },
            ],
            leadership: Some(v1::Leadership {
                holder: "cp-a/1f2e".into(),
                epoch: 4,
                acquired_at: at(NOW),
                expires_at: at(NOW + 15),
            }),
        }))
    }

    async fn disable_extension(
        &self,
        _: Request<v1::SetExtensionDisabledRequest>,
    ) -> Result<Response<v1::Extension>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn enable_extension(
        &self,
        _: Request<v1::SetExtensionDisabledRequest>,
    ) -> Result<Response<v1::Extension>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}
