//! Idempotent submits (docs/architecture.md, "Delivery protocol" step 1): the same caller's
//! `idempotency_key` with the same parameters returns the first task, also when 20 submits race;
//! with other args it is refused, `ALREADY_EXISTS` over gRPC and 409 over REST. Each key's one task
//! runs once.

use legion_proto::v1::{SubmitTaskRequest, SubmitTaskResponse};
use legion_tests::{TestEnv, grpc};
use serde_json::json;

use super::{assert_exactly_once, request, wait_all_ended};
use crate::LONG;

fn keyed(key: &str, args: serde_json::Value) -> SubmitTaskRequest {
    SubmitTaskRequest { idempotency_key: Some(key.to_owned()), ..request("core.util.echo", args) }
}

async fn submit(env: &TestEnv, request: SubmitTaskRequest) -> Result<SubmitTaskResponse, tonic::Status> {
    Ok(env.tasks().submit_task(grpc::request(request)).await?.into_inner())
}

fn id_of(response: &SubmitTaskResponse) -> String {
    response.task.as_ref().map(|t| t.id.clone()).expect("SubmitTaskResponse carries the task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_gives_one_task_and_other_args_are_refused() {
    let (env, _executor) = crate::env_with_executor().await;
    let pool = env.db().pool().await.expect("pool");
    let gateway = env.start_gateway().await.expect("gateway starts");

    // Twice in a row.
    let first = submit(&env, keyed("once", json!({"n": 1}))).await.expect("first submit");
    let again = submit(&env, keyed("once", json!({"n": 1}))).await.expect("second submit");
    assert!(first.created && !again.created, "created only once: {first:?} / {again:?}");
    assert_eq!(id_of(&first), id_of(&again), "the same task");

    // Twenty at once.
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut client = env.tasks();
        racers.spawn(async move {
            client.submit_task(grpc::request(keyed("burst", json!({"n": 2})))).await.map(tonic::Response::into_inner)
        });
    }
    let mut burst = Vec::new();
    while let Some(joined) = racers.join_next().await {
        burst.push(joined.expect("racer").expect("a racing submit succeeds"));
    }
    let ids: std::collections::BTreeSet<String> = burst.iter().map(id_of).collect();
    assert_eq!(ids.len(), 1, "twenty racing submits name one task: {ids:?}");
    assert_eq!(burst.iter().filter(|r| r.created).count(), 1, "exactly one of them created it");

    // Other args under a used key.
    let refused = submit(&env, keyed("once", json!({"n": 99}))).await.expect_err("other args are refused");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert!(
        refused.message().contains("idempotency_key") && refused.message().contains(&id_of(&first)),
        "the refusal names the key and the first task: {refused:?}"
    );
    let rest = gateway.rest();
    let conflict = rest
        .post_json(
            "/api/v1/tasks",
            &json!({"function": "core.util.echo", "args": {"n": 98}, "idempotency_key": "once"}),
        )
        .await
        .expect("POST /api/v1/tasks");
    assert_eq!((conflict.status, conflict.code()), (409, "ALREADY_EXISTS"), "{:?}", conflict.body);
    let same = rest
        .post_json("/api/v1/tasks", &json!({"function": "core.util.echo", "args": {"n": 1}, "idempotency_key": "once"}))
        .await
        .expect("POST /api/v1/tasks");
    assert_eq!((same.status, same.body["id"].as_str()), (200, Some(id_of(&first).as_str())), "{:?}", same.body);

    let keys: Vec<(String, i64)> =
        sqlx::query_as("SELECT idempotency_key, count(*) FROM tasks GROUP BY idempotency_key ORDER BY 1")
            .fetch_all(&pool)
            .await
            .expect("count tasks by key");
    assert_eq!(keys, vec![("burst".to_owned(), 1), ("once".to_owned(), 1)], "one task per key, nothing else");
    wait_all_ended(&pool, 2, LONG).await;
    assert_exactly_once(&pool).await;
    for id in [id_of(&first), ids.into_iter().next().expect("one id")] {
        let task = env.get_task(&id).await.expect("GetTask");
        assert_eq!(task.status, legion_proto::v1::TaskStatus::Succeeded as i32, "{}", crate::describe(&task));
        assert_eq!(task.attempt, 1, "ran once: {task:?}");
    }
}
