use chrono::{DateTime, Duration, Utc};
use legion_common::settings::Limits;
use serde_json::json;

use super::*;
use crate::chains::{Definition, Relationship};
use crate::policy::Policy;
use crate::schedules::tick::Misfire;
use crate::store::schedules::{CadenceSpec, ScheduleSpec};
use crate::store::security::ApiKeyRecord;
use crate::tasks::validate::SubmitSpec;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
}

const GRACE: Duration = Duration::seconds(10);

/// An interval schedule created at 2026-06-01T00:00:00Z, every `every_ms`, with its cursor at `cursor`.
fn interval(every_ms: u64, cursor: Option<&str>) -> DueSchedule {
    let created = at("2026-06-01T00:00:00Z");
    DueSchedule {
        schedule: Schedule {
            id: Uuid::nil(),
            spec: ScheduleSpec {
                name: "nightly".into(),
                description: String::new(),
                function: "core.util.echo".into(),
                args: json!({"x": 1}),
                transformation: None,
                chain: None,
                priority: 0,
                max_attempts: 1,
                timeout_ms: 1000,
                region: None,
                cadence: CadenceSpec::Interval { interval_ms: every_ms },
                allow_overlap: false,
                misfire: Misfire::FireOnce,
                paused: false,
                created_by: "jwt/alice".into(),
                policies: vec!["ops".into()],
                retry: Default::default(),
            },
            paused: false,
            active_since: created,
            cursor: cursor.map(at),
            next_due: None,
            last_task_id: None,
            revision: 7,
            created_at: created,
            updated_at: created,
            last_fire: None,
        },
        previous_running: false,
    }
}

fn cron(expression: &str, cursor: Option<&str>) -> DueSchedule {
    let mut due = interval(1000, cursor);
    due.schedule.spec.cadence = CadenceSpec::Cron { expression: expression.into(), timezone: "UTC".into() };
    due
}

fn task() -> NewTask {
    crate::tasks::submit::new_task(SubmitSpec {
        function: legion_common::FunctionName::parse("core.util.echo").expect("valid"),
        args: json!({}),
        args_json: "{}".into(),
        priority: 0,
        max_attempts: 1,
        timeout_ms: 1000,
        delay_ms: 0,
        idempotency_key: None,
        region: None,
        owner: "jwt/alice".into(),
        chain: None,
        chain_version: None,
        retry: Default::default(),
    })
}

#[test]
fn an_on_time_slot_fires_and_the_next_one_is_due_next() {
    let due = interval(60_000, Some("2026-06-01T00:01:00Z"));
    let p = plan(&due, at("2026-06-01T00:02:00.250Z"), GRACE, None);
    assert_eq!(
        p,
        Plan::Fire {
            slot: at("2026-06-01T00:02:00Z"),
            missed: 0,
            reason: None,
            next_due: Some(at("2026-06-01T00:03:00Z")),
        }
    );
    assert_eq!(p.fire_slot(), Some(at("2026-06-01T00:02:00Z")));
}

#[test]
fn the_first_slot_of_an_interval_is_its_creation() {
    let due = interval(60_000, None);
    let p = plan(&due, at("2026-06-01T00:00:00.100Z"), GRACE, None);
    assert_eq!(p.fire_slot(), Some(at("2026-06-01T00:00:00Z")));
}

#[test]
fn nothing_due_waits_for_the_next_slot() {
    // Created (and looked at) at 00:00:00; the cron fires at 01:00.
    let due = cron("0 1 * * *", None);
    assert_eq!(
        plan(&due, at("2026-06-01T00:00:05Z"), GRACE, None),
        Plan::Wait { next_due: Some(at("2026-06-01T01:00:00Z")) }
    );
    // After a fire at 01:00, the next slot is a day later.
    let due = cron("0 1 * * *", Some("2026-06-01T01:00:00Z"));
    assert_eq!(
        plan(&due, at("2026-06-01T01:00:03Z"), GRACE, None),
        Plan::Wait { next_due: Some(at("2026-06-02T01:00:00Z")) }
    );
}

#[test]
fn a_cadence_without_further_slots_stops() {
    // 29 February 2026 does not exist, nor in any later year's February 30.
    let due = cron("0 0 30 2 *", None);
    assert_eq!(plan(&due, at("2026-06-01T00:00:05Z"), GRACE, None), Plan::Wait { next_due: None });
}

#[test]
fn fire_once_after_downtime_fires_the_newest_slot_once_as_a_catch_up() {
    // Down from 00:01:00 to 01:00:30: slots 00:02 … 01:00 are due (59); the newest is 30 s late.
    let due = interval(60_000, Some("2026-06-01T00:01:00Z"));
    let p = plan(&due, at("2026-06-01T01:00:30Z"), GRACE, None);
    let Plan::Fire { slot, missed, reason, next_due } = p else { panic!("fires: {p:?}") };
    assert_eq!(slot, at("2026-06-01T01:00:00Z"));
    assert_eq!(missed, 58);
    assert_eq!(reason.as_deref(), Some("catch-up for 59 missed slots (misfire fire_once)"));
    assert_eq!(next_due, Some(at("2026-06-01T01:01:00Z")));
    // Older slots missed, the newest on time: it fires as it would have, and says what was lost.
    let p = plan(&due, at("2026-06-01T00:03:01Z"), GRACE, None);
    let Plan::Fire { missed, reason, .. } = p else { panic!("fires: {p:?}") };
    assert_eq!(
        (missed, reason.as_deref()),
        (1, Some("on time; 1 older slot missed while no leader ticked was not fired (misfire fire_once)"))
    );
    let p = plan(&due, at("2026-06-01T00:04:01Z"), GRACE, None);
    let Plan::Fire { missed, reason, .. } = p else { panic!("fires: {p:?}") };
    assert_eq!(
        (missed, reason.as_deref()),
        (2, Some("on time; 2 older slots missed while no leader ticked were not fired (misfire fire_once)"))
    );
    // Only the newest slot late: a catch-up for it alone.
    let p = plan(&due, at("2026-06-01T00:02:11Z"), GRACE, None);
    let Plan::Fire { missed, reason, .. } = p else { panic!("fires: {p:?}") };
    assert_eq!((missed, reason.as_deref()), (0, Some("catch-up for 1 missed slot (misfire fire_once)")));
}

#[test]
fn slots_missed_while_this_replica_led_were_late_not_missed_for_want_of_a_leader() {
    let due = interval(1000, Some("2026-06-01T00:01:00Z"));
    // Leading since before the oldest due slot (00:01:01): the slots came due while a round ran long.
    let since = Some(at("2026-06-01T00:01:00.500Z"));
    let p = plan(&due, at("2026-06-01T00:01:03.100Z"), GRACE, since);
    let Plan::Fire { slot, missed, reason, .. } = p else { panic!("fires: {p:?}") };
    assert_eq!((slot, missed), (at("2026-06-01T00:01:03Z"), 2));
    assert_eq!(
        reason.as_deref(),
        Some("on time; 2 older slots late while the scheduler was busy were not fired (misfire fire_once)")
    );
    // Every minute, a round so long that the newest slot is late too (30 s, past the 10 s grace).
    let minutely = interval(60_000, Some("2026-06-01T00:01:00Z"));
    let p = plan(&minutely, at("2026-06-01T00:05:30Z"), GRACE, since);
    let Plan::Fire { slot, missed, reason, .. } = p else { panic!("fires: {p:?}") };
    assert_eq!((slot, missed), (at("2026-06-01T00:05:00Z"), 3));
    assert_eq!(reason.as_deref(), Some("catch-up for 4 slots late while the scheduler was busy (misfire fire_once)"));
    let mut skip = minutely;
    skip.schedule.spec.misfire = Misfire::Skip;
    let p = plan(&skip, at("2026-06-01T00:05:30Z"), GRACE, since);
    let Plan::Pass { fire, .. } = p else { panic!("passes: {p:?}") };
    assert_eq!((fire.outcome, fire.missed), (Outcome::Missed, 3));
    assert_eq!(fire.reason.as_deref(), Some("late while the scheduler was busy (4 slots); misfire policy skip"));
    // Leading only since after the oldest due slot: it was missed while no leader ticked.
    let p = plan(&due, at("2026-06-01T00:01:03.100Z"), GRACE, Some(at("2026-06-01T00:01:02Z")));
    let Plan::Fire { reason, .. } = p else { panic!("fires: {p:?}") };
    assert_eq!(
        reason.as_deref(),
        Some("on time; 2 older slots missed while no leader ticked were not fired (misfire fire_once)")
    );
}

#[test]
fn skip_after_downtime_passes_over_the_newest_slot() {
    let mut due = interval(60_000, Some("2026-06-01T00:01:00Z"));
    due.schedule.spec.misfire = Misfire::Skip;
    let p = plan(&due, at("2026-06-01T01:00:30Z"), GRACE, None);
    let Plan::Pass { fire, cursor, next_due } = p else { panic!("passes: {p:?}") };
    assert_eq!(fire.outcome, Outcome::Missed);
    assert_eq!(fire.slot, at("2026-06-01T01:00:00Z"));
    assert_eq!(fire.missed, 58);
    assert_eq!(fire.reason.as_deref(), Some("missed while no leader ticked (59 slots); misfire policy skip"));
    assert_eq!((cursor, next_due), (at("2026-06-01T01:00:00Z"), Some(at("2026-06-01T01:01:00Z"))));
    // The newest slot on time fires; the older ones are skipped, and the fire says so.
    let p = plan(&due, at("2026-06-01T00:03:01Z"), GRACE, None);
    let Plan::Fire { missed, reason, .. } = p else { panic!("fires: {p:?}") };
    assert_eq!(missed, 1);
    assert_eq!(
        reason.as_deref(),
        Some("on time; 1 older slot missed while no leader ticked was not fired (misfire skip)")
    );
}

#[test]
fn an_unfinished_previous_task_passes_an_interval_slot_over() {
    let mut due = interval(60_000, Some("2026-06-01T00:01:00Z"));
    due.previous_running = true;
    let previous = Uuid::now_v7();
    due.schedule.last_task_id = Some(previous);
    let p = plan(&due, at("2026-06-01T00:02:00.100Z"), GRACE, None);
    let Plan::Pass { fire, cursor, .. } = p else { panic!("passes: {p:?}") };
    assert_eq!(fire.outcome, Outcome::Overlap);
    assert_eq!(fire.reason, Some(format!("previous task {previous} unfinished")));
    assert_eq!(cursor, at("2026-06-01T00:02:00Z"));
    // A chain schedule waits for the whole run: the reason names its root.
    let mut chained = due.clone();
    chained.schedule.spec.chain = Some("alerts".into());
    let p = plan(&chained, at("2026-06-01T00:03:00.100Z"), GRACE, None);
    let Plan::Pass { fire, .. } = p else { panic!("passes: {p:?}") };
    assert_eq!(
        fire.reason,
        Some(format!("previous chain run {previous} unfinished; 1 older slot missed while no leader ticked"))
    );
    // Allowed to overlap: it fires.
    due.schedule.spec.allow_overlap = true;
    assert!(matches!(plan(&due, at("2026-06-01T00:02:00.100Z"), GRACE, None), Plan::Fire { .. }));
    // Cron schedules never pass over for overlap.
    let mut due = cron("* * * * *", Some("2026-06-01T00:01:00Z"));
    due.previous_running = true;
    assert!(matches!(plan(&due, at("2026-06-01T00:02:00.100Z"), GRACE, None), Plan::Fire { .. }));
}

#[test]
fn a_stored_cadence_that_no_longer_parses_stops_the_schedule() {
    let due = cron("every tuesday", None);
    let p = plan(&due, at("2026-06-01T00:02:00Z"), GRACE, None);
    let Plan::Broken { reason } = &p else { panic!("broken: {p:?}") };
    assert!(reason.starts_with("the stored cadence no longer parses: cron: "), "{reason}");
    let record = p.record(&due.schedule, None);
    assert_eq!((record.cursor, record.next_due, record.fire, record.task), (None, None, None, None));
    assert_eq!((record.schedule_id, record.revision), (Uuid::nil(), 7));
}

#[test]
fn records_carry_the_task_or_the_reason_it_failed() {
    let due = interval(60_000, Some("2026-06-01T00:01:00Z"));
    let now = at("2026-06-01T00:02:00.100Z");
    let new = task();
    let fired = plan(&due, now, GRACE, None).record(&due.schedule, Some(Ok(new.clone())));
    assert_eq!(fired.cursor, Some(at("2026-06-01T00:02:00Z")));
    assert_eq!(fired.next_due, Some(at("2026-06-01T00:03:00Z")));
    assert_eq!(fired.task.as_ref().map(|t| t.id), Some(new.id));
    let fire = fired.fire.expect("fire row");
    assert_eq!((fire.outcome, fire.reason, fire.missed), (Outcome::Fired, None, 0));

    let failure = Failure::Slot("chain \"x\" no longer exists".into());
    let failed = plan(&due, now, GRACE, None).record(&due.schedule, Some(Err(failure)));
    assert!(failed.task.is_none() && !failed.pause);
    let fire = failed.fire.expect("fire row");
    assert_eq!(fire.outcome, Outcome::Failed);
    assert_eq!(fire.reason.as_deref(), Some("chain \"x\" no longer exists"));
    assert_eq!(failed.cursor, Some(at("2026-06-01T00:02:00Z")));

    // A creator no longer authorized: the slot fails and the record pauses the schedule.
    let failure = Failure::Unauthorized("creator jwt/alice is no longer authorized: lacks create on tasks/x".into());
    let refused = plan(&due, now, GRACE, None).record(&due.schedule, Some(Err(failure)));
    assert!(refused.task.is_none() && refused.pause);
    let fire = refused.fire.expect("fire row");
    assert_eq!(fire.outcome, Outcome::Failed);
    assert_eq!(
        fire.reason.as_deref(),
        Some(
            "creator jwt/alice is no longer authorized: lacks create on tasks/x; the schedule is paused until it \
             is resumed"
        )
    );

    let waiting = Plan::Wait { next_due: Some(at("2026-06-01T00:03:00Z")) }.record(&due.schedule, None);
    assert_eq!((waiting.cursor, waiting.next_due), (None, Some(at("2026-06-01T00:03:00Z"))));
    assert!(waiting.fire.is_none() && waiting.task.is_none());
}

#[test]
fn the_transformation_context_names_the_schedule_and_its_slot() {
    let value = context(&json!({"a": 1}), "nightly", at("2026-03-08T07:00:00Z"), at("2026-03-08T07:00:00.012Z"));
    assert_eq!(
        value,
        json!({"args": {"a": 1},
               "schedule": {"name": "nightly", "slot": "2026-03-08T07:00:00Z", "fired_at": "2026-03-08T07:00:00.012Z"}})
    );
}

#[test]
fn args_must_be_an_acceptable_object() {
    let limits = Limits { max_payload_bytes: 32, max_json_depth: 3, ..Limits::default() };
    let (args, text) = check_args(json!({"day": "2026-03-08"}), &limits).expect("valid");
    assert_eq!((args, text.as_str()), (json!({"day": "2026-03-08"}), r#"{"day":"2026-03-08"}"#));
    let err = check_args(json!([1, 2]), &limits).expect_err("array");
    assert_eq!(err, "args: the transformation produced an array; the args of a task must be an object");
    let err = check_args(json!({"x": "y".repeat(40)}), &limits).expect_err("large");
    assert!(err.starts_with("args: 48 bytes exceeds limits.max_payload_bytes (32)"), "{err}");
    let err = check_args(json!({"a": {"b": {"c": {}}}}), &limits).expect_err("deep");
    assert!(err.starts_with("args: nested 4 levels deep"), "{err}");
    assert_eq!(
        check_args(json!({"a": "\u{0}"}), &limits).expect_err("nul"),
        "args: strings must not contain NUL (\\u0000)"
    );
}

#[test]
fn the_catalog_must_still_offer_the_function() {
    let catalog: HashMap<String, bool> =
        [("core.util.echo".to_owned(), false), ("http.request.get".to_owned(), true)].into_iter().collect();
    assert_eq!(check_catalog(&catalog, "core.util.echo"), Ok(()));
    assert_eq!(check_catalog(&catalog, "x.y.z"), Err("function x.y.z is no longer in the catalog".into()));
    assert_eq!(
        check_catalog(&catalog, "http.request.get"),
        Err("function http.request.get: extension \"http\" is disabled".into())
    );
}

fn chain(relationships: Vec<(&str, &str, bool)>) -> Chain {
    Chain {
        name: "alerts".into(),
        version: 4,
        definition: Definition {
            description: String::new(),
            max_depth: None,
            relationships: relationships
                .into_iter()
                .map(|(trigger, action, active)| Relationship {
                    id: Uuid::now_v7(),
                    trigger: trigger.into(),
                    action: action.into(),
                    conditions: None,
                    transformation: None,
                    delay_ms: 0,
                    active,
                    priority: None,
                    max_attempts: None,
                    timeout_ms: None,
                    retry: Default::default(),
                })
                .collect(),
        },
        created_at: at("2026-06-01T00:00:00Z"),
        updated_at: at("2026-06-01T00:00:00Z"),
        updated_by: "jwt/alice".into(),
    }
}

#[test]
fn the_chain_must_exist_and_start_from_the_function() {
    assert_eq!(check_chain(None, "alerts", "core.util.echo").expect_err("gone"), "chain \"alerts\" no longer exists");
    let inactive =
        chain(vec![("core.util.echo", "log.entry.write", false), ("core.util.noop", "core.util.echo", true)]);
    let err = check_chain(Some(&inactive), "alerts", "core.util.echo").expect_err("no trigger");
    assert!(err.starts_with("no active relationship of chain \"alerts\" is triggered by core.util.echo"), "{err}");
    let active = chain(vec![("core.util.echo", "log.entry.write", true)]);
    assert_eq!(check_chain(Some(&active), "alerts", "core.util.echo").map(|c| c.version), Ok(4));
}

#[test]
fn api_key_creators_are_recognized() {
    let id = Uuid::now_v7();
    assert_eq!(creator_key(&format!("api-key/{id}")), Some(id));
    assert_eq!(creator_key(&format!("jwt/api-key/{id}")), Some(id));
    assert_eq!(creator_key("jwt/alice"), None);
    assert_eq!(creator_key("api-key/not-a-uuid"), None);
}

#[test]
fn a_creator_key_must_still_authenticate() {
    let now = at("2026-06-01T00:00:00Z");
    let key = ApiKeyRecord {
        id: Uuid::now_v7(),
        name: "ci".into(),
        policies: vec![],
        created_by: "bootstrap".into(),
        created_at: now,
        expires_at: None,
        revoked_at: None,
    };
    let who = format!("api-key/{}", key.id);
    assert_eq!(check_key(&who, Some(&key), now), Ok(()));
    assert!(check_key(&who, None, now).expect_err("deleted").ends_with("its API key no longer exists"));
    let revoked = ApiKeyRecord { revoked_at: Some(now), ..key.clone() };
    assert!(check_key(&who, Some(&revoked), now).expect_err("revoked").ends_with("its API key was revoked"));
    let expired = ApiKeyRecord { expires_at: Some(now), ..key };
    assert_eq!(
        check_key(&who, Some(&expired), now).expect_err("expired"),
        format!("creator {who} is no longer authorized: its API key has expired")
    );
}

#[test]
fn a_fire_needs_what_a_submit_needs() {
    let plain = required("core.util.echo", None);
    assert_eq!(
        plain,
        vec![
            ("tasks/core/util/echo".to_owned(), Capability::Create),
            ("runners/core/util/echo".to_owned(), Capability::Execute),
        ]
    );
    let with_chain =
        chain(vec![("core.util.echo", "log.entry.write", true), ("log.entry.write", "log.entry.write", true)]);
    let checks = required("core.util.echo", Some(&with_chain));
    assert_eq!(
        &checks[2..],
        &[
            ("chains/alerts".to_owned(), Capability::Execute),
            ("runners/log/entry/write".to_owned(), Capability::Execute),
        ]
    );

    let ops = Policy::from_rules_json(
        "ops",
        &json!([{"path": "tasks/core/*", "capabilities": ["create"]},
                {"path": "runners/core/*", "capabilities": ["execute"]}]),
    )
    .expect("policy");
    let acl = Acl::new([&ops]);
    assert_eq!(check_access("jwt/alice", &acl, &plain), Ok(()));
    assert_eq!(
        check_access("jwt/alice", &acl, &checks),
        Err("creator jwt/alice is no longer authorized: lacks execute on chains/alerts".into())
    );
}
