use prost_types::Timestamp;
use serde_json::json;

use super::*;

fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn proto_fire() -> v1::ScheduleFire {
    v1::ScheduleFire {
        slot: ts(1_772_953_200, 0),
        fired_at: ts(1_772_953_200, 250_000_000),
        task_id: "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e".into(),
        status: "succeeded".into(),
        outcome: "fired".into(),
        reason: "catch-up for 3 missed slots".into(),
        missed: 2,
        epoch: 7,
    }
}

fn proto_schedule() -> v1::Schedule {
    v1::Schedule {
        name: "nightly".into(),
        description: "reports".into(),
        function: "http.request.get".into(),
        args: Some(legion_proto::json_to_value(&json!({"url": "http://x"}))),
        transformation: Some(legion_proto::json_to_value(&json!({"engine": "jq", "expr": ".args"}))),
        chain: Some("report".into()),
        priority: 4,
        max_attempts: Some(3),
        timeout_ms: Some(5000),
        region: Some("eu".into()),
        cron: Some("30 2 * * *".into()),
        timezone: "America/New_York".into(),
        interval_ms: None,
        allow_overlap: false,
        misfire: "skip".into(),
        paused: false,
        next_fires: vec![
            Timestamp { seconds: 1_772_953_200, nanos: 0 },
            Timestamp { seconds: 1_773_037_800, nanos: 0 },
        ],
        created_at: ts(1_767_225_600, 0),
        updated_at: ts(1_767_225_660, 500_000_000),
        created_by: "api-key/k1".into(),
        last_fire: Some(proto_fire()),
        retry: Some(v1::RetryPolicy { jitter: Some(0.5), ..v1::RetryPolicy::default() }),
    }
}

#[test]
fn a_schedule_converts_to_the_rest_shape_in_the_documented_order() {
    let text = serde_json::to_string(&Schedule::from(&proto_schedule())).expect("serializes");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        json,
        json!({
            "name": "nightly",
            "description": "reports",
            "function": "http.request.get",
            "args": {"url": "http://x"},
            "transformation": {"engine": "jq", "expr": ".args"},
            "chain": "report",
            "priority": 4,
            "max_attempts": 3,
            "timeout_ms": 5000,
            "region": "eu",
            "retry": {"jitter": 0.5},
            "cron": "30 2 * * *",
            "interval_ms": null,
            "timezone": "America/New_York",
            "allow_overlap": false,
            "misfire": "skip",
            "paused": false,
            "next_fires": ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:01:00.500Z",
            "created_by": "api-key/k1",
            "last_fire": {
                "slot": "2026-03-08T07:00:00Z",
                "fired_at": "2026-03-08T07:00:00.250Z",
                "task_id": "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e",
                "status": "succeeded",
                "outcome": "fired",
                "reason": "catch-up for 3 missed slots",
                "missed": 2,
                "epoch": 7
            }
        })
    );
    let order = ["name", "description", "function", "args", "cron", "interval_ms", "timezone", "paused", "last_fire"];
    let positions: Vec<usize> = order.iter().map(|k| text.find(&format!("\"{k}\"")).expect("present")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn unset_values_are_null_and_defaults_are_spelled_out() {
    let schedule = v1::Schedule {
        name: "every-minute".into(),
        function: "core.util.noop".into(),
        interval_ms: Some(60_000),
        ..v1::Schedule::default()
    };
    let json = serde_json::to_value(Schedule::from(&schedule)).expect("serializes");
    assert_eq!(
        json,
        json!({
            "name": "every-minute",
            "description": null,
            "function": "core.util.noop",
            "args": {},
            "transformation": null,
            "chain": null,
            "priority": 0,
            "max_attempts": null,
            "timeout_ms": null,
            "region": null,
            "retry": null,
            "cron": null,
            "interval_ms": 60000,
            "timezone": "UTC",
            "allow_overlap": false,
            "misfire": "fire_once",
            "paused": false,
            "next_fires": [],
            "created_at": null,
            "updated_at": null,
            "created_by": null,
            "last_fire": null
        })
    );
    let null_args = v1::Schedule { args: Some(legion_proto::json_to_value(&json!(null))), ..schedule };
    assert_eq!(Schedule::from(&null_args).args, json!({}), "null args are the empty object, as on input");
}

#[test]
fn a_slot_that_did_not_fire_has_a_null_task() {
    let fire = v1::ScheduleFire {
        task_id: String::new(),
        status: "overlap".into(),
        outcome: "overlap".into(),
        reason: String::new(),
        missed: 0,
        ..proto_fire()
    };
    let json = serde_json::to_value(ScheduleFire::from(&fire)).expect("serializes");
    assert_eq!((&json["task_id"], &json["reason"], &json["outcome"]), (&json!(null), &json!(null), &json!("overlap")));
}

#[test]
fn pages_have_a_null_token_on_the_last_page() {
    let page = SchedulePage::from(&v1::ListSchedulesResponse {
        schedules: vec![proto_schedule()],
        next_page_token: String::new(),
    });
    assert_eq!((page.schedules.len(), page.next_page_token), (1, None));
    let page = ScheduleFirePage::from(&v1::ListScheduleFiresResponse { fires: vec![], next_page_token: "n".into() });
    assert_eq!(page.next_page_token.as_deref(), Some("n"));
    let preview = SchedulePreview::from(&v1::PreviewScheduleResponse {
        slots: vec![Timestamp { seconds: 1_772_850_600, nanos: 0 }, Timestamp { seconds: 1_772_953_200, nanos: 0 }],
    });
    let json = serde_json::to_value(preview).expect("serializes");
    assert_eq!(json, json!({"slots": ["2026-03-07T02:30:00Z", "2026-03-08T07:00:00Z"]}));
}
