//! Throughput of the control plane's batched paths (submit group commit, outbox publisher, batched
//! starts and completions), end to end over gRPC/TLS with real PostgreSQL and RabbitMQ.
//!
//! Ignored by default (it loads the machine); run with
//! `cargo test -p legion-control-plane --test throughput -- --ignored --nocapture`. The release-build
//! benchmark of the whole system lives in `bench/`.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use legion_common::broker::TaskMessage;
use legion_proto::v1;
use support::stack::{NODE, Stack};

const TASKS: usize = 5_000;
const SUBMITTERS: usize = 64;
const REPORT_BATCH: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test; run explicitly"]
async fn batched_paths_sustain_thousands_of_tasks_per_second() {
    let stack = Stack::start(true, |_| {}).await;
    let mut executor = stack.executor().await;
    executor
        .register_node(v1::RegisterNodeRequest {
            name: NODE.into(),
            region: "default".into(),
            version: "0".into(),
            concurrency: 64,
            extensions: vec![v1::ExtensionManifest {
                name: "core".into(),
                version: "0".into(),
                runners: vec![v1::Runner {
                    name: "util".into(),
                    functions: vec![v1::Function { name: "noop".into(), description: String::new() }],
                }],
            }],
        })
        .await
        .expect("register");

    let broker = stack.broker().await;
    // The queue exists once the publisher declared it; declare it here too so the consumer can start.
    legion_common::broker::declare_topology(&broker).await.expect("topology");
    legion_common::broker::declare_extension_queue(&broker, "core", None).await.expect("queue");
    broker.basic_qos(2_000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = broker
        .basic_consume(
            "legion.ext.core".into(),
            "throughput".into(),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume");

    let started = Instant::now();
    let channel = stack.admin_channel().await;
    let mut submitters = tokio::task::JoinSet::new();
    for s in 0..SUBMITTERS {
        let mut client = v1::task_service_client::TaskServiceClient::new(channel.clone());
        submitters.spawn(async move {
            for _ in (s..TASKS).step_by(SUBMITTERS) {
                client
                    .submit_task(v1::SubmitTaskRequest { function: "core.util.noop".into(), ..Default::default() })
                    .await
                    .expect("submit");
            }
        });
    }
    while let Some(joined) = submitters.join_next().await {
        joined.expect("submitter");
    }
    let submit_secs = started.elapsed().as_secs_f64();

    // Executor side: start and complete in batches as messages arrive.
    let mut done = 0;
    while done < TASKS {
        let mut batch = Vec::with_capacity(REPORT_BATCH);
        let first = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("messages keep arriving")
            .expect("consumer open")
            .expect("delivery");
        batch.push(first);
        while batch.len() < REPORT_BATCH {
            match tokio::time::timeout(Duration::from_millis(2), consumer.next()).await {
                Ok(Some(Ok(delivery))) => batch.push(delivery),
                _ => break,
            }
        }
        let messages: Vec<TaskMessage> =
            batch.iter().map(|d| serde_json::from_slice(&d.data).expect("task message")).collect();
        let starts = executor
            .start_task(v1::StartTaskRequest {
                items: messages
                    .iter()
                    .map(|m| v1::StartItem { task_id: m.task_id.to_string(), dispatch: m.dispatch, redelivered: false })
                    .collect(),
            })
            .await
            .expect("start")
            .into_inner();
        let completions = starts
            .results
            .iter()
            .filter(|r| r.decision() == v1::StartDecision::Run)
            .map(|r| v1::Completion {
                task_id: r.task_id.clone(),
                attempt: r.attempt,
                outcome: Some(v1::completion::Outcome::ResultJson(b"null".to_vec())),
                duration_ms: 0,
            })
            .collect::<Vec<_>>();
        let acks = executor.complete_task(v1::CompleteTaskRequest { items: completions }).await.expect("complete");
        done += acks.into_inner().acks.iter().filter(|a| a.accepted).count();
    }
    let total_secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let tasks = TASKS as f64;
    println!(
        "{TASKS} tasks: submitted in {submit_secs:.2} s ({:.0}/s); submitted, published, started and completed in {total_secs:.2} s ({:.0}/s)",
        tasks / submit_secs,
        tasks / total_secs
    );
    let (_, metrics) = stack.admin("/metrics").await;
    for line in
        metrics.lines().filter(|l| l.starts_with("legion_batch_size_sum") || l.starts_with("legion_batch_size_count"))
    {
        println!("{line}");
    }
    let (succeeded,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks WHERE status = 'succeeded'")
        .fetch_one(&sqlx::PgPool::connect(&stack.db.url).await.expect("pool"))
        .await
        .expect("count");
    assert_eq!(succeeded, TASKS as i64);
    stack.stop().await.expect("clean shutdown");
}
