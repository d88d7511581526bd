//! What creating a schedule checks beyond its document, through the whole control plane (`run_with`)
//! against real PostgreSQL and RabbitMQ: the transformation is evaluated once, on the first slot, in
//! the sandbox, and refused when it could only fail every fire; and a schedule can be created paused,
//! which fires nothing until resumed. Regression tests for an operator's adversarial pass: a `static`
//! value of `5`, `[{"a":1}]` and the jq `def f: f; f` were accepted and then failed every fire; and a
//! paused schedule exported and created again was running.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use legion_proto::v1;
use legion_proto::v1::schedule_service_client::ScheduleServiceClient;
use legion_proto::{json_to_value, timestamp_to_chrono, value_to_json};
use serde_json::{Value, json};
use support::eventually;
use support::schedules::create;
use support::stack::{AuthChannel, Stack, core_manifest};
use tonic::Code;

type Client = ScheduleServiceClient<AuthChannel>;

/// Largest args in these tests (`limits.max_payload_bytes`), small so that a transformation can pass it.
const MAX_PAYLOAD_BYTES: usize = 4096;

async fn start() -> (Stack, Client) {
    let stack = Stack::start(true, |settings| settings.limits.max_payload_bytes = MAX_PAYLOAD_BYTES).await;
    stack.executor().await.register_node(core_manifest(&["echo", "noop"])).await.expect("register");
    let client = ScheduleServiceClient::new(stack.admin_channel().await);
    (stack, client)
}

/// `core.util.echo` at 02:30 New York time with args `{"n": 1}` and `transformation`.
fn transformed(name: &str, transformation: Value) -> v1::Schedule {
    v1::Schedule {
        name: name.into(),
        function: "core.util.echo".into(),
        args: Some(json_to_value(&json!({"n": 1}))),
        transformation: Some(json_to_value(&transformation)),
        cron: Some("30 2 * * *".into()),
        timezone: "America/New_York".into(),
        ..v1::Schedule::default()
    }
}

async fn fires(client: &mut Client, name: &str) -> Vec<v1::ScheduleFire> {
    client
        .list_schedule_fires(v1::ListScheduleFiresRequest { name: name.into(), page_size: 1000, ..Default::default() })
        .await
        .expect("fires")
        .into_inner()
        .fires
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformation_that_fails_on_the_first_slot_is_refused() {
    let (stack, mut client) = start().await;
    let cases = [
        (
            json!({"engine": "static", "value": 5}),
            "the transformation produced a number; the args of a task must be an object",
        ),
        (json!({"engine": "static", "value": [{"a": 1}]}), "the transformation produced an array"),
        (json!({"engine": "jq", "expr": "def f: f; f"}), "ran past control_plane.transform_timeout_ms (1000 ms)"),
        (json!({"engine": "jq", "expr": "last(repeat(1))"}), "control_plane.transform_timeout_ms"),
        (json!({"engine": "jq", "expr": "error(\"no report on \" + .schedule.slot)"}), "no report on 20"),
        (json!({"engine": "jq", "expr": ".args.n"}), "the transformation produced a number"),
        (json!({"engine": "jinja", "template": "[{{ args.n }}]"}), "the transformation produced an array"),
        (json!({"engine": "jq", "expr": "{x: (\"a\" * 5000)}"}), "exceeds limits.max_payload_bytes (4096)"),
    ];
    for (transformation, reason) in cases {
        let status = create(&mut client, transformed("refused", transformation.clone())).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{transformation}: {status:?}");
        let message = status.message();
        assert!(message.starts_with("transformation"), "{transformation}: {message}");
        assert!(message.contains(reason), "{transformation}: {message:?} should contain {reason:?}");
    }
    // The slot named is the first one: 02:30 New York time, after now.
    let status = create(&mut client, transformed("refused", json!({"engine": "static", "value": 5}))).await;
    let message = status.unwrap_err().message().to_owned();
    let slot = message.strip_prefix("transformation: on the first slot (").and_then(|m| m.split_once(')'));
    let slot: DateTime<Utc> = slot.expect(&message).0.parse().expect("an RFC 3339 slot");
    assert!(slot > Utc::now() && slot < Utc::now() + chrono::Duration::days(1), "{slot}");
    // An interval schedule's first slot is its creation instant, in microseconds as PostgreSQL keeps it
    // and as the slot that fires has it.
    let every = v1::Schedule {
        cron: None,
        timezone: String::new(),
        interval_ms: Some(60_000),
        ..transformed("refused", json!({"engine": "static", "value": 5}))
    };
    let message = create(&mut client, every).await.unwrap_err().message().to_owned();
    let slot = message.strip_prefix("transformation: on the first slot (").and_then(|m| m.split_once(')'));
    let slot: DateTime<Utc> = slot.expect(&message).0.parse().expect("an RFC 3339 slot");
    assert_eq!(slot.timestamp_subsec_nanos() % 1000, 0, "{message}");
    assert_eq!(
        client.get_schedule(v1::GetScheduleRequest { name: "refused".into() }).await.unwrap_err().code(),
        Code::NotFound,
        "nothing refused was created"
    );

    // What gives an object on the first slot is created, whatever the engine.
    for (name, transformation) in [
        ("jq", json!({"engine": "jq", "expr": ".args + {day: .schedule.slot[0:10]}"})),
        ("jinja", json!({"engine": "jinja", "template": "{\"n\": {{ args.n }}, \"slot\": \"{{ schedule.slot }}\"}"})),
        ("static", json!({"engine": "static", "value": {"fixed": true}})),
    ] {
        let created = create(&mut client, transformed(name, transformation.clone())).await.expect(name);
        assert_eq!(created.transformation.as_ref().map(value_to_json), Some(transformation), "{name}");
    }
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_created_paused_fires_nothing_until_resumed() {
    let (stack, mut client) = start().await;
    let every_second = |name: &str, paused: bool| v1::Schedule {
        name: name.into(),
        function: "core.util.echo".into(),
        interval_ms: Some(1000),
        allow_overlap: true,
        paused,
        ..v1::Schedule::default()
    };
    let paused = create(&mut client, every_second("held", true)).await.expect("create paused");
    assert!(paused.paused && paused.next_fires.is_empty(), "{paused:?}");
    assert!(client.get_schedule(v1::GetScheduleRequest { name: "held".into() }).await.unwrap().into_inner().paused);
    create(&mut client, every_second("running", false)).await.expect("create running");

    // The scheduler deals with the running schedule's slots, three in a row, while the paused one has
    // none.
    eventually("three fires of the running schedule", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move { (fires(&mut client, "running").await.len() >= 3).then_some(()) }
    })
    .await;
    assert!(fires(&mut client, "held").await.is_empty(), "a schedule created paused fired");

    let resumed = client
        .resume_schedule(v1::SetSchedulePausedRequest { name: "held".into() })
        .await
        .expect("resume")
        .into_inner();
    assert_eq!((resumed.paused, resumed.next_fires.len()), (false, 5));
    let resumed_at = Utc::now() - chrono::Duration::seconds(1);
    let first = eventually("a fire after the resume", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move { fires(&mut client, "held").await.pop() }
    })
    .await;
    assert_eq!(first.outcome, "fired", "{first:?}");
    let slot = timestamp_to_chrono(first.slot.as_ref().unwrap()).unwrap();
    assert!(slot >= resumed_at, "{slot} is before the resume at {resumed_at}: slots while paused never fire");
    stack.stop().await.expect("clean stop");
}
