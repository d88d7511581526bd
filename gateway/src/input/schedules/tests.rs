use serde_json::json;

use super::*;

fn detail(result: Result<impl std::fmt::Debug, Problem>) -> String {
    let problem = result.expect_err("must be refused");
    assert_eq!((problem.status, problem.code.as_str()), (400, "INVALID_ARGUMENT"), "{problem}");
    problem.detail
}

fn parse(body: &serde_json::Value) -> Result<ScheduleBody, Problem> {
    ScheduleBody::parse(body.to_string().as_bytes())
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn a_full_body_becomes_the_grpc_request() {
    let body = json!({
        "name": "nightly",
        "description": "reports",
        "function": "http.request.get",
        "args": {"url": "http://x"},
        "transformation": {"engine": "jq", "expr": ".args"},
        "chain": "report",
        "priority": 9,
        "max_attempts": 3,
        "timeout_ms": 4_294_967_295_u32,
        "region": "eu",
        "cron": "30 2 * * *",
        "timezone": "America/New_York",
        "allow_overlap": false,
        "misfire": "skip",
        "paused": true
    });
    let schedule = parse(&body).expect("parses").into_request().schedule.expect("schedule");
    assert_eq!(
        (schedule.name.as_str(), schedule.description.as_str(), schedule.function.as_str()),
        ("nightly", "reports", "http.request.get")
    );
    assert_eq!(schedule.args.as_ref().map(legion_proto::value_to_json), Some(json!({"url": "http://x"})));
    assert_eq!(
        schedule.transformation.as_ref().map(legion_proto::value_to_json),
        Some(json!({"engine": "jq", "expr": ".args"}))
    );
    assert_eq!((schedule.chain.as_deref(), schedule.region.as_deref()), (Some("report"), Some("eu")));
    assert_eq!((schedule.priority, schedule.max_attempts, schedule.timeout_ms), (9, Some(3), Some(u32::MAX)));
    assert_eq!((schedule.cron.as_deref(), schedule.interval_ms), (Some("30 2 * * *"), None));
    assert_eq!((schedule.timezone.as_str(), schedule.misfire.as_str()), ("America/New_York", "skip"));
    assert!(!schedule.allow_overlap && schedule.paused && schedule.created_by.is_empty());
}

#[test]
fn a_minimal_body_gets_defaults() {
    let body = json!({"name": "tick", "function": "core.util.noop", "interval_ms": 31_622_400_000_u64});
    let schedule = parse(&body).expect("parses").into_schedule();
    assert_eq!(schedule.args.as_ref().map(legion_proto::value_to_json), Some(json!({})));
    assert_eq!((schedule.transformation, schedule.chain, schedule.cron), (None, None, None));
    assert_eq!((schedule.interval_ms, schedule.priority, schedule.max_attempts), (Some(31_622_400_000), 0, None));
    assert_eq!((schedule.timezone.as_str(), schedule.misfire.as_str(), schedule.allow_overlap), ("", "", false));
    assert!(!schedule.paused, "created running");
    let nulls = json!({"name": "tick", "function": "core.util.noop", "args": null, "transformation": null,
        "cron": null, "interval_ms": 1000, "description": null, "chain": null, "region": null});
    let schedule = parse(&nulls).expect("nulls count as absent").into_schedule();
    assert_eq!(schedule.args.as_ref().map(legion_proto::value_to_json), Some(json!({})));
    assert_eq!((schedule.transformation, schedule.cron, schedule.chain, schedule.region), (None, None, None, None));
}

/// Regression guard: a document from `GET /api/v1/schedules/{name}` is accepted again as it is, and
/// its output-only members are not sent.
#[test]
fn an_exported_schedule_is_accepted_again() {
    let exported = json!({
        "name": "nightly", "description": null, "function": "core.util.echo", "args": {"a": 1},
        "transformation": null, "chain": null, "priority": 0, "max_attempts": null, "timeout_ms": null,
        "region": null, "cron": null, "interval_ms": 60000, "timezone": "UTC", "allow_overlap": true,
        "misfire": "fire_once", "paused": true, "next_fires": ["2026-03-08T07:00:00Z"],
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "created_by": "api-key/k1",
        "last_fire": {"slot": "2026-03-08T07:00:00Z", "fired_at": null, "task_id": null, "status": "overlap",
            "outcome": "overlap", "reason": null, "missed": 0, "epoch": 1}
    });
    let schedule = parse(&exported).expect("accepted").into_schedule();
    assert_eq!((schedule.interval_ms, schedule.allow_overlap, schedule.timezone.as_str()), (Some(60_000), true, "UTC"));
    assert!(schedule.paused, "a paused schedule is created again paused");
    assert!(schedule.next_fires.is_empty() && schedule.last_fire.is_none() && schedule.created_at.is_none());
    assert!(schedule.created_by.is_empty());
}

#[test]
fn bad_bodies_are_refused_by_name() {
    let cases = [
        (json!({"function": "a.b.c", "cron": "* * * * *"}), "name: required"),
        (json!({"name": "s", "cron": "* * * * *"}), "function: required"),
        (json!({"name": "s", "function": null, "cron": "* * * * *"}), "function: required"),
        (json!({"name": "s", "function": "a.b.c", "every": "5m", "tz": "UTC"}), "every, tz: unknown fields;"),
        (json!({"name": "s", "function": "a.b.c", "interval_ms": -1}), "interval_ms: invalid value: integer `-1`"),
        (json!({"name": "s", "function": "a.b.c", "priority": "high"}), "priority: invalid type: string \"high\""),
        (
            json!({"name": "s", "function": "a.b.c", "timeout_ms": 4_294_967_296_u64}),
            "timeout_ms: invalid value: integer `4294967296`, expected u32",
        ),
        (json!({"name": "s", "function": "a.b.c", "allow_overlap": "yes"}), "allow_overlap: invalid type: string"),
        (json!({"name": "s", "function": "a.b.c", "paused": "yes"}), "paused: invalid type: string"),
        (json!({"name": "s", "function": "a.b.c", "cron": 5}), "cron: invalid type: integer `5`"),
        (json!([1]), "body: must be a JSON object, not an array"),
    ];
    for (body, expected) in cases {
        let d = detail(parse(&body));
        assert!(d.starts_with(expected), "{body}: {d:?} should start with {expected:?}");
    }
    let d = detail(parse(&json!({"name": "s", "function": "a.b.c", "cron_expr": "x"})));
    assert!(d.contains("accepted fields are name, description, function,"), "{d}");
    assert!(d.contains("misfire, paused, and the output-only next_fires, created_at,"), "{d}");
    assert!(detail(ScheduleBody::parse(b"{")).starts_with("body: not valid JSON"));

    let mut deep = json!(1);
    for _ in 0..33 {
        deep = json!([deep]);
    }
    for member in ["args", "transformation"] {
        let mut body = json!({"name": "s", "function": "a.b.c", "interval_ms": 1000});
        body[member] = deep.clone();
        let d = detail(parse(&body));
        assert!(d.starts_with(&format!("{member}: nested 33 levels deep")), "{d}");
    }
}

#[test]
fn list_queries_convert_and_refuse_by_name() {
    let query = ListSchedulesQuery::from_pairs(pairs(&[("limit", "1000"), ("page_token", "t")])).expect("valid");
    assert_eq!(
        query.clone().into_request().expect("valid"),
        v1::ListSchedulesRequest { page_size: 1000, page_token: "t".into() }
    );
    let fires = query.into_fires_request("nightly".into()).expect("valid");
    assert_eq!((fires.name.as_str(), fires.page_size, fires.page_token.as_str()), ("nightly", 1000, "t"));
    let empty = ListSchedulesQuery::from_pairs(pairs(&[("limit", ""), ("page_token", "")])).expect("valid");
    assert_eq!(empty.into_request().expect("valid"), v1::ListSchedulesRequest::default());
    let d = detail(ListSchedulesQuery::from_pairs(pairs(&[("name", "x")])));
    assert!(d.starts_with("name: unknown query parameter; accepted parameters are limit, page_token"), "{d}");
    assert_eq!(
        detail(ListSchedulesQuery::from_pairs(pairs(&[("limit", "1"), ("limit", "2")]))),
        "limit: given more than once"
    );
    let over = ListSchedulesQuery::from_pairs(pairs(&[("limit", "1001")])).expect("collected");
    assert!(detail(over.into_fires_request("n".into())).starts_with("limit: must be an integer from 1 to 1000"));
}

#[test]
fn the_preview_query_converts_and_refuses_by_name() {
    let query = PreviewQuery::from_pairs(pairs(&[
        ("cron", "30 2 * * *"),
        ("timezone", "America/New_York"),
        ("from", "2026-03-07T01:00:00+01:00"),
        ("count", "3"),
    ]))
    .expect("valid");
    let request = query.into_request().expect("valid");
    assert_eq!((request.cron.as_deref(), request.timezone.as_str()), (Some("30 2 * * *"), "America/New_York"));
    assert_eq!((request.interval_ms, request.count), (None, 3));
    assert_eq!(request.from, Some(prost_types::Timestamp { seconds: 1_772_841_600, nanos: 0 }), "in UTC");
    let request = PreviewQuery::from_pairs(pairs(&[("interval_ms", "60000")])).expect("valid").into_request();
    let request = request.expect("valid");
    assert_eq!((request.interval_ms, request.cron, request.from, request.count), (Some(60_000), None, None, 0));

    for (pairs, expected) in [
        (pairs(&[("interval_ms", "5m")]), "interval_ms: must be a whole number of milliseconds, got \"5m\""),
        (pairs(&[("interval_ms", "-1")]), "interval_ms: must be a whole number"),
        (pairs(&[("from", "yesterday")]), "from: must be an RFC 3339 time"),
        (pairs(&[("count", "0")]), "count: must be an integer from 1 to 1000, got \"0\""),
        (pairs(&[("count", "1001")]), "count: must be an integer from 1 to 1000"),
    ] {
        let d = detail(PreviewQuery::from_pairs(pairs).and_then(PreviewQuery::into_request));
        assert!(d.starts_with(expected), "{d:?} should start with {expected:?}");
    }
    let d = detail(PreviewQuery::from_pairs(pairs(&[("every", "5m")])));
    assert!(
        d.starts_with("every: unknown query parameter; accepted parameters are cron, timezone, interval_ms"),
        "{d}"
    );
}

#[test]
fn a_schedule_carries_its_retry_policy() {
    let body = json!({"name": "n", "function": "a.b.c", "interval_ms": 1000,
        "retry": {"multiplier": 2.5, "max_backoff_ms": 9000}});
    let schedule = parse(&body).expect("parses").into_schedule();
    assert_eq!(
        schedule.retry,
        Some(v1::RetryPolicy { multiplier: Some(2.5), max_backoff_ms: Some(9000), ..v1::RetryPolicy::default() })
    );
    let d = detail(parse(&json!({"name": "n", "function": "a.b.c", "retry": {"max_backoff": 1}})));
    assert!(d.starts_with("retry") && d.contains("unknown field `max_backoff`"), "{d}");
}
