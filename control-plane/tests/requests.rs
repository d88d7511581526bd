//! What callers may ask and what the control plane answers, against real PostgreSQL and RabbitMQ:
//! JSON nesting limits on args and results, task lists cut by size, idempotency keys reused with other
//! parameters, and region-aware routing. Regression tests for an operator's reports: a 40-level result
//! made every task list undecodable, and 40 tasks with 1 MiB args made `ListTasks` fail with "encoded
//! message length too large".

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use legion_common::broker::TaskMessage;
use legion_common::settings::Limits;
use legion_control_plane::delivery::complete::{CompleteItem, FailureKind, Outcome, ResultLimits, Verdict};
use legion_control_plane::delivery::start::StartItem;
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::{DeliveryStore, NewTask, OutboxRow, OutboxStore, TaskFilter, TaskStore};
use legion_control_plane::tasks::submit::new_task;
use legion_control_plane::tasks::validate::validate_submit;
use legion_proto::v1;
use legion_proto::v1::task_service_client::TaskServiceClient;
use prost::Message;
use serde_json::json;
use support::stack::{AuthChannel, NODE, Stack, core_manifest};
use support::{TestDb, register_core};
use tonic::Code;

fn echo(args: serde_json::Value) -> v1::SubmitTaskRequest {
    v1::SubmitTaskRequest {
        function: "core.util.echo".into(),
        args: Some(legion_proto::json_to_value(&args)),
        ..v1::SubmitTaskRequest::default()
    }
}

/// `{"a":{"a":…{"a":1}…}}`, `levels` deep.
fn nested(levels: usize) -> serde_json::Value {
    (1..levels).fold(json!({"a": 1}), |inner, _| json!({"a": inner}))
}

/// A task client that accepts pages as large as the control plane sends.
async fn tasks(stack: &Stack) -> TaskServiceClient<AuthChannel> {
    stack.tasks().await.max_decoding_message_size(legion_control_plane::server::MAX_MESSAGE_BYTES)
}

/// Every task, page by page; returns the pages' task ids.
async fn all_pages(client: &mut TaskServiceClient<AuthChannel>, budget: usize) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(v1::ListTasksRequest { page_token: token.clone(), ..Default::default() })
            .await
            .expect("list")
            .into_inner();
        let encoded: usize = page.tasks.iter().map(Message::encoded_len).sum();
        assert!(
            page.tasks.len() == 1 || encoded <= budget,
            "a page of {} tasks holds {encoded} bytes",
            page.tasks.len()
        );
        pages.push(page.tasks.into_iter().map(|t| t.id).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_args_are_refused_and_a_deep_result_fails_its_attempt() {
    let stack = Stack::start(false, |_| {}).await;
    let mut executor = stack.executor().await;
    executor.register_node(core_manifest(&["echo", "noop"])).await.expect("register");
    let mut client = tasks(&stack).await;

    let refused = client.submit_task(echo(nested(33))).await.expect_err("too deep");
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::InvalidArgument, "args: nested 33 levels deep, more than limits.max_json_depth (32)")
    );

    // http.request.get fetched a 40-level JSON document: the attempt fails, nothing is stored.
    let task = client.submit_task(echo(json!({}))).await.expect("submit").into_inner().task.expect("task");
    let start = executor
        .start_task(v1::StartTaskRequest {
            items: vec![v1::StartItem { task_id: task.id.clone(), dispatch: 1, redelivered: false }],
        })
        .await
        .expect("start")
        .into_inner();
    assert_eq!(start.results[0].decision(), v1::StartDecision::Run);
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    let acks = executor
        .complete_task(v1::CompleteTaskRequest {
            items: vec![v1::Completion {
                task_id: task.id.clone(),
                attempt: 1,
                outcome: Some(v1::completion::Outcome::ResultJson(deep.into_bytes())),
                duration_ms: 3,
            }],
        })
        .await
        .expect("complete")
        .into_inner();
    assert!(acks.acks[0].accepted);

    // Every caller can still read the task and list tasks.
    let failed = client.get_task(v1::GetTaskRequest { id: task.id.clone() }).await.expect("get").into_inner();
    assert_eq!(failed.status(), v1::TaskStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("result: nested 40 levels deep, more than limits.max_json_depth (32)"));
    assert_eq!(failed.result, None);
    let listed = client.list_tasks(v1::ListTasksRequest::default()).await.expect("list").into_inner();
    assert_eq!(listed.tasks.len(), 1);
    stack.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_tasks_of_one_mib_are_listed_in_pages_that_fit() {
    let stack = Stack::start(false, |_| {}).await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop"])).await.expect("register");
    let mut client = tasks(&stack).await;
    let blob = "x".repeat(1_000_000);
    let mut ids = Vec::new();
    for n in 0..40 {
        let task = client.submit_task(echo(json!({"n": n, "blob": blob}))).await.expect("submit").into_inner();
        ids.push(task.task.expect("task").id);
    }
    let budget = Limits::default().max_list_bytes;
    let pages = all_pages(&mut client, budget).await;
    assert!(pages.len() >= 3, "16 MiB pages of 1 MB tasks: {:?}", pages.iter().map(Vec::len).collect::<Vec<_>>());
    assert!(pages.iter().all(|p| !p.is_empty() && p.len() <= 16));
    let listed: Vec<String> = pages.into_iter().flatten().collect();
    ids.reverse();
    assert_eq!(listed, ids, "every task once, newest first");
    stack.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_cut_by_encoded_size_and_hold_at_least_one_task() {
    let budget = 64 * 1024;
    let stack = Stack::start(false, |s| s.limits.max_list_bytes = budget).await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop"])).await.expect("register");
    let mut client = tasks(&stack).await;
    // 10 KB of JSON each, but about 55 KB as protobuf (every number is a 9-byte double plus framing).
    let numbers = json!({"a": vec![0; 5000]});
    let mut ids = HashSet::new();
    for _ in 0..4 {
        ids.insert(client.submit_task(echo(numbers.clone())).await.expect("submit").into_inner().task.unwrap().id);
    }
    // One task larger than the whole budget still gets its page.
    ids.insert(
        client.submit_task(echo(json!({"a": vec![0; 20_000]}))).await.expect("submit").into_inner().task.unwrap().id,
    );
    let pages = all_pages(&mut client, budget).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![1; 5]);
    assert_eq!(pages.into_iter().flatten().collect::<HashSet<_>>(), ids);
    stack.stop().await.expect("clean shutdown");
}

fn task(edit: impl FnOnce(&mut v1::SubmitTaskRequest)) -> NewTask {
    let mut req = echo(json!({}));
    edit(&mut req);
    new_task(validate_submit(&req, &Limits::default()).expect("valid submit"))
}

async fn publish_all(store: &PgStore) -> Vec<OutboxRow> {
    let claim = store.claim_outbox(1000).await.expect("claim");
    let rows = claim.rows().to_vec();
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    claim.finish(&ids, &[]).await.expect("finish");
    rows
}

#[tokio::test]
async fn the_store_sends_only_the_tasks_that_fit_in_the_page() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo"]).await;
    // Args of 10 000 bytes of JSON text each (jsonb adds a space after the colon).
    let args = |n: usize| json!({"pad": "p".repeat(10_000 - 12), "n": n});
    let mut ids = Vec::new();
    for n in 0..5 {
        let created = store.insert_tasks(&[task(|r| r.args = Some(legion_proto::json_to_value(&args(n))))]).await;
        ids.push(created.expect("insert")[0].task.id);
    }
    let filter = TaskFilter { limit: 100, max_bytes: Some(25_000), ..TaskFilter::default() };
    let page = store.list_tasks(&filter).await.expect("list");
    assert_eq!(page.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
    assert!(page.more);
    let rest = store.list_tasks(&TaskFilter { before: Some(ids[3]), ..filter.clone() }).await.expect("list");
    assert_eq!((rest.tasks.len(), rest.more), (2, true));
    let tiny = TaskFilter { max_bytes: Some(10), ..filter };
    let page = store.list_tasks(&tiny).await.expect("list");
    assert_eq!((page.tasks.len(), page.more), (1, true), "a page holds at least one task");
}

#[tokio::test]
async fn retries_and_delayed_tasks_keep_their_region() {
    let db = TestDb::create().await;
    let store = db.store().await;
    register_core(&store, NODE, &["echo"]).await;
    let regional = |r: &mut v1::SubmitTaskRequest| {
        r.region = Some("eu-west".into());
        r.max_attempts = Some(2);
        // No backoff: the retry is dispatched by the completion itself.
        r.retry = Some(v1::RetryPolicy { initial_backoff_ms: Some(0), ..Default::default() });
    };
    let created = store.insert_tasks(&[task(regional), task(|_| {})]).await.expect("insert");
    let (id, plain) = (created[0].task.id, created[1].task.id);
    assert_eq!(created[0].task.region.as_deref(), Some("eu-west"));
    let rows = publish_all(&store).await;
    let keys: Vec<(uuid::Uuid, &str)> = rows.iter().map(|r| (r.task_id, r.routing_key.as_str())).collect();
    assert_eq!(keys, vec![(id, "core.util.echo.eu-west"), (plain, "core.util.echo")]);

    let item = StartItem { task_id: id.to_string(), dispatch: 1, redelivered: false };
    store.start(NODE, &[item], 5).await.expect("start");
    let failure = Outcome::Failure { kind: FailureKind::Error, message: "try again".into() };
    let done = CompleteItem { task_id: id.to_string(), attempt: 1, outcome: failure, duration_ms: 1 };
    let limits = ResultLimits { max_bytes: 1024, max_depth: 32 };
    assert_eq!(store.complete(&[done], limits).await.expect("complete").0, vec![Verdict::Retried]);
    let retry = publish_all(&store).await;
    assert_eq!((retry[0].task_id, retry[0].routing_key.as_str()), (id, "core.util.echo.eu-west"));

    let delayed = store
        .insert_tasks(&[task(|r| {
            r.region = Some("us-east".into());
            r.delay_ms = 20;
        })])
        .await
        .expect("insert")[0]
        .task
        .id;
    support::eventually("the delayed task to be promoted", Duration::from_secs(5), || async {
        (!store.promote_due(10).await.expect("promote").is_empty()).then_some(())
    })
    .await;
    let promoted = publish_all(&store).await;
    assert_eq!((promoted[0].task_id, promoted[0].routing_key.as_str()), (delayed, "core.util.echo.us-east"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_task_lands_in_its_regions_queue() {
    let stack = Stack::start(true, |_| {}).await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop"])).await.expect("register");
    let mut client = tasks(&stack).await;
    // Declare both queues first (as the publisher will, with the same arguments): a basic.get on a
    // queue that does not exist yet would close the test's channel.
    let broker = stack.broker().await;
    legion_common::broker::declare_topology(&broker).await.expect("topology");
    for region in [None, Some("eu-west")] {
        legion_common::broker::declare_extension_queue(&broker, "core", region).await.expect("declare");
    }

    let bad = client
        .submit_task(v1::SubmitTaskRequest { region: Some("EU.west".into()), ..echo(json!({})) })
        .await
        .expect_err("bad region");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("region: "), "{}", bad.message());

    let regional = client
        .submit_task(v1::SubmitTaskRequest { region: Some("eu-west".into()), ..echo(json!({"r": 1})) })
        .await
        .expect("submit")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(regional.region.as_deref(), Some("eu-west"));
    let plain = client.submit_task(echo(json!({"r": 0}))).await.expect("submit").into_inner().task.expect("task");
    let got = client.get_task(v1::GetTaskRequest { id: regional.id.clone() }).await.expect("get").into_inner();
    assert_eq!(got.region.as_deref(), Some("eu-west"));

    let take = |queue: &'static str| {
        let broker = broker.clone();
        async move {
            support::eventually(queue, Duration::from_secs(20), || async {
                let got = broker.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.ok()??;
                Some(serde_json::from_slice::<TaskMessage>(&got.delivery.data).expect("a task message"))
            })
            .await
        }
    };
    assert_eq!(take("legion.ext.core.eu-west").await.task_id.to_string(), regional.id);
    assert_eq!(take("legion.ext.core").await.task_id.to_string(), plain.id);
    for queue in ["legion.ext.core", "legion.ext.core.eu-west"] {
        let left = broker.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("get");
        assert!(left.is_none(), "{queue} holds another message");
    }
    stack.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_must_carry_the_same_parameters() {
    let stack = Stack::start(false, |_| {}).await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop"])).await.expect("register");
    let mut client = tasks(&stack).await;
    let keyed = |args: serde_json::Value| v1::SubmitTaskRequest {
        idempotency_key: Some("nightly-report".into()),
        priority: 3,
        region: Some("eu-west".into()),
        ..echo(args)
    };
    let first = client.submit_task(keyed(json!({"day": 1, "tags": ["a"]}))).await.expect("submit").into_inner();
    assert!(first.created);
    let id = first.task.expect("task").id;
    let again = client.submit_task(keyed(json!({"tags": ["a"], "day": 1}))).await.expect("same").into_inner();
    assert_eq!((again.created, again.task.expect("task").id), (false, id.clone()));

    let expected = format!("idempotency_key: already used by task {id} with other parameters");
    let others = [
        keyed(json!({"day": 2, "tags": ["a"]})),
        v1::SubmitTaskRequest { priority: 4, ..keyed(json!({"day": 1, "tags": ["a"]})) },
        v1::SubmitTaskRequest { max_attempts: Some(3), ..keyed(json!({"day": 1, "tags": ["a"]})) },
        v1::SubmitTaskRequest { timeout_ms: Some(5), ..keyed(json!({"day": 1, "tags": ["a"]})) },
        v1::SubmitTaskRequest { region: None, ..keyed(json!({"day": 1, "tags": ["a"]})) },
        v1::SubmitTaskRequest { function: "core.util.noop".into(), ..keyed(json!({"day": 1, "tags": ["a"]})) },
    ];
    for other in others {
        let err = client.submit_task(other.clone()).await.expect_err("other parameters");
        assert_eq!((err.code(), err.message()), (Code::AlreadyExists, expected.as_str()), "{other:?}");
    }
    stack.stop().await.expect("clean shutdown");
}
