//! A schedule whose creator is no longer authorized (a policy that stopped granting the runner, a
//! revoked API key): its next fire fails with the reason, the scheduler pauses it in the same write and
//! audits the pause once; resuming re-checks at the next fire.

use legion_control_plane::schedules::scheduler::AUDIT_PRINCIPAL;
use legion_control_plane::store::pg::PgStore;
use legion_control_plane::store::schedules::{Outcome, ScheduleSpec, ScheduleStore};
use legion_control_plane::store::security::{NewApiKey, SecurityStore};
use serde_json::{Value, json};

use super::common::every_second;
use super::loop_tests::{DEADLINE, fires_until, start};
use crate::support::eventually;

/// The `schedule.pause` audit records of `name`: `(principal, source, detail)`, oldest first.
async fn pauses(store: &PgStore, name: &str) -> Vec<(String, String, Value)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT principal, source, detail FROM audit_log WHERE action = 'schedule.pause' AND resource = $1 ORDER BY id",
    )
    .bind(format!("schedules/{name}"))
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(p, s, d)| (p, s, serde_json::from_str(&d).unwrap())).collect()
}

/// The `schedule.pause` audit records of `name` once there are at least `count`: the scheduler audits
/// a pause after the write that made it, so a reader can see the pause before its record.
async fn pauses_at_least(store: &PgStore, name: &str, count: usize) -> Vec<(String, String, Value)> {
    eventually("the pause to be audited", DEADLINE, || async {
        let audited = pauses(store, name).await;
        (audited.len() >= count).then_some(audited)
    })
    .await
}

/// Waits until `name` is paused, then returns its failed fire rows' reasons.
async fn paused_with(store: &PgStore, name: &str) -> Vec<String> {
    eventually("the schedule to be paused", DEADLINE, || async {
        store.get_schedule(name).await.unwrap().unwrap().paused.then_some(())
    })
    .await;
    let fires = fires_until(store, name, "the failed fire", |f| f.iter().any(|x| x.outcome == Outcome::Failed)).await;
    fires.iter().filter(|f| f.outcome == Outcome::Failed).map(|f| f.reason.clone().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_no_longer_authorized_pauses_the_schedule_once_audited_and_resuming_checks_again() {
    let (stack, store) = start().await;
    let grants = json!([{"path": "tasks/core/util/echo", "capabilities": ["create"]},
                        {"path": "runners/core/util/echo", "capabilities": ["execute"]}]);
    store.put_policy("sched-ops", &grants).await.unwrap();
    let limited =
        ScheduleSpec { created_by: "jwt/ops".into(), policies: vec!["sched-ops".into()], ..every_second("limited") };
    let limited = store.create_schedule(&limited).await.unwrap();
    let key = store
        .insert_api_key(&NewApiKey {
            id: uuid::Uuid::now_v7(),
            name: "ci".into(),
            key_hash: [7; 32],
            policies: vec!["admin".into()],
            created_by: "bootstrap".into(),
            expires_at: None,
        })
        .await
        .unwrap();
    let keyed = ScheduleSpec { created_by: format!("api-key/{}", key.id), ..every_second("keyed") };
    let keyed = store.create_schedule(&keyed).await.unwrap();
    for name in ["limited", "keyed"] {
        fires_until(&store, name, "a fire", |f| f.iter().any(|x| x.outcome == Outcome::Fired)).await;
    }

    // The policy stops granting the runner: one failed fire, the schedule paused, one audit record.
    store
        .put_policy("sched-ops", &json!([{"path": "tasks/core/util/echo", "capabilities": ["create"]}]))
        .await
        .unwrap();
    let refused = "creator jwt/ops is no longer authorized: lacks execute on runners/core/util/echo; the schedule is \
                   paused until it is resumed";
    assert_eq!(paused_with(&store, "limited").await, [refused]);
    let audited = pauses_at_least(&store, "limited", 1).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    let (principal, source, detail) = &audited[0];
    assert_eq!(principal, AUDIT_PRINCIPAL);
    assert!(source.starts_with("scheduler of "), "{source}");
    assert_eq!((&detail["id"], &detail["reason"]), (&json!(limited.id), &json!(refused)));
    let paused = store.get_schedule("limited").await.unwrap().unwrap();
    assert!(paused.updated_at > limited.updated_at, "a pause is a change");

    // The key is revoked: the same for the other schedule.
    store.revoke_api_key(key.id).await.unwrap();
    let refused = format!(
        "creator api-key/{} is no longer authorized: its API key was revoked; the schedule is paused until it is \
         resumed",
        key.id
    );
    assert_eq!(paused_with(&store, "keyed").await, std::slice::from_ref(&refused));
    let audited = pauses_at_least(&store, "keyed", 1).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!((&audited[0].2["id"], &audited[0].2["reason"]), (&json!(keyed.id), &json!(refused)));

    // Resumed while still refused: the next fire checks again, fails and pauses it again.
    let fired = store.list_fires("limited", None, 1000).await.unwrap().unwrap().0.len();
    store.set_schedule_paused("limited", false).await.unwrap();
    let fires = fires_until(&store, "limited", "a fire after the resume", |f| f.len() > fired).await;
    assert_eq!(fires.len(), fired + 1, "{fires:?}");
    assert_eq!(fires.last().unwrap().outcome, Outcome::Failed);
    assert_eq!(pauses_at_least(&store, "limited", 2).await.len(), 2, "audited once more");
    assert!(store.get_schedule("limited").await.unwrap().unwrap().paused);

    // Granted again and resumed: it fires.
    store.put_policy("sched-ops", &grants).await.unwrap();
    // Policies are cached for 100 ms (auth.cache_ttl_ms): let the cache see the change first.
    eventually("the policy change to be seen", DEADLINE, || async {
        store.set_schedule_paused("limited", false).await.unwrap();
        let fires = store.list_fires("limited", None, 1).await.unwrap().unwrap().0;
        (fires[0].outcome == Outcome::Fired).then_some(())
    })
    .await;
    assert!(!store.get_schedule("limited").await.unwrap().unwrap().paused);
    assert_eq!(pauses(&store, "keyed").await.len(), 1, "a paused schedule is not paused again");
    stack.stop().await.unwrap();
}
