//! Slow transformations: schedules whose jq never ends are quarantined, a healthy schedule with a jq
//! transformation keeps firing every slot on time beside them, and chains, which have their own sandbox
//! pool, still fire their children.

use legion_control_plane::store::TaskStore;
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::schedules::{Outcome, ScheduleSpec, ScheduleStore};
use legion_proto::v1;
use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::{json_to_value, value_to_json};
use serde_json::json;

use super::common::{all_fires, every_second};
use super::loop_tests::{fires_until, seconds_between};
use crate::support::stack::{Stack, core_manifest};

const LOOPERS: usize = 6;

/// The looping schedules' fire rows are all failed, and each was quarantined.
async fn assert_loopers_quarantined(store: &PgStore) {
    for i in 0..LOOPERS {
        let name = format!("loop-{i}");
        let fires = fires_until(store, &name, "a quarantined slot", |f| {
            f.iter().any(|x| x.reason.as_deref().is_some_and(|r| r.contains("quarantined until")))
        })
        .await;
        for fire in &fires {
            assert_eq!((fire.outcome, fire.task_id), (Outcome::Failed, None), "{name}: {fire:?}");
            let reason = fire.reason.as_deref().unwrap();
            assert!(
                reason.contains("control_plane.transform_timeout_ms")
                    || reason.contains("control_plane.transform_budget_ms"),
                "{name}: {reason}"
            );
        }
        // The first failure is the evaluation that ran long; quarantined slots follow, without one.
        assert!(!fires[0].reason.as_deref().unwrap().starts_with("transformation not evaluated"), "{fires:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_transformations_are_quarantined_and_neither_healthy_schedules_nor_chains_wait_for_them() {
    let stack = Stack::start(true, |s| {
        s.control_plane.leader_lease_ms = 1000;
        s.control_plane.schedule_poll_ms = 100;
        s.control_plane.transform_timeout_ms = 500;
        s.control_plane.transform_budget_ms = 1000;
    })
    .await;
    let store = stack.db.store().await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop"])).await.unwrap();
    let stamped = ScheduleSpec {
        transformation: Some(json!({"engine": "jq", "expr": ".args + {slot: .schedule.slot}"})),
        ..every_second("steady")
    };
    store.create_schedule(&stamped).await.unwrap();
    let before = fires_until(&store, "steady", "the healthy schedule to fire", |f| f.len() >= 2).await.len();

    // Six schedules whose jq never ends, due every second like the healthy one.
    for i in 0..LOOPERS {
        let looping = ScheduleSpec {
            transformation: Some(json!({"engine": "jq", "expr": "def f: f; f"})),
            ..every_second(&format!("loop-{i}"))
        };
        store.create_schedule(&looping).await.unwrap();
    }
    // A chain with a jq transformation on the same control plane: its child is made at once.
    let mut relay =
        v1::Relationship { trigger: "core.util.echo".into(), action: "core.util.noop".into(), ..Default::default() };
    relay.transformation = Some(json_to_value(&json!({"engine": "jq", "expr": "{m: (.results.n * 10)}"})));
    ChainServiceClient::new(stack.admin_channel().await)
        .apply_chain(v1::ApplyChainRequest {
            chain: Some(v1::Chain { name: "relay".into(), relationships: vec![relay], ..Default::default() }),
        })
        .await
        .unwrap();
    let root = stack
        .tasks()
        .await
        .submit_task(v1::SubmitTaskRequest {
            function: "core.util.echo".into(),
            chain: Some("relay".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert!(crate::support::tasks::run_queued(&stack, &root.id, &serde_json::json!({"n": 2})).await, "accepted");
    let request = v1::ListTasksRequest { root_id: Some(root.id.clone()), page_size: 10, ..Default::default() };
    let run = stack.tasks().await.list_tasks(request).await.unwrap().into_inner().tasks;
    let child = run.iter().find(|t| t.id != root.id).expect("the child was fired with the root's completion");
    assert_ne!(child.status(), v1::TaskStatus::Failed, "{child:?}");
    assert_eq!(value_to_json(child.args.as_ref().unwrap()), json!({"m": 20}));

    assert_loopers_quarantined(&store).await;
    // Twelve more fires of the healthy schedule, while the loopers are quarantined and retried.
    let quarantined = all_fires(&store, "steady").await.len();
    let fires = fires_until(&store, "steady", "twelve more fires", |f| f.len() >= quarantined + 12).await;
    let grace = chrono::Duration::milliseconds(i64::try_from(stack.settings.control_plane.misfire_grace_ms).unwrap());
    for fire in &fires {
        assert_eq!(fire.outcome, Outcome::Fired, "{fire:?}");
        assert!(fire.fired_at.signed_duration_since(fire.slot) <= grace, "on time: {fire:?}");
        let task = store.get_task(fire.task_id.unwrap()).await.unwrap().unwrap();
        assert_eq!(task.args["slot"], json!(legion_control_plane::schedules::plan::rfc3339(fire.slot)));
    }
    // Most slots have a row of their own: the rounds that learnt about the loopers (at most the budget
    // each) cost a slot at most now and then.
    let recent = &fires[before..];
    let missed: u64 = recent.iter().map(|f| f.missed).sum();
    assert!(missed * 3 <= u64::try_from(recent.len()).unwrap(), "{missed} slots missed over {recent:?}");
    for pair in fires.windows(2) {
        #[allow(clippy::cast_precision_loss)]
        let expected = 1.0 + pair[1].missed as f64;
        assert!((seconds_between(pair[0].slot, pair[1].slot) - expected).abs() < 1e-6, "{pair:?}");
    }
    // The loopers' slots all failed; none fired a task.
    for i in 0..LOOPERS {
        let fires = all_fires(&store, &format!("loop-{i}")).await;
        assert!(fires.iter().all(|f| f.task_id.is_none()), "{fires:?}");
    }
    stack.stop().await.unwrap();
}
