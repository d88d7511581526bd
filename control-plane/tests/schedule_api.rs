//! The schedule API through the whole control plane (`run_with`) against real PostgreSQL and RabbitMQ:
//! create, read, list in pages, pause, resume, delete and the fire history over gRPC; validation that
//! names each field; authorization that neither lets a limited key schedule what it may not run nor
//! tells it which chains exist; the audit trail; previews; and the control-plane replicas and scheduler
//! lease in `ListNodes`.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use legion_proto::v1;
use legion_proto::v1::auth_service_client::AuthServiceClient;
use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::v1::policy_service_client::PolicyServiceClient;
use legion_proto::v1::schedule_service_client::ScheduleServiceClient;
use legion_proto::{json_to_value, timestamp_to_chrono};
use serde_json::json;
use support::eventually;
use support::schedules::create;
use support::stack::{AuthChannel, Credential, Stack, core_manifest};
use tonic::Code;

type Client = ScheduleServiceClient<AuthChannel>;

async fn schedules(stack: &Stack) -> Client {
    ScheduleServiceClient::new(stack.admin_channel().await)
}

async fn registered(stack: &Stack) {
    stack.executor().await.register_node(core_manifest(&["echo", "noop", "fail"])).await.expect("register");
}

fn cron(name: &str, expression: &str) -> v1::Schedule {
    v1::Schedule {
        name: name.into(),
        function: "core.util.echo".into(),
        cron: Some(expression.into()),
        ..v1::Schedule::default()
    }
}

async fn get(client: &mut Client, name: &str) -> Result<v1::Schedule, tonic::Status> {
    client.get_schedule(v1::GetScheduleRequest { name: name.into() }).await.map(tonic::Response::into_inner)
}

fn instants(timestamps: &[prost_types::Timestamp]) -> Vec<DateTime<Utc>> {
    timestamps.iter().map(|t| timestamp_to_chrono(t).unwrap()).collect()
}

fn rule(path: &str, capabilities: &[&str]) -> v1::PolicyRule {
    v1::PolicyRule { path: path.into(), capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect() }
}

/// An API key holding only a policy `name` with `rules`, and a schedule client that sends it.
async fn limited(stack: &Stack, name: &str, rules: Vec<v1::PolicyRule>) -> Client {
    let mut policies = PolicyServiceClient::new(stack.admin_channel().await);
    policies.put_policy(v1::PutPolicyRequest { name: name.into(), rules }).await.expect("policy");
    let mut auth = AuthServiceClient::new(stack.admin_channel().await);
    let key = auth
        .create_api_key(v1::CreateApiKeyRequest { name: name.into(), policies: vec![name.into()], ttl_s: 0 })
        .await
        .expect("key")
        .into_inner()
        .key;
    ScheduleServiceClient::new(stack.channel_as(Credential::api_key(&key).unwrap()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_read_listed_paused_resumed_and_deleted() {
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let mut client = schedules(&stack).await;

    let before = Utc::now();
    let mut document = cron("report", "30 2 * * *");
    document.timezone = "America/New_York".into();
    document.description = "the nightly report".into();
    document.args = Some(json_to_value(&json!({"token": "do-not-log-me"})));
    document.misfire = "skip".into();
    let created = create(&mut client, document.clone()).await.expect("create");
    assert_eq!(created.name, "report");
    assert_eq!((created.cron.as_deref(), created.timezone.as_str()), (Some("30 2 * * *"), "America/New_York"));
    assert_eq!((created.misfire.as_str(), created.paused, created.interval_ms), ("skip", false, None));
    assert_eq!((created.max_attempts, created.timeout_ms), (Some(1), Some(30_000)));
    assert!(created.created_by.starts_with("api-key/"), "{created:?}");
    assert!(created.last_fire.is_none());

    // The next five slots, each the wall-clock 02:30 in New York (03:00 on a spring-forward day),
    // one a day, after now.
    let next = instants(&created.next_fires);
    assert_eq!(next.len(), 5, "{created:?}");
    for (i, slot) in next.iter().enumerate() {
        assert!(*slot > before, "{slot} is not after {before}");
        let local = slot.with_timezone(&chrono_tz::America::New_York);
        assert!(
            (local.hour(), local.minute()) == (2, 30) || (local.hour(), local.minute()) == (3, 0),
            "{local} is not 02:30 New York"
        );
        assert_eq!((slot.second(), slot.nanosecond()), (0, 0));
        if i > 0 {
            let gap = *slot - next[i - 1];
            assert!(gap >= chrono::Duration::hours(23) && gap <= chrono::Duration::hours(25), "{gap}");
        }
    }

    // Same name again.
    let taken = create(&mut client, document).await.unwrap_err();
    assert_eq!((taken.code(), taken.message()), (Code::AlreadyExists, "name: schedule \"report\" already exists"));

    let read = get(&mut client, "report").await.expect("get");
    assert_eq!((read.name.as_str(), read.description.as_str()), ("report", "the nightly report"));
    assert_eq!(read.args, created.args);
    assert_eq!(read.created_at, created.created_at);
    let missing = get(&mut client, "nope").await.unwrap_err();
    assert_eq!((missing.code(), missing.message()), (Code::NotFound, "name: no schedule \"nope\""));

    // Pages of two, by name.
    for name in ["alpha", "beta", "gamma", "delta"] {
        create(&mut client, cron(name, "0 4 * * *")).await.expect("create");
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_schedules(v1::ListSchedulesRequest { page_size: 2, page_token: token })
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.schedules.len() <= 2);
        names.extend(page.schedules.iter().map(|s| s.name.clone()));
        assert!(page.schedules.iter().all(|s| s.next_fires.len() == 5));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, ["alpha", "beta", "delta", "gamma", "report"]);
    assert_eq!(pages, 3);
    let bad = client
        .list_schedules(v1::ListSchedulesRequest { page_size: 0, page_token: "c1.alpha".into() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("page_token: "), "{bad:?}");
    let big = client.list_schedules(v1::ListSchedulesRequest { page_size: 1001, ..Default::default() }).await;
    assert!(big.unwrap_err().message().starts_with("page_size: "));

    // Pause: no next fires; resume: five again.
    let paused = client
        .pause_schedule(v1::SetSchedulePausedRequest { name: "report".into() })
        .await
        .expect("pause")
        .into_inner();
    assert!(paused.paused && paused.next_fires.is_empty(), "{paused:?}");
    assert!(get(&mut client, "report").await.unwrap().paused);
    let resumed = client
        .resume_schedule(v1::SetSchedulePausedRequest { name: "report".into() })
        .await
        .expect("resume")
        .into_inner();
    assert!(!resumed.paused);
    assert_eq!(resumed.next_fires.len(), 5);
    let unknown = client.pause_schedule(v1::SetSchedulePausedRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // Delete, then it is gone.
    client.delete_schedule(v1::DeleteScheduleRequest { name: "report".into() }).await.expect("delete");
    assert_eq!(get(&mut client, "report").await.unwrap_err().code(), Code::NotFound);
    let again = client.delete_schedule(v1::DeleteScheduleRequest { name: "report".into() }).await.unwrap_err();
    assert_eq!((again.code(), again.message()), (Code::NotFound, "name: no schedule \"report\""));
    let fires = client
        .list_schedule_fires(v1::ListScheduleFiresRequest { name: "report".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(fires.code(), Code::NotFound);

    // Every change is in the audit trail, without the args.
    let pool = stack.pool().await;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT action, resource, detail FROM audit_log WHERE action LIKE 'schedule.%' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let actions: Vec<(&str, &str)> = rows.iter().map(|(a, r, _)| (a.as_str(), r.as_str())).collect();
    for expected in [
        ("schedule.create", "schedules/report"),
        ("schedule.pause", "schedules/report"),
        ("schedule.resume", "schedules/report"),
        ("schedule.delete", "schedules/report"),
        ("schedule.create", "schedules/gamma"),
    ] {
        assert!(actions.contains(&expected), "{expected:?} not in {actions:?}");
    }
    let detail = |action: &str| -> serde_json::Value {
        let (_, _, detail) = rows.iter().find(|(a, r, _)| a == action && r == "schedules/report").unwrap();
        serde_json::from_str(detail).unwrap()
    };
    let created = detail("schedule.create");
    assert_eq!((created["function"].as_str(), created["cron"].as_str()), (Some("core.util.echo"), Some("30 2 * * *")));
    assert_eq!(created["paused"], json!(false));
    // Regression: the delete record's detail was empty; it names the schedule's id, as the others do.
    assert!(created["id"].is_string(), "{created}");
    for action in ["schedule.pause", "schedule.resume", "schedule.delete"] {
        assert_eq!(detail(action)["id"], created["id"], "{action}");
    }
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE detail LIKE '%do-not-log-me%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(logged, 0, "args reached the audit trail");
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_schedule_fires_and_its_history_pages_newest_first() {
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let mut client = schedules(&stack).await;
    let document = v1::Schedule {
        name: "tick".into(),
        function: "core.util.echo".into(),
        args: Some(json_to_value(&json!({"n": 1}))),
        interval_ms: Some(1000),
        timezone: "UTC".into(),
        ..v1::Schedule::default()
    };
    let created = create(&mut client, document).await.expect("create");
    assert_eq!((created.interval_ms, created.cron.as_deref()), (Some(1000), None));
    let anchor = timestamp_to_chrono(created.created_at.as_ref().unwrap()).unwrap();
    // Slots on the creation instant's grid.
    for slot in instants(&created.next_fires) {
        assert_eq!((slot - anchor).num_milliseconds() % 1000, 0, "{slot} is off the grid of {anchor}");
    }

    // The first slot fires a task; the task is never run here, so the next slots pass over it as
    // overlap (no allow_overlap).
    let lister = client.clone();
    let list = move |page_size: u32, page_token: String| {
        let mut client = lister.clone();
        async move {
            client
                .list_schedule_fires(v1::ListScheduleFiresRequest { name: "tick".into(), page_size, page_token })
                .await
                .expect("fires")
                .into_inner()
        }
    };
    let all = eventually("three slots dealt with", Duration::from_secs(30), || async {
        let page = list(1000, String::new()).await;
        (page.fires.len() >= 3).then_some(page.fires)
    })
    .await;
    let slots: Vec<DateTime<Utc>> =
        all.iter().map(|f| timestamp_to_chrono(f.slot.as_ref().unwrap()).unwrap()).collect();
    assert!(slots.windows(2).all(|w| w[0] > w[1]), "newest first: {slots:?}");
    let first = all.last().unwrap();
    assert_eq!(first.outcome, "fired", "{first:?}");
    assert!(!first.task_id.is_empty());
    assert!(["pending", "queued"].contains(&first.status.as_str()), "the task's status: {first:?}");
    assert!(first.epoch >= 1);
    let task = stack.tasks().await.get_task(v1::GetTaskRequest { id: first.task_id.clone() }).await.expect("task");
    assert_eq!(task.get_ref().function, "core.util.echo");
    let overlap = &all[0];
    assert_eq!((overlap.outcome.as_str(), overlap.status.as_str()), ("overlap", "overlap"), "{overlap:?}");
    assert!(overlap.task_id.is_empty());
    let read = get(&mut client, "tick").await.unwrap();
    assert!(read.last_fire.is_some());

    // Pages of one walk back through the history without repeats.
    let first_page = list(1, String::new()).await;
    assert_eq!(first_page.fires.len(), 1);
    assert!(first_page.next_page_token.starts_with("f1."), "{first_page:?}");
    let second_page = list(1, first_page.next_page_token.clone()).await;
    let newest = timestamp_to_chrono(first_page.fires[0].slot.as_ref().unwrap()).unwrap();
    let older = timestamp_to_chrono(second_page.fires[0].slot.as_ref().unwrap()).unwrap();
    assert!(older < newest);
    let bad = client
        .list_schedule_fires(v1::ListScheduleFiresRequest {
            name: "tick".into(),
            page_size: 1,
            page_token: "f1.0012".into(),
        })
        .await
        .unwrap_err();
    assert!(bad.message().starts_with("page_token: "), "{bad:?}");

    // Paused, it keeps its history and shows no next fires.
    let paused =
        client.pause_schedule(v1::SetSchedulePausedRequest { name: "tick".into() }).await.expect("pause").into_inner();
    assert!(paused.paused && paused.next_fires.is_empty());
    assert!(paused.last_fire.is_some());
    assert!(list(1000, String::new()).await.fires.len() >= all.len());
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_names_its_field() {
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let mut client = schedules(&stack).await;
    let mut chains = ChainServiceClient::new(stack.admin_channel().await);
    let relationship =
        v1::Relationship { trigger: "core.util.echo".into(), action: "core.util.noop".into(), ..Default::default() };
    chains
        .apply_chain(v1::ApplyChainRequest {
            chain: Some(v1::Chain {
                name: "after-echo".into(),
                relationships: vec![relationship],
                ..Default::default()
            }),
        })
        .await
        .expect("chain");

    let with = |edit: &dyn Fn(&mut v1::Schedule)| {
        let mut document = cron("x", "0 3 * * *");
        edit(&mut document);
        document
    };
    let cases: Vec<(v1::Schedule, Code, &str)> = vec![
        (with(&|d| d.name = "Bad Name".into()), Code::InvalidArgument, "name: "),
        (with(&|d| d.description = "d".repeat(1025)), Code::InvalidArgument, "description: "),
        (with(&|d| d.function = "core.util.nope".into()), Code::InvalidArgument, "function: unknown function"),
        (with(&|d| d.function = "core".into()), Code::InvalidArgument, "function: "),
        (with(&|d| d.args = Some(json_to_value(&json!([1])))), Code::InvalidArgument, "args: "),
        (with(&|d| d.priority = 10), Code::InvalidArgument, "priority: "),
        (with(&|d| d.max_attempts = Some(0)), Code::InvalidArgument, "max_attempts: "),
        (with(&|d| d.timeout_ms = Some(0)), Code::InvalidArgument, "timeout_ms: "),
        (with(&|d| d.region = Some("EU".into())), Code::InvalidArgument, "region: "),
        (
            with(&|d| d.transformation = Some(json_to_value(&json!({"engine": "jq", "expr": "{"})))),
            Code::InvalidArgument,
            "transformation.expr: ",
        ),
        (with(&|d| d.cron = Some("61 * * * *".into())), Code::InvalidArgument, "cron: "),
        // Regression: 31 February was accepted, with no next fires, and never fired.
        (
            with(&|d| d.cron = Some("0 0 31 2 *".into())),
            Code::InvalidArgument,
            "cron: \"0 0 31 2 *\" has no slot after now",
        ),
        (with(&|d| d.cron = None), Code::InvalidArgument, "cron: required"),
        (with(&|d| d.interval_ms = Some(1000)), Code::InvalidArgument, "cron: give either"),
        (with(&|d| d.timezone = "Mars/Olympus".into()), Code::InvalidArgument, "timezone: \"Mars/Olympus\" is not"),
        (
            with(&|d| {
                d.cron = None;
                d.interval_ms = Some(1000);
                d.timezone = "Europe/Berlin".into();
            }),
            Code::InvalidArgument,
            "timezone: only cron",
        ),
        (
            with(&|d| {
                d.cron = None;
                d.interval_ms = Some(999);
            }),
            Code::InvalidArgument,
            "interval_ms: must be 1000 to",
        ),
        (with(&|d| d.misfire = "later".into()), Code::InvalidArgument, "misfire: "),
        (with(&|d| d.allow_overlap = true), Code::InvalidArgument, "allow_overlap: only interval"),
        (with(&|d| d.chain = Some("missing".into())), Code::InvalidArgument, "chain: unknown chain \"missing\""),
        (
            with(&|d| {
                d.chain = Some("after-echo".into());
                d.function = "core.util.noop".into();
            }),
            Code::InvalidArgument,
            "chain: no active relationship",
        ),
    ];
    for (document, code, prefix) in cases {
        let status = create(&mut client, document).await.expect_err(prefix);
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(prefix), "{:?} should start with {prefix:?}", status.message());
    }
    let empty = client.create_schedule(v1::CreateScheduleRequest { schedule: None }).await.unwrap_err();
    assert_eq!((empty.code(), empty.message()), (Code::InvalidArgument, "schedule: required"));

    // A disabled extension is a precondition, as for a submit.
    let mut catalog = stack.catalog().await;
    catalog.disable_extension(v1::SetExtensionDisabledRequest { name: "core".into() }).await.expect("disable");
    let disabled = create(&mut client, cron("x", "0 3 * * *")).await.unwrap_err();
    assert_eq!(
        (disabled.code(), disabled.message()),
        (Code::FailedPrecondition, "function: extension \"core\" is disabled")
    );
    catalog.enable_extension(v1::SetExtensionDisabledRequest { name: "core".into() }).await.expect("enable");
    let mut chained = cron("chained", "0 3 * * *");
    chained.chain = Some("after-echo".into());
    assert_eq!(create(&mut client, chained).await.expect("a chain schedule").chain.as_deref(), Some("after-echo"));
    assert!(get(&mut client, "x").await.unwrap_err().code() == Code::NotFound, "nothing refused was created");

    // Previews: the scheduler's slots, the same refusals.
    let preview = client
        .preview_schedule(v1::PreviewScheduleRequest {
            cron: Some("30 2 * * *".into()),
            timezone: "America/New_York".into(),
            from: Some(legion_proto::timestamp("2026-03-07T00:00:00Z".parse().unwrap())),
            count: 3,
            ..Default::default()
        })
        .await
        .expect("preview")
        .into_inner();
    let slots: Vec<String> = instants(&preview.slots).iter().map(DateTime::to_rfc3339).collect();
    assert_eq!(slots, ["2026-03-07T07:30:00+00:00", "2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00"]);
    let refused = client
        .preview_schedule(v1::PreviewScheduleRequest { interval_ms: Some(5), ..Default::default() })
        .await
        .unwrap_err();
    assert!(refused.message().starts_with("interval_ms: "), "{refused:?}");
    let refused = client
        .preview_schedule(v1::PreviewScheduleRequest {
            cron: Some("* * * * *".into()),
            count: 1001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused.message().starts_with("count: "), "{refused:?}");
    let mut anonymous = ScheduleServiceClient::new(stack.channel_as(Credential::none()).await);
    let unauthenticated = anonymous
        .preview_schedule(v1::PreviewScheduleRequest { interval_ms: Some(1000), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let unauthenticated = create(&mut anonymous, cron("y", "bad")).await.unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated, "who before what");
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_key_schedules_only_what_it_may_run_and_learns_no_chain() {
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let mut chains = ChainServiceClient::new(stack.admin_channel().await);
    let relationship =
        v1::Relationship { trigger: "core.util.echo".into(), action: "core.util.noop".into(), ..Default::default() };
    chains
        .apply_chain(v1::ApplyChainRequest {
            chain: Some(v1::Chain {
                name: "secret-chain".into(),
                relationships: vec![relationship],
                ..Default::default()
            }),
        })
        .await
        .expect("chain");
    let mut key = limited(
        &stack,
        "scheduler-of-echo",
        vec![
            rule("schedules/*", &["create", "read", "list", "update", "delete"]),
            rule("tasks/*", &["create", "read", "list"]),
            rule("runners/core/util/echo", &["execute"]),
        ],
    )
    .await;

    let mut noop = cron("noop-nightly", "0 3 * * *");
    noop.function = "core.util.noop".into();
    let denied = create(&mut key, noop).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("runners/core/util/noop"), "{denied:?}");
    // Authorization comes before the catalog: an unknown function is not confirmed to this caller.
    let mut unknown = cron("unknown", "0 3 * * *");
    unknown.function = "secret.thing.run".into();
    assert_eq!(create(&mut key, unknown).await.unwrap_err().code(), Code::PermissionDenied);

    // A chain it may not execute: the same answer whether the chain exists or not.
    let mut existing = cron("chained", "0 3 * * *");
    existing.chain = Some("secret-chain".into());
    let mut missing = existing.clone();
    missing.chain = Some("no-such-chain".into());
    let a = create(&mut key, existing).await.unwrap_err();
    let b = create(&mut key, missing).await.unwrap_err();
    assert_eq!((a.code(), b.code()), (Code::PermissionDenied, Code::PermissionDenied));
    assert_eq!(
        a.message().replace("secret-chain", "NAME"),
        b.message().replace("no-such-chain", "NAME"),
        "the answers differ only by the name asked"
    );

    // With `execute` on the chain but not on its action's runner, still refused.
    let mut chain_runner = limited(
        &stack,
        "chain-runner",
        vec![
            rule("schedules/*", &["create"]),
            rule("tasks/*", &["create"]),
            rule("chains/*", &["execute"]),
            rule("runners/core/util/echo", &["execute"]),
        ],
    )
    .await;
    let mut chained = cron("chained", "0 3 * * *");
    chained.chain = Some("secret-chain".into());
    let denied = create(&mut chain_runner, chained).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("runners/core/util/noop"), "{denied:?}");

    // What it may run, it may schedule; the schedule is its own.
    let created = create(&mut key, cron("echo-nightly", "0 3 * * *")).await.expect("create");
    assert!(created.created_by.starts_with("api-key/"));
    let admin_view = get(&mut schedules(&stack).await, "echo-nightly").await.unwrap();
    assert_eq!(admin_view.created_by, created.created_by);
    let pool = stack.pool().await;
    let policies: Vec<String> =
        sqlx::query_scalar("SELECT unnest(policies) FROM schedules WHERE name = 'echo-nightly'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(policies, ["scheduler-of-echo"]);

    // Reading needs `read` on the schedule: `list` alone enumerates nothing it may not read.
    let mut reader = limited(&stack, "nothing-but-list", vec![rule("schedules/", &["list"])]).await;
    let listed = reader.list_schedules(v1::ListSchedulesRequest::default()).await.expect("list").into_inner();
    assert!(listed.schedules.is_empty() && listed.next_page_token.is_empty(), "{listed:?}");
    assert_eq!(get(&mut reader, "echo-nightly").await.unwrap_err().code(), Code::PermissionDenied);
    let delete = reader.delete_schedule(v1::DeleteScheduleRequest { name: "echo-nightly".into() }).await;
    assert_eq!(delete.unwrap_err().code(), Code::PermissionDenied);
    // Denials are audited with the path asked for.
    let denials: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE decision = 'deny' AND resource = 'chains/no-such-chain'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(denials, 1);
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_nodes_shows_the_replica_leading_with_its_epoch() {
    let stack = Stack::start(true, |_| {}).await;
    let mut catalog = stack.catalog().await;
    let nodes = eventually("the replica to lead", Duration::from_secs(30), || {
        let mut catalog = catalog.clone();
        async move {
            let nodes = catalog.list_nodes(v1::ListNodesRequest {}).await.expect("list nodes").into_inner();
            (nodes.control_planes.len() == 1 && nodes.control_planes[0].leader).then_some(nodes)
        }
    })
    .await;
    let replica = &nodes.control_planes[0];
    let leadership = nodes.leadership.as_ref().expect("the lease");
    assert_eq!(leadership.holder, replica.name);
    assert_eq!(leadership.epoch, 1, "the first holder of a fresh database's lease");
    let expires = timestamp_to_chrono(leadership.expires_at.as_ref().unwrap()).unwrap();
    assert!(expires > Utc::now() - chrono::Duration::seconds(1), "{expires}");
    assert!(!replica.version.is_empty());
    let seen = |t: &Option<prost_types::Timestamp>| timestamp_to_chrono(t.as_ref().unwrap()).unwrap();
    assert!(seen(&replica.last_seen) >= seen(&replica.started_at));
    // The replica is not an executor node.
    assert!(nodes.nodes.iter().all(|n| n.name != replica.name), "{nodes:?}");
    let again = catalog.list_nodes(v1::ListNodesRequest {}).await.expect("list nodes").into_inner();
    assert_eq!(again.leadership.as_ref().map(|l| l.epoch), Some(1), "a renewal keeps the epoch");
    stack.stop().await.expect("clean stop");
}
