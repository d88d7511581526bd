//! Dead letters through the whole control plane (`run_with`) against real PostgreSQL and RabbitMQ:
//! tasks end `dead_lettered` through the executor protocol (a redelivery past
//! `transport.delivery_limit`) or because the broker returns their message twice; `ListDeadLetters`
//! pages, filters and hides what the caller may not read; `ReplayDeadLetter` runs a task again with a
//! new dispatch, is authorized, audited, refused twice, and fires a chain run's relationships once.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use legion_common::broker::TaskMessage;
use legion_proto::json_to_value;
use legion_proto::v1;
use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::v1::dead_letter_service_client::DeadLetterServiceClient;
use serde_json::json;
use support::eventually;
use support::policies::{limited, rule};
use support::stack::{AuthChannel, Stack, core_manifest};
use support::tasks::start_one;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);

async fn submit(stack: &Stack, function: &str, chain: Option<&str>) -> String {
    let request = v1::SubmitTaskRequest {
        function: function.into(),
        args: Some(json_to_value(&json!({"n": 1}))),
        chain: chain.map(str::to_owned),
        ..v1::SubmitTaskRequest::default()
    };
    stack.tasks().await.submit_task(request).await.expect("submit").into_inner().task.unwrap().id
}

async fn get(stack: &Stack, id: &str) -> v1::Task {
    stack.tasks().await.get_task(v1::GetTaskRequest { id: id.into() }).await.expect("get").into_inner()
}

async fn queued(stack: &Stack, id: &str) {
    eventually("the task queued", WAIT, || async {
        (get(stack, id).await.status() == v1::TaskStatus::Queued).then_some(())
    })
    .await;
}

async fn start(stack: &Stack, id: &str, dispatch: u32, redelivered: bool) -> v1::StartResult {
    start_one(&mut stack.executor().await, id, dispatch, redelivered).await
}

/// Dead-letters a fresh task the way a message that keeps killing its executor does: delivered, then
/// redelivered past `transport.delivery_limit` (1 in these tests).
async fn dead_letter(stack: &Stack, id: &str) {
    assert_eq!(start(stack, id, 1, false).await.decision(), v1::StartDecision::Run);
    let again = start(stack, id, 1, true).await;
    assert_eq!(again.decision(), v1::StartDecision::Drop, "{again:?}");
    assert!(again.reason.contains("transport.delivery_limit (1)"), "{again:?}");
}

async fn complete(stack: &Stack, id: &str, attempt: u32) -> bool {
    let completion = v1::Completion {
        task_id: id.into(),
        attempt,
        outcome: Some(v1::completion::Outcome::ResultJson(br#"{"n":1}"#.to_vec())),
        duration_ms: 1,
    };
    let acks = stack.executor().await.complete_task(v1::CompleteTaskRequest { items: vec![completion] }).await;
    acks.expect("complete").into_inner().acks[0].accepted
}

/// Every dead letter `client` is shown, following the tokens: ids and pages.
async fn walk(
    client: &mut DeadLetterServiceClient<AuthChannel>,
    function: Option<&str>,
    page_size: u32,
) -> (Vec<String>, usize) {
    let (mut ids, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let request =
            v1::ListDeadLettersRequest { function: function.map(str::to_owned), page_size, page_token: token.clone() };
        let page = client.list_dead_letters(request).await.expect("list").into_inner();
        pages += 1;
        assert!(page.tasks.iter().all(|t| t.status() == v1::TaskStatus::DeadLettered));
        ids.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            return (ids, pages);
        }
        assert!(pages < 50, "paging does not end");
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_with_a_new_dispatch() {
    // The broker is cut at first, so that the replay's outbox row can be seen before it is published.
    let mut stack = Stack::start(false, |s| s.transport.delivery_limit = 1).await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop"])).await.expect("register");
    let mut echoes = Vec::new();
    for _ in 0..5 {
        let id = submit(&stack, "core.util.echo", None).await;
        dead_letter(&stack, &id).await;
        echoes.push(id);
    }
    let noop = submit(&stack, "core.util.noop", None).await;
    dead_letter(&stack, &noop).await;
    let alive = submit(&stack, "core.util.echo", None).await;

    // Newest first, paged, only dead letters; the function filter; the reason is the task's error.
    let mut admin = DeadLetterServiceClient::new(stack.admin_channel().await);
    let (all, pages) = walk(&mut admin, None, 2).await;
    let mut expected: Vec<String> = echoes.iter().chain([&noop]).cloned().collect();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!((all, pages), (expected, 3));
    let (only_echo, _) = walk(&mut admin, Some("core.util.echo"), 100).await;
    assert_eq!(only_echo.len(), 5);
    assert!(!only_echo.contains(&alive) && !only_echo.contains(&noop));
    let task = get(&stack, &echoes[0]).await;
    assert!(task.error().contains("transport.delivery_limit (1)"), "{task:?}");
    let bad = admin.list_dead_letters(v1::ListDeadLettersRequest { page_size: 1001, ..Default::default() }).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    let bad = admin
        .list_dead_letters(v1::ListDeadLettersRequest { page_token: "nope".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert!(bad.message().starts_with("page_token: "), "{bad:?}");

    // A caller that may list all tasks but read only echo tasks sees only those; without `list`, nothing.
    let reader = limited(
        &stack,
        "echo-reader",
        vec![rule("tasks/", &["list"]), rule("tasks/*", &["list"]), rule("tasks/core/util/echo", &["read"])],
    )
    .await;
    let mut reader = DeadLetterServiceClient::new(reader);
    let (shown, _) = walk(&mut reader, None, 1).await;
    assert_eq!(shown.iter().cloned().collect::<HashSet<_>>(), echoes.iter().cloned().collect::<HashSet<_>>());
    let hidden = reader
        .list_dead_letters(v1::ListDeadLettersRequest { function: Some("core.util.noop".into()), ..Default::default() })
        .await
        .expect("a list of a function the caller may not read is empty");
    assert!(hidden.into_inner().tasks.is_empty());
    let stranger = limited(&stack, "stranger", vec![rule("tasks/core/util/echo", &["read"])]).await;
    let denied = DeadLetterServiceClient::new(stranger).list_dead_letters(v1::ListDeadLettersRequest::default()).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);

    // A replay needs both `update` on the task and `execute` on the runner.
    let target = echoes[0].clone();
    let replay = |id: &str| v1::ReplayDeadLetterRequest { task_id: id.into() };
    for (name, rules) in [
        ("no-execute", vec![rule("tasks/core/util/echo", &["update"])]),
        ("no-update", vec![rule("runners/core/util/echo", &["execute"])]),
    ] {
        let channel = limited(&stack, name, rules).await;
        let denied = DeadLetterServiceClient::new(channel).replay_dead_letter(replay(&target)).await;
        assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied, "{name}");
    }
    assert_eq!(get(&stack, &target).await.status(), v1::TaskStatus::DeadLettered, "denied replays change nothing");
    let operator = limited(
        &stack,
        "replayer",
        vec![rule("tasks/core/util/echo", &["update"]), rule("runners/core/util/echo", &["execute"])],
    )
    .await;
    let mut operator = DeadLetterServiceClient::new(operator);
    let replayed = operator.replay_dead_letter(replay(&target)).await.expect("replay").into_inner().task.unwrap();
    assert_eq!(replayed.status(), v1::TaskStatus::Pending);
    assert_eq!((replayed.id.as_str(), replayed.attempt, replayed.replays), (target.as_str(), 1, 1));
    assert!(replayed.finished_at.is_none());

    // One outbox row, for dispatch 2, with the task's routing key; counts reset; the audit record.
    let pool = stack.pool().await;
    let uuid = uuid::Uuid::parse_str(&target).unwrap();
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT routing_key, payload FROM outbox WHERE task_id = $1 ORDER BY id")
            .bind(uuid)
            .fetch_all(&pool)
            .await
            .unwrap();
    // The first dispatch's row is there too: the broker has been cut since the submit.
    let messages: Vec<(String, u32, uuid::Uuid)> = rows
        .iter()
        .map(|(key, payload)| {
            let message: TaskMessage = serde_json::from_slice(payload).unwrap();
            (key.clone(), message.dispatch, message.task_id)
        })
        .collect();
    assert_eq!(messages, vec![("core.util.echo".into(), 1, uuid), ("core.util.echo".into(), 2, uuid)]);
    let counts: (i32, i32, i32, i32) =
        sqlx::query_as("SELECT dispatch, failures, redeliveries, replays FROM tasks WHERE id = $1")
            .bind(uuid)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counts, (2, 0, 0, 1));
    let audited: Vec<(String, String, String)> = eventually("the audit record", WAIT, || async {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT principal, resource, detail FROM audit_log WHERE action = 'task.replay' ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(audited[0].0.starts_with("api-key/") && audited[0].1 == "tasks/core/util/echo", "{audited:?}");
    assert!(audited[0].2.contains(&target), "{audited:?}");

    // A second replay, an unknown id, a malformed id.
    let twice = operator.replay_dead_letter(replay(&target)).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition, "{twice:?}");
    let unknown = admin.replay_dead_letter(replay(&uuid::Uuid::now_v7().to_string())).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = admin.replay_dead_letter(replay("42")).await.unwrap_err();
    assert_eq!((malformed.code(), malformed.message()), (Code::InvalidArgument, "task_id: \"42\" is not a UUID"));
    let (left, _) = walk(&mut admin, None, 100).await;
    assert!(!left.contains(&target) && left.len() == 5);

    // A disabled extension's dead letters cannot be replayed.
    let mut catalog = stack.catalog().await;
    catalog.disable_extension(v1::SetExtensionDisabledRequest { name: "core".into() }).await.expect("disable");
    let disabled = admin.replay_dead_letter(replay(&echoes[1])).await.unwrap_err();
    assert_eq!(disabled.code(), Code::FailedPrecondition, "{disabled:?}");
    assert!(disabled.message().contains("disabled"), "{disabled:?}");
    catalog.enable_extension(v1::SetExtensionDisabledRequest { name: "core".into() }).await.expect("enable");

    // Once the broker is back the new dispatch is published; it runs as attempt 2 (after the lost
    // attempt 1) and succeeds.
    stack.proxy.start().await;
    eventually("the replayed task queued", WAIT, || async {
        (get(&stack, &target).await.status() == v1::TaskStatus::Queued).then_some(())
    })
    .await;
    let broker = stack.broker().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut dispatches = HashSet::new();
    while !dispatches.contains(&2) {
        assert!(tokio::time::Instant::now() < deadline, "dispatch 2 never reached the queue: {dispatches:?}");
        match broker.basic_get("legion.ext.core".into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            Some(m) => {
                let message: TaskMessage = serde_json::from_slice(&m.delivery.data).unwrap();
                if message.task_id == uuid {
                    dispatches.insert(message.dispatch);
                }
            }
            None => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    assert!(start(&stack, &target, 1, true).await.decision() == v1::StartDecision::Drop, "the old dispatch is stale");
    let run = start(&stack, &target, 2, false).await;
    assert_eq!((run.decision(), run.attempt), (v1::StartDecision::Run, 2));
    assert!(complete(&stack, &target, 2).await);
    let done = get(&stack, &target).await;
    assert_eq!((done.status(), done.error.as_deref(), done.replays), (v1::TaskStatus::Succeeded, None, 1));
    stack.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_chain_task_fires_its_relationships_once() {
    let stack = Stack::start(true, |s| s.transport.delivery_limit = 1).await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop"])).await.expect("register");
    let relationship =
        v1::Relationship { trigger: "core.util.echo".into(), action: "core.util.noop".into(), ..Default::default() };
    let chain = v1::Chain { name: "after-echo".into(), relationships: vec![relationship], ..Default::default() };
    let mut chains = ChainServiceClient::new(stack.admin_channel().await);
    chains.apply_chain(v1::ApplyChainRequest { chain: Some(chain) }).await.expect("apply");
    let root = submit(&stack, "core.util.echo", Some("after-echo")).await;
    dead_letter(&stack, &root).await;
    let run_tasks = || async {
        let request = v1::ListTasksRequest { root_id: Some(root.clone()), ..Default::default() };
        stack.tasks().await.list_tasks(request).await.expect("list").into_inner().tasks
    };
    assert_eq!(run_tasks().await.len(), 1, "a dead letter fires nothing");

    let mut dead_letters = DeadLetterServiceClient::new(stack.admin_channel().await);
    let replayed = dead_letters.replay_dead_letter(v1::ReplayDeadLetterRequest { task_id: root.clone() }).await;
    assert_eq!(replayed.expect("replay").into_inner().task.unwrap().chain.as_deref(), Some("after-echo"));
    let run = start(&stack, &root, 2, false).await;
    assert_eq!((run.decision(), run.attempt), (v1::StartDecision::Run, 2));
    assert!(complete(&stack, &root, 2).await);
    // A repeated completion (an executor retrying its report) fires nothing more.
    complete(&stack, &root, 2).await;
    let tasks = run_tasks().await;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let child = tasks.iter().find(|t| t.id != root).unwrap();
    assert_eq!((child.function.as_str(), child.parent_id.as_deref()), ("core.util.noop", Some(root.as_str())));
    stack.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_are_declared_again_then_dead_lettered() {
    let mut stack = Stack::start(true, |_| {}).await;
    stack.executor().await.register_node(core_manifest(&["echo"])).await.expect("register");
    let first = submit(&stack, "core.util.echo", None).await;
    queued(&stack, &first).await;

    // The queue is deleted behind the publisher's back: the next message comes back once, the publisher
    // declares the queue again, and the message is published to it.
    let broker = stack.broker().await;
    broker.queue_delete("legion.ext.core".into(), QueueDeleteOptions::default()).await.expect("delete the queue");
    let second = submit(&stack, "core.util.echo", None).await;
    queued(&stack, &second).await;
    let message = eventually("the second message on the declared queue", WAIT, || async {
        let got = broker.basic_get("legion.ext.core".into(), BasicGetOptions { no_ack: true }).await.unwrap();
        got.map(|m| serde_json::from_slice::<TaskMessage>(&m.delivery.data).unwrap())
    })
    .await;
    assert_eq!(message.task_id.to_string(), second);
    let (_, metrics) = stack.admin("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("legion_outbox_publish_failures_total") && !l.ends_with(" 0")),
        "the return was counted: {metrics}"
    );

    // A message that no declaration can route (its key matches no binding) comes back twice and ends
    // its task dead_lettered, with its outbox row gone.
    stack.proxy.stop().await;
    let third = submit(&stack, "core.util.echo", None).await;
    let pool = stack.pool().await;
    let uuid = uuid::Uuid::parse_str(&third).unwrap();
    let changed =
        sqlx::query("UPDATE outbox SET routing_key = 'core.util' WHERE task_id = $1").bind(uuid).execute(&pool);
    assert_eq!(changed.await.unwrap().rows_affected(), 1);
    stack.proxy.start().await;
    let dead = eventually("the unroutable task dead-lettered", WAIT, || async {
        let task = get(&stack, &third).await;
        (task.status() == v1::TaskStatus::DeadLettered).then_some(task)
    })
    .await;
    assert_eq!(dead.error(), "unroutable: no queue bound to routing key core.util on exchange legion.tasks");
    assert!(dead.finished_at.is_some());
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE task_id = $1").bind(uuid).fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0);
    let mut dead_letters = DeadLetterServiceClient::new(stack.admin_channel().await);
    let listed = dead_letters.list_dead_letters(v1::ListDeadLettersRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), vec![third.clone()]);
    // Replayed, it gets a fresh outbox row with the task's own routing key, and is queued.
    dead_letters.replay_dead_letter(v1::ReplayDeadLetterRequest { task_id: third.clone() }).await.expect("replay");
    queued(&stack, &third).await;
    stack.stop().await.expect("clean shutdown");
}
