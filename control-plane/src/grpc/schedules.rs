//! `legion.v1.ScheduleService`: create, read, list, pause, resume and delete schedules, list their
//! fires, and preview a cadence. Every change is audited (`schedule.create`, `schedule.delete`,
//! `schedule.pause`, `schedule.resume`); args and transformations never reach the audit trail or logs.
//!
//! Authorization follows the proto's comments and `grpc/tasks.rs`: the caller is authenticated first;
//! a schedule fires tasks on its creator's behalf, so creating one needs what submitting its task needs
//! (`create` on `tasks/…`, `execute` on `runners/…`, and for a chain, `execute` on `chains/<name>`,
//! checked before the chain is looked up, then on the runner of each action) besides `create` on
//! `schedules/<name>`. Only then is the catalog consulted, and the transformation evaluated once, on the
//! schedule's first slot, so that a transformation that can only fail is refused rather than failing
//! every fire. A list shows only the schedules the caller may `read`.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use legion_common::settings::{Limits, RetrySettings};
use legion_proto::v1;
use legion_proto::v1::schedule_service_server::ScheduleService;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::chains::{actions, chain_path};
use super::tasks::{readable_page, runner_path, task_path};
use super::{convert, invalid, status, store_status};
use crate::auth::{Auth, Caller};
use crate::chains::FieldError;
use crate::chains::sandbox::Sandbox;
use crate::chains::transform::Transformation;
use crate::delivery::retry;
use crate::policy::Capability;
use crate::policy::parse::validate_name;
use crate::schedules::{plan, validate};
use crate::store::schedules::{CadenceSpec, Schedule, ScheduleSpec, ScheduleStore};
use crate::store::{self, Store};
use crate::tasks::page;

/// The schedule API over the schedule store (schedules, fires) and the task store (catalog, chains).
pub struct ScheduleApi {
    schedules: Arc<dyn ScheduleStore>,
    store: Arc<dyn Store>,
    limits: tokio::sync::watch::Receiver<Limits>,
    auth: Auth,
    sandbox: Sandbox,
    changed: Arc<Notify>,
    retry: RetrySettings,
}

impl ScheduleApi {
    /// The service. `sandbox` evaluates the `jinja` and `jq` transformations checked at creation.
    /// `changed` is notified after a create or a resume, so that this replica's scheduler (when it
    /// leads) looks at once rather than at its next poll.
    pub fn new(
        schedules: Arc<dyn ScheduleStore>,
        store: Arc<dyn Store>,
        limits: tokio::sync::watch::Receiver<Limits>,
        auth: Auth,
        sandbox: Sandbox,
        changed: Arc<Notify>,
    ) -> Self {
        Self { schedules, store, limits, auth, sandbox, changed, retry: RetrySettings::default() }
    }

    /// The same service checking a schedule's `retry` against `retry` (the `retry.*` settings) at
    /// creation (default: their defaults).
    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    /// Authenticates the caller, checks the name and `capability` on `schedules/<name>`, and records the
    /// name in the call's span.
    async fn authorize_name<T>(
        &self,
        request: &Request<T>,
        name: &str,
        capability: Capability,
    ) -> Result<(Caller, String), Status> {
        let caller = self.auth.authenticate(request).await?;
        validate_name("name", name).map_err(|e| invalid(&e.field, e.reason))?;
        tracing::Span::current().record("name", name);
        let path = schedule_path(name);
        self.auth.check(&caller, &path, capability).await?;
        Ok((caller, path))
    }

    /// Checks what creating `spec` needs beyond `create` on the schedule: the capabilities of a submit of
    /// its task (chain first, then the chain's actions), then that the chain and the function exist.
    async fn authorize_task(&self, caller: &Caller, spec: &ScheduleSpec, path: &str) -> Result<(), Status> {
        let (task, runner) = (task_path(&spec.function), runner_path(&spec.function));
        let mut first = vec![(path, Capability::Create), (task.as_str(), Capability::Create)];
        first.push((runner.as_str(), Capability::Execute));
        let chain_resource = spec.chain.as_deref().map(chain_path);
        if let Some(resource) = &chain_resource {
            // Before the lookup: a caller without `execute` on the chain cannot learn whether it exists.
            first.push((resource.as_str(), Capability::Execute));
        }
        self.auth.check_many(caller, &first).await?;
        if let Some(name) = &spec.chain {
            let chain = self.store.get_chain(name).await.map_err(store_status)?;
            let chain = chain.ok_or_else(|| invalid("chain", format!("unknown chain {name:?}")))?;
            if !chain.definition.relationships.iter().any(|r| r.active && r.trigger == spec.function) {
                return Err(invalid(
                    "chain",
                    format!(
                        "no active relationship of chain {name:?} is triggered by {}: its runs would do nothing",
                        spec.function
                    ),
                ));
            }
            let runners: Vec<String> = actions(&chain.definition).iter().map(|a| runner_path(a)).collect();
            let checks: Vec<(&str, Capability)> = runners.iter().map(|p| (p.as_str(), Capability::Execute)).collect();
            self.auth.check_many(caller, &checks).await?;
        }
        let catalog = self.store.function_status(std::slice::from_ref(&spec.function)).await.map_err(store_status)?;
        match catalog.get(&spec.function) {
            None => Err(invalid("function", format!("unknown function {:?}", spec.function))),
            Some(true) => {
                let extension = spec.function.split('.').next().unwrap_or(&spec.function).to_owned();
                let disabled = crate::tasks::submit::Error::Disabled { extension };
                Err(status(disabled.code(), disabled.to_string()))
            }
            Some(false) => Ok(()),
        }
    }

    /// Evaluates the transformation of `spec`, if any, once on the context of its first slot `first`
    /// (`fired_at` = the slot), as a fire would: `jinja` and `jq` in the sandbox under
    /// `control_plane.transform_timeout_ms`, `static` in this process. Its output must be args a task
    /// takes ([`plan::check_args`]: an object within `limits.max_payload_bytes` and
    /// `limits.max_json_depth`).
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` naming `transformation` with the slot and the reason; `UNAVAILABLE` when the
    /// sandbox cannot start or is shut down (nothing is wrong with the transformation).
    async fn check_transformation(
        &self,
        spec: &ScheduleSpec,
        first: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<(), Status> {
        let Some(document) = &spec.transformation else { return Ok(()) };
        let transformation =
            Transformation::parse(document, "transformation", limits.max_transformation_bytes).map_err(field_status)?;
        let refuse = |reason: &str| {
            let reason = reason.strip_prefix("args: ").unwrap_or(reason);
            invalid("transformation", format!("on the first slot ({}): {reason}", plan::rfc3339(first)))
        };
        let context = plan::context(&spec.args, &spec.name, first, first);
        let output = match self.sandbox.evaluate(&transformation, &context).await {
            Ok(output) => output,
            Err(e) if SANDBOX_UNAVAILABLE.iter().any(|prefix| e.starts_with(prefix)) => {
                tracing::warn!(error = %e, "cannot check a schedule's transformation");
                return Err(Status::unavailable(format!("transformation: cannot be checked now: {e}")));
            }
            Err(e) => return Err(refuse(&e)),
        };
        plan::check_args(output, limits).map_err(|e| refuse(&e))?;
        Ok(())
    }

    async fn set_paused(
        &self,
        request: Request<v1::SetSchedulePausedRequest>,
        paused: bool,
    ) -> Result<Response<v1::Schedule>, Status> {
        let name = &request.get_ref().name;
        let (caller, path) = self.authorize_name(&request, name, Capability::Update).await?;
        let schedule = self.schedules.set_schedule_paused(name, paused).await.map_err(store_status)?;
        let schedule = schedule.ok_or_else(|| not_found(name))?;
        let action = if paused { "schedule.pause" } else { "schedule.resume" };
        self.auth.record_change(&caller, action, &path, serde_json::json!({"id": schedule.id})).await?;
        if !paused {
            self.changed.notify_one();
        }
        tracing::info!(schedule = %name, paused, principal = %caller.principal, "schedule paused or resumed");
        Ok(Response::new(message(&schedule, Utc::now())))
    }
}

/// The resource path of schedule `name` (DESIGN.md section 6).
pub fn schedule_path(name: &str) -> String {
    format!("schedules/{name}")
}

/// How [`Sandbox::evaluate`]'s errors begin when the sandbox itself, not the transformation, failed.
const SANDBOX_UNAVAILABLE: &[&str] = &["transformation sandbox could not start", "transformation sandbox is shut down"];

fn field_status(e: FieldError) -> Status {
    invalid(&e.field, e.reason)
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("name: no schedule {name:?}"))
}

/// A stored schedule as `legion.v1.Schedule`, with its next fires after `now`. A stored cadence that no
/// longer parses (a row of another version) shows no next fires rather than failing the call.
pub fn message(schedule: &Schedule, now: DateTime<Utc>) -> v1::Schedule {
    let next = validate::next_fires(schedule, now).unwrap_or_else(|e| {
        tracing::warn!(schedule = %schedule.spec.name, error = %e, "stored cadence does not parse; no next fires");
        Vec::new()
    });
    convert::schedule(schedule, &next)
}

/// What the audit trail records of a created schedule: never its args or transformation.
fn audit_detail(schedule: &Schedule) -> serde_json::Value {
    let spec = &schedule.spec;
    let mut detail = serde_json::json!({
        "id": schedule.id,
        "function": spec.function,
        "chain": spec.chain,
        "misfire": spec.misfire.as_str(),
        "allow_overlap": spec.allow_overlap,
        "paused": spec.paused,
    });
    match &spec.cadence {
        CadenceSpec::Cron { expression, timezone } => {
            detail["cron"] = expression.as_str().into();
            detail["timezone"] = timezone.as_str().into();
        }
        CadenceSpec::Interval { interval_ms } => detail["interval_ms"] = (*interval_ms).into(),
    }
    detail
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    #[tracing::instrument(skip_all, fields(name))]
    async fn create_schedule(
        &self,
        request: Request<v1::CreateScheduleRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        // Who first (a caller without a credential learns nothing), then what (pure checks), then
        // whether it may, and only then what the catalog and chains hold.
        let caller = self.auth.authenticate(&request).await?;
        let document = request.get_ref().schedule.as_ref().ok_or_else(|| invalid("schedule", "required"))?;
        let limits = self.limits.borrow().clone();
        let mut spec = validate::validate(document, &limits).map_err(field_status)?;
        // The fields the schedule leaves unset take the settings; together they must still hold.
        retry::resolve_overrides(&spec.retry, &self.retry).map_err(|e| invalid(e.field, e.reason))?;
        // Microseconds, as PostgreSQL keeps the instants that slots are computed from when they fire.
        let first = validate::first_slot(&spec.cadence, Utc::now().trunc_subsecs(6)).map_err(field_status)?;
        tracing::Span::current().record("name", spec.name.as_str());
        let path = schedule_path(&spec.name);
        self.authorize_task(&caller, &spec, &path).await?;
        self.check_transformation(&spec, first, &limits).await?;
        spec.created_by.clone_from(&caller.principal);
        spec.policies = caller.policies.to_vec();
        let created = self.schedules.create_schedule(&spec).await.map_err(|e| match e {
            store::Error::AlreadyExists(_) => {
                Status::already_exists(format!("name: schedule {:?} already exists", spec.name))
            }
            other => store_status(other),
        })?;
        self.auth.record_change(&caller, "schedule.create", &path, audit_detail(&created)).await?;
        self.changed.notify_one();
        tracing::info!(
            schedule = %spec.name,
            function = %spec.function,
            paused = spec.paused,
            principal = %caller.principal,
            "schedule created"
        );
        Ok(Response::new(message(&created, Utc::now())))
    }

    #[tracing::instrument(skip_all, fields(name))]
    async fn get_schedule(&self, request: Request<v1::GetScheduleRequest>) -> Result<Response<v1::Schedule>, Status> {
        let name = &request.get_ref().name;
        self.authorize_name(&request, name, Capability::Read).await?;
        let schedule = self.schedules.get_schedule(name).await.map_err(store_status)?;
        let schedule = schedule.ok_or_else(|| not_found(name))?;
        Ok(Response::new(message(&schedule, Utc::now())))
    }

    #[tracing::instrument(skip_all)]
    async fn list_schedules(
        &self,
        request: Request<v1::ListSchedulesRequest>,
    ) -> Result<Response<v1::ListSchedulesResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let req = request.get_ref();
        let limit = page::page_size(req.page_size).map_err(|e| invalid("page_size", e))?;
        let after = tokens::decode_name(&req.page_token).map_err(|e| invalid("page_token", e))?;
        self.auth.check(&caller, "schedules/", Capability::List).await?;
        // `list` enumerates, `read` reveals (as Vault's): a schedule, args included, is shown only with
        // `read` on its path.
        let acl = self.auth.acl(&caller.policies).await?;
        let (scanned, more) = self.schedules.list_schedules(after.as_deref(), limit).await.map_err(store_status)?;
        let now = Utc::now();
        // Args of up to limits.max_payload_bytes each: the page is cut by encoded size, as ListTasks'.
        let max_list_bytes = self.limits.borrow().max_list_bytes;
        let (schedules, next) = readable_page(
            &scanned,
            more,
            |s| acl.allows(&schedule_path(&s.spec.name), Capability::Read),
            |s| message(s, now),
            Some(max_list_bytes),
        );
        let next_page_token = next.map(|s| tokens::encode_name(&s.spec.name)).unwrap_or_default();
        Ok(Response::new(v1::ListSchedulesResponse { schedules, next_page_token }))
    }

    #[tracing::instrument(skip_all, fields(name))]
    async fn delete_schedule(
        &self,
        request: Request<v1::DeleteScheduleRequest>,
    ) -> Result<Response<v1::DeleteScheduleResponse>, Status> {
        let name = &request.get_ref().name;
        let (caller, path) = self.authorize_name(&request, name, Capability::Delete).await?;
        let deleted = self.schedules.delete_schedule(name).await.map_err(store_status)?;
        let id = deleted.ok_or_else(|| not_found(name))?;
        self.auth.record_change(&caller, "schedule.delete", &path, serde_json::json!({"id": id})).await?;
        tracing::info!(schedule = %name, principal = %caller.principal, "schedule deleted");
        Ok(Response::new(v1::DeleteScheduleResponse {}))
    }

    #[tracing::instrument(skip_all, fields(name))]
    async fn pause_schedule(
        &self,
        request: Request<v1::SetSchedulePausedRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.set_paused(request, true).await
    }

    #[tracing::instrument(skip_all, fields(name))]
    async fn resume_schedule(
        &self,
        request: Request<v1::SetSchedulePausedRequest>,
    ) -> Result<Response<v1::Schedule>, Status> {
        self.set_paused(request, false).await
    }

    #[tracing::instrument(skip_all, fields(name))]
    async fn list_schedule_fires(
        &self,
        request: Request<v1::ListScheduleFiresRequest>,
    ) -> Result<Response<v1::ListScheduleFiresResponse>, Status> {
        let req = request.get_ref();
        self.authorize_name(&request, &req.name, Capability::Read).await?;
        let limit = page::page_size(req.page_size).map_err(|e| invalid("page_size", e))?;
        let before = tokens::decode_slot(&req.page_token).map_err(|e| invalid("page_token", e))?;
        let listed = self.schedules.list_fires(&req.name, before, limit).await.map_err(store_status)?;
        let (fires, more) = listed.ok_or_else(|| not_found(&req.name))?;
        let next_page_token = fires.last().filter(|_| more).map(|f| tokens::encode_slot(f.slot)).unwrap_or_default();
        Ok(Response::new(v1::ListScheduleFiresResponse {
            fires: fires.iter().map(convert::fire).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn preview_schedule(
        &self,
        request: Request<v1::PreviewScheduleRequest>,
    ) -> Result<Response<v1::PreviewScheduleResponse>, Status> {
        self.auth.authenticate(&request).await?;
        let preview = validate::preview(request.get_ref(), Utc::now()).map_err(field_status)?;
        let slots = preview.slots().into_iter().map(legion_proto::timestamp).collect();
        Ok(Response::new(v1::PreviewScheduleResponse { slots }))
    }
}

/// Page tokens, opaque to callers: a format prefix and where the previous page ended. Anything else is
/// refused, so a token damaged in transit is an error rather than a silently different page.
mod tokens {
    use chrono::{DateTime, Utc};

    use crate::tasks::page::{self, MalformedToken};

    /// `ListSchedules`: `s1.<last name>`.
    const NAME_PREFIX: &str = "s1.";
    /// `ListScheduleFires`: `f1.<last slot in microseconds since the Unix epoch>`.
    const SLOT_PREFIX: &str = "f1.";

    /// The token that continues after schedule `name`.
    pub fn encode_name(name: &str) -> String {
        page::encode_name(NAME_PREFIX, name)
    }

    /// The name after which the next page starts; `None` for an empty token (the first page).
    pub fn decode_name(token: &str) -> Result<Option<String>, MalformedToken> {
        page::decode_name(NAME_PREFIX, token)
    }

    /// The token that continues with the fires older than `slot`.
    pub fn encode_slot(slot: DateTime<Utc>) -> String {
        format!("{SLOT_PREFIX}{}", slot.timestamp_micros())
    }

    /// The slot before which the next page starts; `None` for an empty token (the first page).
    pub fn decode_slot(token: &str) -> Result<Option<DateTime<Utc>>, MalformedToken> {
        if token.is_empty() {
            return Ok(None);
        }
        let digits = token.strip_prefix(SLOT_PREFIX).ok_or(MalformedToken)?;
        if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MalformedToken);
        }
        let micros: i64 = digits.parse().map_err(|_| MalformedToken)?;
        let slot = DateTime::from_timestamp_micros(micros).ok_or(MalformedToken)?;
        // Only the canonical spelling (no leading zeros) is a token this service made.
        if encode_slot(slot) != token {
            return Err(MalformedToken);
        }
        Ok(Some(slot))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn name_tokens_round_trip_and_refuse_garbage() {
            assert_eq!(decode_name(""), Ok(None));
            assert_eq!(decode_name(&encode_name("nightly-report")), Ok(Some("nightly-report".into())));
            for bad in ["nightly", "s1.", "s1.Bad Name", "c1.nightly", "s2.nightly", "f1.123"] {
                assert_eq!(decode_name(bad), Err(MalformedToken), "{bad}");
            }
        }

        #[test]
        fn slot_tokens_round_trip_and_refuse_garbage() {
            let slot =
                DateTime::parse_from_rfc3339("2026-03-08T07:00:00.123456Z").expect("RFC 3339").with_timezone(&Utc);
            assert_eq!(decode_slot(&encode_slot(slot)), Ok(Some(slot)));
            assert_eq!(decode_slot(""), Ok(None));
            assert_eq!(decode_slot("f1.0"), Ok(Some(DateTime::UNIX_EPOCH)));
            for bad in ["f1.", "f1.-5", "f1.+5", "f1.012", "f1.1e6", "f1.99999999999999999999", "s1.5", "5", "f1. 5"] {
                assert_eq!(decode_slot(bad), Err(MalformedToken), "{bad}");
            }
        }
    }
}
