//! The whole control plane (`run`) over TLS against real PostgreSQL and RabbitMQ: the task lifecycle
//! through the gRPC API, the executor protocol with mTLS principals, health, reflection, metrics, and
//! broker outages (simulated by cutting a TCP proxy, so the shared broker is never stopped).

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use legion_common::broker::TaskMessage;
use legion_proto::v1;
use support::eventually;

use support::stack::{NODE, Stack, core_manifest};
use tokio_stream::StreamExt;
use tonic::Code;

fn echo(n: usize) -> v1::SubmitTaskRequest {
    v1::SubmitTaskRequest {
        function: "core.util.echo".into(),
        args: Some(legion_proto::json_to_value(&serde_json::json!({"n": n}))),
        ..v1::SubmitTaskRequest::default()
    }
}

async fn status_of(stack: &Stack, id: &str) -> v1::TaskStatus {
    let task = stack.tasks().await.get_task(v1::GetTaskRequest { id: id.into() }).await.expect("get").into_inner();
    task.status()
}

/// Takes `want` messages from the extension's queue, waiting up to 20 s for them.
async fn drain_queue(channel: &lapin::Channel, want: usize) -> Vec<(TaskMessage, bool)> {
    // Declare the queue first (as the publisher does, with the same arguments): a basic.get on a queue
    // the publisher has not declared yet would close the channel.
    legion_common::broker::declare_topology(channel).await.expect("topology");
    legion_common::broker::declare_extension_queue(channel, "core", None).await.expect("declare");
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while messages.len() < want {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {want} messages arrived", messages.len());
        let message =
            channel.basic_get("legion.ext.core".into(), BasicGetOptions { no_ack: true }).await.expect("basic.get");
        match message {
            Some(m) => messages
                .push((serde_json::from_slice(&m.delivery.data).expect("a task message"), m.delivery.redelivered)),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_task_lifecycle_over_tls() {
    let stack = Stack::start(true, |_| {}).await;

    // Health and both reflection versions answer.
    let channel = stack.channel(None).await;
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest { service: "legion.v1.TaskService".into() })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    for_each_reflection_version(channel.clone()).await;

    // The executor service checks the certificate's principal.
    let refused = v1::executor_service_client::ExecutorServiceClient::new(stack.channel(None).await)
        .register_node(core_manifest(&["echo"]))
        .await
        .expect_err("no certificate");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = v1::executor_service_client::ExecutorServiceClient::new(stack.channel(Some("gateway")).await)
        .register_node(core_manifest(&["echo"]))
        .await
        .expect_err("gateway certificate");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut executor = stack.executor().await;
    let other =
        executor.register_node(v1::RegisterNodeRequest { name: "other".into(), ..core_manifest(&["echo"]) }).await;
    assert_eq!(other.expect_err("other name").code(), Code::PermissionDenied);
    executor.register_node(core_manifest(&["echo"])).await.expect("register");

    // Submits: validation, then concurrent submits coalesced by the writer.
    let mut tasks = stack.tasks().await;
    let unknown = tasks.submit_task(v1::SubmitTaskRequest { function: "x.y.z".into(), ..echo(0) }).await;
    let unknown = unknown.expect_err("unknown function");
    assert_eq!((unknown.code(), unknown.message()), (Code::InvalidArgument, "function: unknown function \"x.y.z\""));
    let mut submits = tokio::task::JoinSet::new();
    for n in 0..10 {
        let mut client = tasks.clone();
        submits.spawn(async move { client.submit_task(echo(n)).await.expect("submit").into_inner() });
    }
    let mut ids = Vec::new();
    while let Some(response) = submits.join_next().await {
        let response = response.expect("join");
        assert!(response.created);
        ids.push(response.task.expect("task").id);
    }
    let mut watch = tasks.watch_task(v1::WatchTaskRequest { id: ids[0].clone() }).await.expect("watch").into_inner();
    let first = watch.next().await.expect("first event").expect("event");
    assert!(matches!(first.status(), v1::TaskStatus::Pending | v1::TaskStatus::Queued));

    // The publisher queues every task; an executor starts and completes them in batches.
    let broker = stack.broker().await;
    let messages = drain_queue(&broker, ids.len()).await;
    let published: HashSet<String> = messages.iter().map(|(m, _)| m.task_id.to_string()).collect();
    assert_eq!(published, ids.iter().cloned().collect::<HashSet<_>>());
    for id in &ids {
        eventually("queued status", Duration::from_secs(5), || async {
            (status_of(&stack, id).await == v1::TaskStatus::Queued).then_some(())
        })
        .await;
    }
    let starts = executor
        .start_task(v1::StartTaskRequest {
            items: messages
                .iter()
                .map(|(m, redelivered)| v1::StartItem {
                    task_id: m.task_id.to_string(),
                    dispatch: m.dispatch,
                    redelivered: *redelivered,
                })
                .collect(),
        })
        .await
        .expect("start")
        .into_inner();
    assert!(starts.results.iter().all(|r| r.decision() == v1::StartDecision::Run && r.attempt == 1));
    let acks = executor
        .complete_task(v1::CompleteTaskRequest {
            items: messages
                .iter()
                .map(|(m, _)| v1::Completion {
                    task_id: m.task_id.to_string(),
                    attempt: 1,
                    outcome: Some(v1::completion::Outcome::ResultJson(serde_json::to_vec(&m.args).expect("json"))),
                    duration_ms: 1,
                })
                .collect(),
        })
        .await
        .expect("complete")
        .into_inner();
    assert!(acks.acks.iter().all(|a| a.accepted));

    // The watcher saw the task through to its terminal status, in order, and the stream ended.
    let mut seen = vec![first.status()];
    while let Some(event) = watch.next().await {
        seen.push(event.expect("event").status());
    }
    assert_eq!(seen.last(), Some(&v1::TaskStatus::Succeeded), "{seen:?}");
    assert!(seen.contains(&v1::TaskStatus::Running), "{seen:?}");

    // Paging: 10 tasks, 4 per page, newest first.
    let mut token = String::new();
    let mut listed = Vec::new();
    loop {
        let page = tasks
            .list_tasks(v1::ListTasksRequest { page_size: 4, page_token: token.clone(), ..Default::default() })
            .await
            .expect("list")
            .into_inner();
        listed.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, sorted);

    let attempts = tasks
        .list_task_attempts(v1::ListTaskAttemptsRequest { task_id: ids[0].clone() })
        .await
        .expect("attempts")
        .into_inner();
    assert_eq!(attempts.attempts.len(), 1);
    assert_eq!((attempts.attempts[0].node.as_str(), attempts.attempts[0].status.as_str()), (NODE, "succeeded"));
    let cancel = tasks.cancel_task(v1::CancelTaskRequest { id: ids[0].clone() }).await.expect_err("finished");
    assert_eq!(cancel.code(), Code::FailedPrecondition);

    let (code, metrics) = stack.admin("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("legion_tasks_submitted_total 10"), "{metrics}");
    assert!(metrics.contains("legion_task_completions_total{outcome=\"succeeded\"} 10"), "{metrics}");
    eventually("readiness", Duration::from_secs(5), || async { (stack.admin("/readyz").await.0 == 200).then_some(()) })
        .await;
    stack.stop().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submitted_while_the_broker_is_down_are_published_when_it_returns() {
    let mut stack = Stack::start(false, |_| {}).await;
    stack.executor().await.register_node(core_manifest(&["echo"])).await.expect("register");
    let mut tasks = stack.tasks().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            tasks.submit_task(echo(n)).await.expect("accepted while the broker is down").into_inner().task.unwrap().id,
        );
    }
    assert_eq!(stack.admin("/readyz").await.0, 503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(status_of(&stack, id).await, v1::TaskStatus::Pending);
    }

    stack.proxy.start().await;
    for id in &ids {
        eventually("queued after the broker returns", Duration::from_secs(20), || async {
            (status_of(&stack, id).await == v1::TaskStatus::Queued).then_some(())
        })
        .await;
    }
    eventually("ready", Duration::from_secs(5), || async { (stack.admin("/readyz").await.0 == 200).then_some(()) })
        .await;

    // The broker goes away while the control plane runs: submits are still accepted and wait.
    stack.proxy.stop().await;
    for n in 5..10 {
        ids.push(tasks.submit_task(echo(n)).await.expect("accepted").into_inner().task.unwrap().id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(&stack, &ids[9]).await, v1::TaskStatus::Pending);
    stack.proxy.start().await;
    for id in &ids {
        eventually("queued after the second outage", Duration::from_secs(20), || async {
            (status_of(&stack, id).await == v1::TaskStatus::Queued).then_some(())
        })
        .await;
    }
    let broker = stack.broker().await;
    let messages = drain_queue(&broker, ids.len()).await;
    let published: HashSet<String> = messages.iter().map(|(m, _)| m.task_id.to_string()).collect();
    assert_eq!(published, ids.iter().cloned().collect::<HashSet<_>>(), "every task reached the broker");
    stack.stop().await.expect("clean shutdown");
}

async fn for_each_reflection_version(channel: tonic::transport::Channel) {
    use tonic_reflection::pb::{v1 as r1, v1alpha as r1a};
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut v1_client = r1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut responses =
        v1_client.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection v1").into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = response.message_response
    else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "legion.v1.TaskService"), "{names:?}");
    assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");

    let request = r1a::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1a::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut alpha = r1a::server_reflection_client::ServerReflectionClient::new(channel);
    let mut responses =
        alpha.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection v1alpha").into_inner();
    assert!(responses.next().await.expect("a response").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_broker_mid_stream_loses_no_task() {
    let mut stack = Stack::start(true, |_| {}).await;
    stack.executor().await.register_node(core_manifest(&["echo"])).await.expect("register");
    let channel = stack.admin_channel().await;
    let mut submitters = tokio::task::JoinSet::new();
    for s in 0..8 {
        let mut client = v1::task_service_client::TaskServiceClient::new(channel.clone());
        submitters.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..50 {
                let task = client.submit_task(echo(s * 100 + n)).await.expect("accepted").into_inner().task;
                ids.push(task.expect("task").id);
            }
            ids
        });
    }
    // Cut the broker a few times while submits and publishes are in flight.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        stack.proxy.stop().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        stack.proxy.start().await;
    }
    let mut ids = Vec::new();
    while let Some(joined) = submitters.join_next().await {
        ids.extend(joined.expect("submitter"));
    }
    for id in &ids {
        eventually("every task queued", Duration::from_secs(30), || async {
            (status_of(&stack, id).await == v1::TaskStatus::Queued).then_some(())
        })
        .await;
    }
    // Every task reached the broker at least once (a publish cut before its confirm may repeat).
    let broker = stack.broker().await;
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < ids.len() {
        assert!(tokio::time::Instant::now() < deadline, "{} of {} tasks reached the broker", seen.len(), ids.len());
        match broker.basic_get("legion.ext.core".into(), BasicGetOptions { no_ack: true }).await.expect("get") {
            Some(m) => {
                let message: TaskMessage = serde_json::from_slice(&m.delivery.data).expect("task message");
                seen.insert(message.task_id.to_string());
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(seen, ids.iter().cloned().collect::<HashSet<_>>());
    stack.stop().await.expect("clean shutdown");
}
