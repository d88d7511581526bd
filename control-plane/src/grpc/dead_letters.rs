//! `legion.v1.DeadLetterService`: list the tasks that ended `dead_lettered` and replay them
//! (DESIGN.md section 5, item 5; docs/architecture.md "Dead letters").
//!
//! Authorization: listing as `ListTasks` (`list` on `tasks/`, or on the function's path with
//! `function`; only the tasks the caller may `read` are shown); a replay needs `update` on
//! `tasks/<extension>/<runner>/<function>` and `execute` on `runners/<extension>/<runner>/<function>`,
//! and is audited as `task.replay`.

use std::sync::Arc;

use legion_common::function::FunctionName;
use legion_common::settings::{Limits, RetrySettings};
use legion_proto::v1;
use legion_proto::v1::dead_letter_service_server::DeadLetterService;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::tasks::{readable_page, runner_path, task_path};
use super::{convert, invalid, parse_uuid, store_status};
use crate::auth::Auth;
use crate::delivery::retry::RetryPolicy;
use crate::events::Events;
use crate::policy::Capability;
use crate::store::Store;
use crate::store::dead_letters::DeadLetterFilter;
use crate::tasks::page;

/// The dead-letter API over the store.
pub struct DeadLetterApi {
    store: Arc<dyn Store>,
    limits: tokio::sync::watch::Receiver<Limits>,
    auth: Auth,
    events: Events,
    wake: Arc<Notify>,
    /// The `retry.*` settings as a policy: shown for tasks written before policies were stored.
    retry: RetryPolicy,
}

impl DeadLetterApi {
    /// The service. `wake` is the outbox publisher's, notified after a replay committed its outbox row;
    /// `events` carries the replay's status change to watchers.
    pub fn new(
        store: Arc<dyn Store>,
        limits: tokio::sync::watch::Receiver<Limits>,
        auth: Auth,
        events: Events,
        wake: Arc<Notify>,
    ) -> Self {
        Self { store, limits, auth, events, wake, retry: RetryPolicy::from(&RetrySettings::default()) }
    }

    /// The same service showing `retry` (the `retry.*` settings) as the policy of tasks without a
    /// stored one.
    pub fn with_retry(mut self, retry: &RetrySettings) -> Self {
        self.retry = RetryPolicy::from(retry);
        self
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterApi {
    async fn list_dead_letters(
        &self,
        request: Request<v1::ListDeadLettersRequest>,
    ) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        let req = request.get_ref();
        let limit = page::page_size(req.page_size).map_err(|e| invalid("page_size", e))?;
        let before = page::decode(&req.page_token).map_err(|e| invalid("page_token", e))?;
        let path = match &req.function {
            Some(function) => {
                FunctionName::parse(function).map_err(|e| invalid("function", e))?;
                task_path(function)
            }
            None => "tasks/".to_owned(),
        };
        let caller = self.auth.authorize(&request, &path, Capability::List).await?;
        // `list` enumerates, `read` reveals, as in ListTasks.
        let acl = self.auth.acl(&caller.policies).await?;
        if req.function.is_some() && !acl.allows(&path, Capability::Read) {
            return Ok(Response::new(v1::ListDeadLettersResponse::default()));
        }
        let max_list_bytes = self.limits.borrow().max_list_bytes;
        let filter =
            DeadLetterFilter { function: req.function.clone(), before, limit, max_bytes: Some(max_list_bytes) };
        let page = self.store.list_dead_letters(&filter).await.map_err(store_status)?;
        let (tasks, next) = readable_page(
            &page.tasks,
            page.more,
            |t| acl.allows(&task_path(&t.function), Capability::Read),
            |t| convert::task_with(t, &self.retry),
            Some(max_list_bytes),
        );
        let next_page_token = next.map(|t| page::encode(t.id)).unwrap_or_default();
        Ok(Response::new(v1::ListDeadLettersResponse { tasks, next_page_token }))
    }

    #[tracing::instrument(skip_all, fields(task_id = %request.get_ref().task_id))]
    async fn replay_dead_letter(
        &self,
        request: Request<v1::ReplayDeadLetterRequest>,
    ) -> Result<Response<v1::ReplayDeadLetterResponse>, Status> {
        let id = parse_uuid("task_id", &request.get_ref().task_id)?;
        let caller = self.auth.authenticate(&request).await?;
        let task = self.store.get_task(id).await.map_err(store_status)?;
        let task = task.ok_or_else(|| Status::not_found(format!("task_id: no task {id}")))?;
        let path = task_path(&task.function);
        let runner = runner_path(&task.function);
        self.auth.check_many(&caller, &[(&path, Capability::Update), (&runner, Capability::Execute)]).await?;
        let (replayed, changes) = self.store.replay_dead_letter(id).await.map_err(store_status)?;
        self.wake.notify_one();
        self.events.publish(&changes);
        let detail = serde_json::json!({
            "task_id": id,
            "function": replayed.function,
            "dispatch": replayed.dispatch,
        });
        self.auth.record_change(&caller, "task.replay", &path, detail).await?;
        tracing::info!(task_id = %id, dispatch = replayed.dispatch, principal = %caller.principal, "dead letter replayed");
        Ok(Response::new(v1::ReplayDeadLetterResponse { task: Some(convert::task_with(&replayed, &self.retry)) }))
    }
}
