//! `legion.v1.TaskService`.

use std::pin::Pin;
use std::sync::Arc;

use legion_common::TaskStatus;
use legion_common::settings::{Limits, RetrySettings};
use legion_proto::v1;
use legion_proto::v1::task_service_server::TaskService;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::chains::{actions, chain_path};
use super::{convert, invalid, parse_uuid, status, store_status};
use crate::auth::{Auth, Caller};
use crate::delivery::retry::{self, RetryPolicy};
use crate::events::Events;
use crate::policy::Capability;
use crate::store::{Store, TaskFilter};
use crate::tasks::page;
use crate::tasks::submit::{self, Submitter};
use crate::tasks::validate::validate_submit;
use crate::tasks::watch::{self, WatchEvent};

/// The task API over the store, the submit writer and the status broadcast.
pub struct TaskApi {
    store: Arc<dyn Store>,
    submitter: Submitter,
    events: Events,
    limits: tokio::sync::watch::Receiver<Limits>,
    auth: Auth,
    shutdown: CancellationToken,
    /// The `retry.*` settings.
    retry: RetrySettings,
}

impl TaskApi {
    /// The service. `shutdown` ends open `WatchTask` streams.
    pub fn new(
        store: Arc<dyn Store>,
        submitter: Submitter,
        events: Events,
        limits: tokio::sync::watch::Receiver<Limits>,
        auth: Auth,
        shutdown: CancellationToken,
    ) -> Self {
        Self { store, submitter, events, limits, auth, shutdown, retry: RetrySettings::default() }
    }

    /// The same service with the `retry.*` settings (default: their defaults), against which a
    /// submit's retry policy is checked and which tasks without a stored policy show.
    #[must_use]
    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }

    fn view(&self, task: &crate::store::Task) -> v1::Task {
        convert::task_with(task, &RetryPolicy::from(&self.retry))
    }

    /// Authenticates the caller, loads task `id` and checks `capability` on its resource path
    /// (`tasks/<extension>/<runner>/<function>`). An unknown id is `NOT_FOUND` only for an authenticated
    /// caller.
    async fn authorize_task<T>(
        &self,
        request: &Request<T>,
        id: uuid::Uuid,
        capability: Capability,
    ) -> Result<(Caller, crate::store::Task), Status> {
        let caller = self.auth.authenticate(request).await?;
        let task = self.store.get_task(id).await.map_err(store_status)?;
        let task = task.ok_or_else(|| Status::not_found(format!("id: no task {id}")))?;
        self.auth.check(&caller, &task_path(&task.function), capability).await?;
        Ok((caller, task))
    }
}

/// The stream of `WatchTask`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::TaskEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl TaskService for TaskApi {
    #[tracing::instrument(skip_all, fields(function = %request.get_ref().function))]
    async fn submit_task(
        &self,
        request: Request<v1::SubmitTaskRequest>,
    ) -> Result<Response<v1::SubmitTaskResponse>, Status> {
        // Who first (a caller without a credential learns nothing, not even what is wrong with the
        // request), then what, then whether it may.
        let caller = self.auth.authenticate(&request).await?;
        let validated = validate_submit(request.get_ref(), &self.limits.borrow());
        let mut spec = validated.map_err(|e| invalid(e.field, e.reason))?;
        // Each field was checked alone; the whole policy is checked against the settings it completes.
        retry::resolve_overrides(&spec.retry, &self.retry).map_err(|e| invalid(e.field, e.reason))?;
        let function = spec.function.to_string();
        let mut paths = vec![(task_path(&function), Capability::Create), (runner_path(&function), Capability::Execute)];
        if let Some(name) = &spec.chain {
            // A chain run executes the chain's actions on the submitter's behalf: it needs `execute` on
            // the chain (checked before the lookup, so that a caller without it cannot learn which
            // chains exist) and on the runner of each action.
            let path = chain_path(name);
            let mut first: Vec<(&str, Capability)> = paths.iter().map(|(p, c)| (p.as_str(), *c)).collect();
            first.push((&path, Capability::Execute));
            self.auth.check_many(&caller, &first).await?;
            let chain = self.store.get_chain(name).await.map_err(store_status)?;
            let chain = chain.ok_or_else(|| invalid("chain", format!("unknown chain {name:?}")))?;
            if !chain.definition.relationships.iter().any(|r| r.active && r.trigger == function) {
                return Err(invalid(
                    "chain",
                    format!(
                        "no active relationship of chain {name:?} is triggered by {function}: the run would do nothing"
                    ),
                ));
            }
            paths = actions(&chain.definition).iter().map(|a| (runner_path(a), Capability::Execute)).collect();
            spec.chain_version = Some(chain.version);
        }
        let checks: Vec<(&str, Capability)> = paths.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        self.auth.check_many(&caller, &checks).await?;
        spec.owner = caller.principal;
        let inserted = self.submitter.submit(spec).await.map_err(|e| match e {
            submit::Error::Store(e) => store_status(e),
            other => status(other.code(), other.to_string()),
        })?;
        if inserted.created {
            tracing::debug!(task_id = %inserted.task.id, "task accepted");
        }
        Ok(Response::new(v1::SubmitTaskResponse { task: Some(self.view(&inserted.task)), created: inserted.created }))
    }

    async fn get_task(&self, request: Request<v1::GetTaskRequest>) -> Result<Response<v1::Task>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        let (_, task) = self.authorize_task(&request, id, Capability::Read).await?;
        Ok(Response::new(self.view(&task)))
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let req = request.get_ref();
        let status = match req.status {
            None => None,
            Some(value) => {
                let status = TaskStatus::from_wire(value)
                    .map_err(|_| invalid("status", format!("{value} is not a task status")))?;
                Some(status)
            }
        };
        let root_id = req.root_id.as_deref().map(|r| parse_uuid("root_id", r)).transpose()?;
        let limit = page::page_size(req.page_size).map_err(|e| invalid("page_size", e))?;
        let before = page::decode(&req.page_token).map_err(|e| invalid("page_token", e))?;
        // Listing every task needs `list` on `tasks/`; a list of one function's tasks needs it on that
        // function's path.
        let path = match &req.function {
            Some(function) => {
                legion_common::function::FunctionName::parse(function).map_err(|e| invalid("function", e))?;
                task_path(function)
            }
            None => "tasks/".to_owned(),
        };
        let caller = self.auth.authorize(&request, &path, Capability::List).await?;
        // `list` enumerates, `read` reveals (as Vault's): a task is shown only with `read` on its path.
        let acl = self.auth.acl(&caller.policies).await?;
        if req.function.is_some() && !acl.allows(&path, Capability::Read) {
            // Every task of the function would be left out: no need to scan them.
            return Ok(Response::new(v1::ListTasksResponse::default()));
        }
        let max_list_bytes = self.limits.borrow().max_list_bytes;
        let filter = TaskFilter {
            status,
            function: req.function.clone(),
            chain: req.chain.clone(),
            root_id,
            before,
            limit,
            max_bytes: Some(max_list_bytes),
        };
        let page = self.store.list_tasks(&filter).await.map_err(store_status)?;
        // The store measured JSON text; protobuf may spell the same values larger (a number is 9 bytes
        // or more), so the page is cut again by encoded size.
        let (tasks, next) = readable_page(
            &page.tasks,
            page.more,
            |t| acl.allows(&task_path(&t.function), Capability::Read),
            |t| self.view(t),
            Some(max_list_bytes),
        );
        let next_page_token = next.map(|t| page::encode(t.id)).unwrap_or_default();
        Ok(Response::new(v1::ListTasksResponse { tasks, next_page_token }))
    }

    async fn cancel_task(&self, request: Request<v1::CancelTaskRequest>) -> Result<Response<v1::Task>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        self.authorize_task(&request, id, Capability::Update).await?;
        let (task, changes) = self.store.cancel_task(id).await.map_err(store_status)?;
        self.events.publish(&changes);
        tracing::info!(task_id = %id, "task cancelled");
        Ok(Response::new(self.view(&task)))
    }

    type WatchTaskStream = WatchStream;

    async fn watch_task(&self, request: Request<v1::WatchTaskRequest>) -> Result<Response<WatchStream>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        self.authorize_task(&request, id, Capability::Read).await?;
        let receiver =
            watch::watch(self.store.clone(), &self.events, id, self.shutdown.clone()).await.map_err(watch_status)?;
        let defaults = RetryPolicy::from(&self.retry);
        let stream =
            ReceiverStream::new(receiver).map(move |item| item.map(|e| event(e, &defaults)).map_err(watch_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_task_attempts(
        &self,
        request: Request<v1::ListTaskAttemptsRequest>,
    ) -> Result<Response<v1::ListTaskAttemptsResponse>, Status> {
        let id = parse_uuid("task_id", &request.get_ref().task_id)?;
        self.authorize_task(&request, id, Capability::Read).await?;
        let attempts = self.store.list_attempts(id).await.map_err(store_status)?;
        Ok(Response::new(v1::ListTaskAttemptsResponse { attempts: attempts.iter().map(convert::attempt).collect() }))
    }
}

/// One page of a list as its caller is shown it (`ListTasks`, `ListChains`, `ListSchedules`): of the
/// items the store `scanned` for the page (in list order; `more`: items follow them), those `readable`
/// by the caller, converted by `message`, and cut to `max_bytes` of encoded size when given (at least
/// one message then, as [`page::fitting`]). Returns the messages and the item after which the next page
/// starts: the last one returned when the page was cut by size; otherwise the last one scanned when
/// more follow, so that items left out are not scanned again and a page of hidden items does not end
/// the list (such a page is empty but has a token); otherwise `None`. Paging thus never repeats or
/// skips an item, and always moves on.
pub fn readable_page<T, M: prost::Message>(
    scanned: &[T],
    more: bool,
    readable: impl Fn(&T) -> bool,
    message: impl Fn(&T) -> M,
    max_bytes: Option<usize>,
) -> (Vec<M>, Option<&T>) {
    let shown: Vec<(&T, M)> = scanned.iter().filter(|item| readable(item)).map(|item| (item, message(item))).collect();
    let fits = match max_bytes {
        Some(budget) => page::fitting(shown.iter().map(|(_, m)| m.encoded_len()), budget),
        None => shown.len(),
    };
    let next = if fits < shown.len() {
        fits.checked_sub(1).and_then(|i| shown.get(i)).map(|(item, _)| *item)
    } else if more {
        scanned.last()
    } else {
        None
    };
    (shown.into_iter().take(fits).map(|(_, m)| m).collect(), next)
}

/// The resource path of tasks of `function` (`a.b.c` → `tasks/a/b/c`), DESIGN.md section 6.
pub fn task_path(function: &str) -> String {
    format!("tasks/{}", function.replace('.', "/"))
}

/// The path on which `execute` runs `function` (`a.b.c` → `runners/a/b/c`), DESIGN.md section 6.
pub fn runner_path(function: &str) -> String {
    format!("runners/{}", function.replace('.', "/"))
}

fn event(event: WatchEvent, defaults: &RetryPolicy) -> v1::TaskEvent {
    v1::TaskEvent {
        task_id: event.task.id.to_string(),
        status: event.status.to_proto().into(),
        attempt: event.attempt,
        at: Some(legion_proto::timestamp(event.at)),
        task: Some(convert::task_with(&event.task, defaults)),
    }
}

fn watch_status(error: watch::Error) -> Status {
    match error {
        watch::Error::NotFound(id) => Status::not_found(format!("id: no task {id}")),
        watch::Error::Store(e) => store_status(e),
        watch::Error::ShuttingDown => Status::unavailable("the control plane is shutting down; watch again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lengths of the messages shown of `scanned` items `(key, readable, size)`, whose message is a
    /// string of `size` bytes, and the key after which the next page starts.
    fn shown(
        scanned: &[(&'static str, bool, usize)],
        more: bool,
        max_bytes: Option<usize>,
    ) -> (Vec<String>, Option<&'static str>) {
        let (messages, next) =
            readable_page(scanned, more, |(_, readable, _)| *readable, |(_, _, size)| "x".repeat(*size), max_bytes);
        (messages.into_iter().map(|m| m.len().to_string()).collect(), next.map(|(key, _, _)| *key))
    }

    #[test]
    fn hidden_items_are_left_out_and_the_token_follows_the_last_scanned() {
        let scanned = [("a", true, 1), ("b", false, 2), ("c", true, 3), ("d", false, 4)];
        assert_eq!(shown(&scanned, true, None), (vec!["1".into(), "3".into()], Some("d")));
        assert_eq!(shown(&scanned, false, None), (vec!["1".into(), "3".into()], None), "the last page");
        let hidden = [("a", false, 1), ("b", false, 1)];
        assert_eq!(shown(&hidden, true, None), (vec![], Some("b")), "an empty page that moves on");
        assert_eq!(shown(&hidden, false, None), (vec![], None));
        assert_eq!(shown(&[], false, None), (vec![], None));
    }

    #[test]
    fn a_page_cut_by_size_continues_after_the_last_returned() {
        // Encoded sizes are the string's length plus 2 bytes of framing.
        let scanned = [("a", true, 10), ("b", false, 500), ("c", true, 10), ("d", true, 10)];
        assert_eq!(shown(&scanned, false, Some(24)), (vec!["10".into(), "10".into()], Some("c")));
        assert_eq!(shown(&scanned, false, Some(5)), (vec!["10".into()], Some("a")), "at least one message");
        assert_eq!(shown(&scanned, true, Some(1000)), (vec!["10".into(), "10".into(), "10".into()], Some("d")));
    }
}
