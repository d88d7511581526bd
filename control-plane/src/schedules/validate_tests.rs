use chrono::{DateTime, Duration, Utc};
use legion_proto::json_to_value;
use serde_json::json;
use uuid::Uuid;

use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
}

fn cron(expression: &str) -> v1::Schedule {
    v1::Schedule {
        name: "nightly".into(),
        function: "core.util.echo".into(),
        cron: Some(expression.into()),
        ..v1::Schedule::default()
    }
}

fn interval(ms: u64) -> v1::Schedule {
    v1::Schedule { cron: None, interval_ms: Some(ms), ..cron("") }
}

fn error_of(schedule: &v1::Schedule) -> FieldError {
    validate(schedule, &Limits::default()).expect_err("must be rejected")
}

fn value(json: serde_json::Value) -> Option<prost_types::Value> {
    Some(json_to_value(&json))
}

#[test]
fn defaults_are_applied() {
    let spec = validate(&cron("0 3 * * *"), &Limits::default()).expect("valid");
    assert_eq!(spec.name, "nightly");
    assert_eq!(spec.function, "core.util.echo");
    assert_eq!(spec.args, json!({}));
    assert_eq!(spec.transformation, None);
    assert_eq!(spec.chain, None);
    assert_eq!((spec.priority, spec.max_attempts, spec.timeout_ms), (0, 1, Limits::default().default_timeout_ms));
    assert_eq!(spec.region, None);
    assert_eq!(spec.cadence, CadenceSpec::Cron { expression: "0 3 * * *".into(), timezone: "UTC".into() });
    assert!(!spec.allow_overlap);
    assert_eq!(spec.misfire, Misfire::FireOnce);
    assert!(!spec.paused, "created running");
    assert!(spec.created_by.is_empty() && spec.policies.is_empty(), "set by the caller after authentication");
}

#[test]
fn a_full_document_is_kept() {
    let document = v1::Schedule {
        name: "report.daily_v2".into(),
        description: "d".repeat(MAX_DESCRIPTION_BYTES),
        function: "http.request.get".into(),
        args: value(json!({"url": "http://x.test/", "n": 2})),
        transformation: value(json!({"engine": "jq", "expr": "{url: .args.url, at: .schedule.slot}"})),
        chain: Some("pipeline".into()),
        priority: 9,
        max_attempts: Some(25),
        timeout_ms: Some(86_400_000),
        region: Some("eu-west_1".into()),
        cron: Some("0 30 9 * * 1-5".into()),
        timezone: "America/New_York".into(),
        misfire: "skip".into(),
        paused: true,
        // Output-only fields are ignored.
        next_fires: vec![legion_proto::timestamp(Utc::now())],
        created_by: "api-key/forged".into(),
        ..v1::Schedule::default()
    };
    let spec = validate(&document, &Limits::default()).expect("valid");
    assert_eq!(spec.description.len(), MAX_DESCRIPTION_BYTES);
    assert_eq!(spec.args, json!({"url": "http://x.test/", "n": 2}));
    assert_eq!(spec.transformation, Some(json!({"engine": "jq", "expr": "{url: .args.url, at: .schedule.slot}"})));
    assert_eq!(spec.chain.as_deref(), Some("pipeline"));
    assert_eq!((spec.priority, spec.max_attempts, spec.timeout_ms), (9, 25, 86_400_000));
    assert_eq!(spec.region.as_deref(), Some("eu-west_1"));
    assert_eq!(
        spec.cadence,
        CadenceSpec::Cron { expression: "0 30 9 * * 1-5".into(), timezone: "America/New_York".into() }
    );
    assert_eq!(spec.misfire, Misfire::Skip);
    assert!(spec.paused, "a schedule may be created paused");
    assert!(spec.created_by.is_empty());
}

#[test]
fn interval_schedules_may_overlap_and_name_utc() {
    let mut document = interval(60_000);
    document.allow_overlap = true;
    document.misfire = "fire_once".into();
    let spec = validate(&document, &Limits::default()).expect("valid");
    assert_eq!(spec.cadence, CadenceSpec::Interval { interval_ms: 60_000 });
    assert!(spec.allow_overlap);
    document.timezone = "UTC".into();
    validate(&document, &Limits::default()).expect("UTC is the interval's own time zone");
    for ms in [slots_bounds().0, slots_bounds().1] {
        validate(&interval(ms), &Limits::default()).expect("bounds are accepted");
    }
}

fn slots_bounds() -> (u64, u64) {
    (crate::schedules::slots::MIN_INTERVAL_MS, crate::schedules::slots::MAX_INTERVAL_MS)
}

#[test]
fn null_args_and_transformation_are_absent() {
    let mut document = cron("* * * * *");
    document.args = value(serde_json::Value::Null);
    document.transformation = value(serde_json::Value::Null);
    let spec = validate(&document, &Limits::default()).expect("valid");
    assert_eq!((spec.args, spec.transformation), (json!({}), None));
}

#[test]
fn each_bad_field_is_named() {
    let base = cron("0 3 * * *");
    let with = |edit: &dyn Fn(&mut v1::Schedule)| {
        let mut document = base.clone();
        edit(&mut document);
        document
    };
    let cases: Vec<(v1::Schedule, &str)> = vec![
        (with(&|d| d.name = String::new()), "name"),
        (with(&|d| d.name = "Nightly".into()), "name"),
        (with(&|d| d.name = "-nightly".into()), "name"),
        (with(&|d| d.name = "a".repeat(65)), "name"),
        (with(&|d| d.description = "d".repeat(MAX_DESCRIPTION_BYTES + 1)), "description"),
        (with(&|d| d.description = "a\0b".into()), "description"),
        (with(&|d| d.function = "core.util".into()), "function"),
        (with(&|d| d.function = String::new()), "function"),
        (with(&|d| d.chain = Some("Bad Chain".into())), "chain"),
        (with(&|d| d.args = value(json!([1, 2]))), "args"),
        (with(&|d| d.args = value(json!("text"))), "args"),
        (with(&|d| d.args = value(json!({"a": "x\u{0}"}))), "args"),
        (with(&|d| d.priority = 10), "priority"),
        (with(&|d| d.max_attempts = Some(0)), "max_attempts"),
        (with(&|d| d.max_attempts = Some(26)), "max_attempts"),
        (with(&|d| d.timeout_ms = Some(0)), "timeout_ms"),
        (with(&|d| d.timeout_ms = Some(86_400_001)), "timeout_ms"),
        (with(&|d| d.region = Some("EU".into())), "region"),
        (with(&|d| d.transformation = value(json!("{}"))), "transformation"),
        (with(&|d| d.transformation = value(json!({"engine": "lua", "code": ""}))), "transformation.engine"),
        (with(&|d| d.transformation = value(json!({"expr": "."}))), "transformation.engine"),
        (with(&|d| d.transformation = value(json!({"engine": "jq", "expr": "{"}))), "transformation.expr"),
        (with(&|d| d.transformation = value(json!({"engine": "jinja"}))), "transformation.template"),
        (with(&|d| d.transformation = value(json!({"engine": "jq", "expr": ".", "x": 1}))), "transformation"),
        (with(&|d| d.transformation = value(json!({"engine": "static", "value": {"a": "\u{0}"}}))), "transformation"),
        (with(&|d| d.interval_ms = Some(60_000)), "cron"),
        (with(&|d| d.cron = None), "cron"),
        (with(&|d| d.cron = Some(String::new())), "cron"),
        (with(&|d| d.cron = Some("0 3 * *".into())), "cron"),
        (with(&|d| d.cron = Some("0 0 3 * * * 2026".into())), "cron"),
        (with(&|d| d.cron = Some("61 3 * * *".into())), "cron"),
        (with(&|d| d.cron = Some("0 3 * * mon-xyz".into())), "cron"),
        (with(&|d| d.cron = Some(format!("0 3 * * {}", "1,".repeat(200)))), "cron"),
        (with(&|d| d.timezone = "Mars/Olympus_Mons".into()), "timezone"),
        (with(&|d| d.timezone = "EST5EDT ".into()), "timezone"),
        (with(&|d| d.misfire = "catch_up".into()), "misfire"),
        (with(&|d| d.misfire = "FIRE_ONCE".into()), "misfire"),
        (with(&|d| d.allow_overlap = true), "allow_overlap"),
        (interval(999), "interval_ms"),
        (interval(0), "interval_ms"),
        (interval(slots_bounds().1 + 1), "interval_ms"),
        (v1::Schedule { timezone: "Europe/Berlin".into(), ..interval(60_000) }, "timezone"),
        (v1::Schedule { timezone: "utc".into(), ..interval(60_000) }, "timezone"),
    ];
    for (document, field) in cases {
        let error = error_of(&document);
        assert_eq!(error.field, field, "{document:?}: {error}");
        assert!(error.to_string().starts_with(&format!("{field}: ")), "{error}");
    }
}

#[test]
fn messages_give_the_reason_and_the_limit() {
    let both = v1::Schedule { interval_ms: Some(1000), ..cron("* * * * *") };
    assert_eq!(error_of(&both).to_string(), "cron: give either cron or interval_ms, not both");
    let neither = v1::Schedule { cron: None, ..cron("") };
    assert_eq!(error_of(&neither).to_string(), "cron: required: give either cron or interval_ms");
    let overlap = v1::Schedule { allow_overlap: true, ..cron("* * * * *") };
    assert_eq!(
        error_of(&overlap).to_string(),
        "allow_overlap: only interval schedules can overlap; cron schedules always start each slot's task"
    );
    let zone = v1::Schedule { timezone: "Europe/Berlin".into(), ..interval(1000) };
    assert_eq!(
        error_of(&zone).to_string(),
        "timezone: only cron schedules have a time zone; leave it empty (or UTC) with interval_ms"
    );
    assert_eq!(error_of(&interval(999)).to_string(), "interval_ms: must be 1000 to 31622400000 ms");
    let unknown_zone = v1::Schedule { timezone: "Mars/Base".into(), ..cron("* * * * *") };
    assert!(error_of(&unknown_zone).to_string().starts_with("timezone: \"Mars/Base\" is not an IANA"));
    let misfire = v1::Schedule { misfire: "later".into(), ..cron("* * * * *") };
    assert_eq!(
        error_of(&misfire).to_string(),
        "misfire: \"later\" is not a misfire policy (expected fire_once or skip)"
    );
    let long = v1::Schedule { description: "x".repeat(1025), ..cron("* * * * *") };
    assert_eq!(error_of(&long).to_string(), "description: must be at most 1024 bytes");
}

#[test]
fn task_limits_are_a_submits() {
    let limits = Limits { max_payload_bytes: 16, max_transformation_bytes: 20, ..Limits::default() };
    let big = v1::Schedule { args: value(json!({"message": "hello world"})), ..cron("* * * * *") };
    let error = validate(&big, &limits).expect_err("args too large");
    assert_eq!(error.to_string(), "args: 25 bytes exceeds limits.max_payload_bytes (16)");
    let transformation = v1::Schedule {
        transformation: value(json!({"engine": "jq", "expr": "{a: .args, b: .schedule.slot}"})),
        ..cron("* * * * *")
    };
    let error = validate(&transformation, &limits).expect_err("transformation too large");
    assert!(error.to_string().starts_with("transformation.expr: "), "{error}");
    assert!(error.reason.contains("limits.max_transformation_bytes (20)"), "{error}");
    let attempts = Limits { max_attempts: 3, ..Limits::default() };
    let error =
        validate(&v1::Schedule { max_attempts: Some(4), ..cron("* * * * *") }, &attempts).expect_err("attempts");
    assert_eq!(error.to_string(), "max_attempts: must be 1 to 3 (limits.max_attempts), got 4");
}

#[test]
fn cadences_round_trip_through_storage() {
    let anchor = at("2026-01-01T00:00:00Z");
    let cron_spec = cadence_spec(Some("*/15 * * * *"), "Europe/Berlin", None).expect("cron");
    let rebuilt = cadence(&cron_spec, anchor).expect("stored cron");
    assert_eq!(rebuilt.next_after(anchor), Some(at("2026-01-01T00:15:00Z")));
    let interval_spec = cadence_spec(None, "", Some(90_000)).expect("interval");
    let rebuilt = cadence(&interval_spec, anchor).expect("stored interval");
    assert_eq!(rebuilt.next_after(anchor - Duration::seconds(1)), Some(anchor), "the anchor is the first slot");
    assert_eq!(rebuilt.next_after(anchor), Some(anchor + Duration::seconds(90)));
    let corrupt = CadenceSpec::Cron { expression: "nonsense".into(), timezone: "UTC".into() };
    assert_eq!(cadence(&corrupt, anchor).expect_err("corrupt").field, "cron");
}

#[test]
fn the_first_slot_is_the_schedulers() {
    let now = at("2026-03-07T12:00:00.5Z");
    let cron_spec = |expression: &str, timezone: &str| CadenceSpec::Cron {
        expression: expression.into(),
        timezone: timezone.into(),
    };
    assert_eq!(
        first_slot(&cron_spec("30 2 * * *", "America/New_York"), now),
        Ok(at("2026-03-08T07:00:00Z")),
        "the spring-forward gap fires at 03:00 EDT"
    );
    assert_eq!(first_slot(&cron_spec("0 0 29 2 *", "UTC"), now), Ok(at("2028-02-29T00:00:00Z")), "leap days");
    let on_the_second = at("2026-03-07T12:00:00Z");
    assert_eq!(first_slot(&cron_spec("* * * * * *", "UTC"), on_the_second), Ok(on_the_second), "now included");
    assert_eq!(first_slot(&CadenceSpec::Interval { interval_ms: 60_000 }, now), Ok(now), "the creation instant");
}

/// Regression: `0 0 31 2 *` (31 February) was accepted, and the schedule never fired.
#[test]
fn a_cron_that_never_fires_is_refused() {
    let now = at("2026-03-07T12:00:00Z");
    for expression in ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
        let spec = CadenceSpec::Cron { expression: expression.into(), timezone: "Europe/Berlin".into() };
        assert_eq!(
            first_slot(&spec, now).expect_err(expression).to_string(),
            format!("cron: {expression:?} has no slot after now")
        );
    }
}

fn stored(cadence: CadenceSpec, created_at: DateTime<Utc>) -> Schedule {
    let mut spec = validate(&cron("* * * * *"), &Limits::default()).expect("valid");
    spec.cadence = cadence;
    Schedule {
        id: Uuid::now_v7(),
        spec,
        paused: false,
        active_since: created_at,
        cursor: None,
        next_due: Some(created_at),
        last_task_id: None,
        revision: 1,
        created_at,
        updated_at: created_at,
        last_fire: None,
    }
}

fn rfc3339(slots: &[DateTime<Utc>]) -> Vec<String> {
    slots.iter().map(DateTime::to_rfc3339).collect()
}

#[test]
fn next_fires_of_a_new_york_cron_follow_daylight_saving() {
    let cadence = CadenceSpec::Cron { expression: "30 2 * * *".into(), timezone: "America/New_York".into() };
    let schedule = stored(cadence, at("2026-03-06T11:00:00Z"));
    let fires = next_fires(&schedule, at("2026-03-06T12:00:00Z")).expect("valid");
    // 2026-03-08 has no 02:30 in New York: that slot fires at 03:00 EDT (07:00 UTC).
    assert_eq!(
        rfc3339(&fires),
        [
            "2026-03-07T07:30:00+00:00",
            "2026-03-08T07:00:00+00:00",
            "2026-03-09T06:30:00+00:00",
            "2026-03-10T06:30:00+00:00",
            "2026-03-11T06:30:00+00:00",
        ]
    );
}

#[test]
fn next_fires_start_after_the_latest_of_now_cursor_and_activation() {
    let created = at("2026-05-01T00:00:00Z");
    let mut schedule = stored(CadenceSpec::Interval { interval_ms: 60_000 }, created);
    // After now: the anchor and past slots, dealt with, are not shown.
    schedule.cursor = Some(at("2026-05-01T00:10:00Z"));
    let now = at("2026-05-01T00:10:30Z");
    assert_eq!(next_fires(&schedule, now).expect("valid")[0], at("2026-05-01T00:11:00Z"));
    assert_eq!(next_fires(&schedule, now).expect("valid").len(), NEXT_FIRES);
    // After the cursor when it is ahead of this clock (the database's clock runs ahead of ours).
    schedule.cursor = Some(at("2026-05-01T00:12:00Z"));
    assert_eq!(next_fires(&schedule, now).expect("valid")[0], at("2026-05-01T00:13:00Z"));
    // After a resume that is ahead of this clock.
    schedule.cursor = None;
    schedule.active_since = at("2026-05-01T00:20:00Z");
    assert_eq!(next_fires(&schedule, now).expect("valid")[0], at("2026-05-01T00:21:00Z"));
    // Slots are on the anchor's grid, not the resume's.
    schedule.active_since = at("2026-05-01T00:20:10Z");
    assert_eq!(next_fires(&schedule, now).expect("valid")[0], at("2026-05-01T00:21:00Z"));
    // None while paused.
    schedule.paused = true;
    assert!(next_fires(&schedule, now).expect("valid").is_empty());
}

#[test]
fn next_fires_start_with_the_slot_due_and_not_dealt_with() {
    let created = at("2026-05-01T00:00:00Z");
    let mut schedule = stored(CadenceSpec::Interval { interval_ms: 3_600_000 }, created);
    // Just created: the creation instant is the first slot, and it has not fired yet.
    let now = at("2026-05-01T00:00:00.2Z");
    let fires = next_fires(&schedule, now).expect("valid");
    assert_eq!(&fires[..2], [created, at("2026-05-01T01:00:00Z")]);
    assert_eq!(fires.len(), NEXT_FIRES);
    // Once the leader dealt with it, the next slot comes first.
    schedule.cursor = Some(created);
    assert_eq!(next_fires(&schedule, now).expect("valid")[0], at("2026-05-01T01:00:00Z"));
    // After downtime, the newest due slot, the one the leader decides, comes first.
    let later = at("2026-05-01T05:30:00Z");
    let fires = next_fires(&schedule, later).expect("valid");
    assert_eq!(&fires[..2], [at("2026-05-01T05:00:00Z"), at("2026-05-01T06:00:00Z")]);
}

#[test]
fn previews_default_and_bound_their_count() {
    let now = at("2026-06-01T10:00:00Z");
    let request = v1::PreviewScheduleRequest { cron: Some("0 * * * *".into()), ..Default::default() };
    let checked = preview(&request, now).expect("valid");
    assert_eq!(checked.from, now);
    assert_eq!(checked.slots().len(), DEFAULT_PREVIEW_COUNT as usize);
    assert_eq!(checked.slots()[0], at("2026-06-01T11:00:00Z"), "strictly after from");

    let most = v1::PreviewScheduleRequest { count: MAX_PREVIEW_COUNT, ..request.clone() };
    assert_eq!(preview(&most, now).expect("valid").slots().len(), 1000);
    let too_many = v1::PreviewScheduleRequest { count: MAX_PREVIEW_COUNT + 1, ..request };
    assert_eq!(preview(&too_many, now).expect_err("count").to_string(), "count: must be 1 to 1000, got 1001");

    // An interval is anchored at `from`.
    let from = at("2026-06-01T10:00:00.250Z");
    let every = v1::PreviewScheduleRequest {
        interval_ms: Some(1500),
        from: Some(legion_proto::timestamp(from)),
        count: 2,
        ..Default::default()
    };
    assert_eq!(
        preview(&every, now).expect("valid").slots(),
        [from + Duration::milliseconds(1500), from + Duration::milliseconds(3000)]
    );
}

#[test]
fn previews_name_the_bad_field() {
    let now = Utc::now();
    let cases = [
        (v1::PreviewScheduleRequest::default(), "cron"),
        (v1::PreviewScheduleRequest { cron: Some("* * *".into()), ..Default::default() }, "cron"),
        (
            v1::PreviewScheduleRequest {
                cron: Some("* * * * *".into()),
                interval_ms: Some(1000),
                ..Default::default()
            },
            "cron",
        ),
        (
            v1::PreviewScheduleRequest {
                cron: Some("* * * * *".into()),
                timezone: "Nowhere".into(),
                ..Default::default()
            },
            "timezone",
        ),
        (
            v1::PreviewScheduleRequest { interval_ms: Some(1000), timezone: "Asia/Tokyo".into(), ..Default::default() },
            "timezone",
        ),
        (v1::PreviewScheduleRequest { interval_ms: Some(10), ..Default::default() }, "interval_ms"),
        (
            v1::PreviewScheduleRequest {
                interval_ms: Some(1000),
                from: Some(prost_types::Timestamp { seconds: 0, nanos: -1 }),
                ..Default::default()
            },
            "from",
        ),
        (
            v1::PreviewScheduleRequest {
                interval_ms: Some(1000),
                from: Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }),
                ..Default::default()
            },
            "from",
        ),
    ];
    for (request, field) in cases {
        assert_eq!(preview(&request, now).expect_err(field).field, field, "{request:?}");
    }
}
