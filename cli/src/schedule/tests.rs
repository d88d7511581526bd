mod fake;

use clap::Parser;
use serde_json::{Value, json};

use super::*;
use crate::args::{Cli, Command};
use crate::testing::legion;

fn parse(line: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("legion").chain(line.iter().copied()))
}

fn schedule_command(line: &[&str]) -> ScheduleCommand {
    match parse(line).expect("parses").command {
        Command::Schedule { command } => command,
        other => panic!("not a schedule command: {other:?}"),
    }
}

/// Runs a command line that needs no control plane.
async fn offline(line: &[&str]) -> (Result<u8, Error>, String) {
    let mut out = Vec::new();
    let result = crate::run_with_input(parse(line).expect("parses"), std::io::empty(), &mut out).await;
    (result, String::from_utf8(out).expect("utf-8"))
}

#[tokio::test]
async fn preview_prints_the_slots_of_the_scheduler_locally() {
    let line = [
        "schedule",
        "preview",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "America/New_York",
        "--from",
        "2026-03-07T00:00:00Z",
        "--count",
        "3",
    ];
    let (result, out) = offline(&line).await;
    assert_eq!(result.expect("runs"), 0);
    assert_eq!(out, "2026-03-07T07:30:00Z\n2026-03-08T07:00:00Z\n2026-03-09T06:30:00Z\n");

    let (result, out) = offline(&[
        "schedule",
        "preview",
        "--interval-ms",
        "90000",
        "--from",
        "2026-03-07T01:00:00.5+01:00",
        "--count",
        "2",
    ])
    .await;
    assert_eq!((result.expect("runs"), out.as_str()), (0, "2026-03-07T00:01:30.500Z\n2026-03-07T00:03:00.500Z\n"));
    let (_, out) =
        offline(&["schedule", "preview", "--every", "1h 30m", "--from", "2026-03-07T00:00:00Z", "--count", "1"]).await;
    assert_eq!(out, "2026-03-07T01:30:00Z\n");
    let (_, out) = offline(&["schedule", "preview", "--cron", "0 0 1 1 *", "--from", "2026-03-07T00:00:00Z"]).await;
    assert_eq!(out.lines().count(), 5, "default count: {out}");
    assert!(out.starts_with("2027-01-01T00:00:00Z\n2028-01-01T00:00:00Z\n"), "{out}");
}

/// Regression: without --from, an interval was counted from now rounded down to the second, while
/// `GET /api/v1/schedule-preview` counts from the exact instant.
#[test]
fn preview_counts_an_interval_from_the_exact_instant() {
    let ScheduleCommand::Preview(preview) =
        schedule_command(&["schedule", "preview", "--interval-ms", "90000", "--count", "2"])
    else {
        panic!("not preview");
    };
    let now = crate::args::parse_instant("2026-03-07T00:00:00.123456789Z").expect("instant");
    let slots: Vec<String> = preview_slots(&preview, now).expect("slots").iter().map(output::instant).collect();
    assert_eq!(slots, ["2026-03-07T00:01:30.123456789Z", "2026-03-07T00:03:00.123456789Z"]);
}

#[tokio::test]
async fn preview_errors_name_the_flag_and_exit_64() {
    for (line, expected) in [
        (&["--cron", "30 2 * *"][..], "--cron: \"30 2 * *\" has 4 fields"),
        (&["--cron", "61 * * * *"], "--cron: \"61 * * * *\": "),
        (
            &["--cron", "0 * * * *", "--timezone", "Mars/Base"],
            "--timezone: \"Mars/Base\" is not an IANA time zone name",
        ),
        // Regression: a cron expression that never matches printed nothing and exited 0.
        (
            &["--cron", "0 0 31 2 *", "--from", "2026-03-07T00:00:00.5+01:00"],
            "--cron: \"0 0 31 2 *\" has no slot after 2026-03-06T23:00:00.500Z",
        ),
    ] {
        let line: Vec<&str> = ["schedule", "preview"].iter().chain(line).copied().collect();
        let (result, out) = offline(&line).await;
        let err = result.expect_err("refused");
        assert!(err.to_string().starts_with(expected), "{err}");
        assert_eq!((err.exit_code(), out.as_str()), (64, ""), "{err}");
    }
    // What clap refuses (exit 64 from main) names the flag too.
    for (line, expected) in [
        (&["--every", "500ms"][..], "'--every <DURATION>': must be 1s to 366d"),
        (&["--every", "367d"], "'--every <DURATION>': must be 1s to 366d"),
        (&["--every", "1.0005s"], "is not a whole number of milliseconds"),
        (&["--every", "5 parsecs"], "'--every <DURATION>': unknown time unit"),
        (&["--interval-ms", "5m"], "'--interval-ms <MS>': must be a whole number of milliseconds"),
        (&["--cron", "* * * * *", "--from", "today"], "'--from <TIME>': must be an RFC 3339 time"),
        (&["--cron", "* * * * *", "--count", "0"], "'--count <N>'"),
        (&["--every", "5m", "--timezone", "UTC"], "cannot be used with '--timezone <TZ>'"),
        (&["--cron", "* * * * *", "--every", "5m"], "cannot be used with"),
        (&[], "the following required arguments were not provided"),
    ] {
        let line: Vec<&str> = ["schedule", "preview"].iter().chain(line).copied().collect();
        let err = parse(&line).expect_err("refused");
        assert!(err.use_stderr() && err.to_string().contains(expected), "{line:?}: {err}");
    }
}

#[test]
fn durations_are_whole_milliseconds_within_the_interval_range() {
    for (text, ms) in [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1h 30m", 5_400_000),
        ("1.5s", 1500),
        ("366d", 31_622_400_000),
    ] {
        assert_eq!(crate::args::parse_every(text), Ok(ms), "{text}");
    }
    assert_eq!(crate::args::parse_interval_ms("1000"), Ok(1000));
    assert!(crate::args::parse_interval_ms("999").is_err());
    assert!(crate::args::parse_interval_ms("31622400001").is_err());
}

#[test]
fn add_takes_every_flag_and_refuses_mixed_definitions() {
    let ScheduleCommand::Add(add) = schedule_command(&[
        "schedule",
        "add",
        "nightly",
        "--function",
        "http.request.get",
        "--args",
        r#"{"url":"http://x"}"#,
        "--every",
        "5m",
        "--allow-overlap",
        "--chain",
        "report",
        "--priority",
        "9",
        "--max-attempts",
        "3",
        "--timeout-ms",
        "5000",
        "--region",
        "eu",
        "--misfire",
        "skip",
        "--transformation",
        r#"{"engine":"jq","expr":".args"}"#,
        "--description",
        "reports",
        "--paused",
    ]) else {
        panic!("not add");
    };
    let json = add.json;
    let s = add_request(*add, std::io::empty()).expect("valid").schedule.expect("schedule");
    assert_eq!(
        (s.name.as_str(), s.function.as_str(), s.description.as_str()),
        ("nightly", "http.request.get", "reports")
    );
    assert_eq!(s.args.as_ref().map(legion_proto::value_to_json), Some(json!({"url": "http://x"})));
    assert_eq!(
        s.transformation.as_ref().map(legion_proto::value_to_json),
        Some(json!({"engine": "jq", "expr": ".args"}))
    );
    assert_eq!((s.cron, s.interval_ms, s.allow_overlap, s.timezone.as_str()), (None, Some(300_000), true, ""));
    assert_eq!((s.chain.as_deref(), s.region.as_deref(), s.misfire.as_str()), (Some("report"), Some("eu"), "skip"));
    assert_eq!((s.priority, s.max_attempts, s.timeout_ms, json), (9, Some(3), Some(5000), false));
    assert!(s.paused, "--paused creates it paused");
    let ScheduleCommand::Add(add) = schedule_command(&["schedule", "add", "x", "--function", "f", "--every", "5m"])
    else {
        panic!("not add");
    };
    assert!(!add_request(*add, std::io::empty()).expect("valid").schedule.expect("schedule").paused, "running");
    let file = r#"{"name":"x","function":"f","interval_ms":60000,"paused":false}"#;
    let ScheduleCommand::Add(add) = schedule_command(&["schedule", "add", "--file", "-", "--paused"]) else {
        panic!("not add");
    };
    let s = add_request(*add, file.as_bytes()).expect("valid").schedule.expect("schedule");
    assert!(s.paused, "--paused overrides the file's paused");

    for (line, expected) in [
        (&["x", "--function", "f", "--cron", "* * * * *", "--allow-overlap"][..], "cannot be used with"),
        (&["x", "--function", "f", "--every", "5m", "--timezone", "UTC"], "cannot be used with"),
        (&["x", "--function", "f", "--every", "5m", "--misfire", "later"], "invalid value 'later' for '--misfire"),
        (&["x", "--function", "f"], "the following required arguments were not provided"),
        (&["x", "--cron", "* * * * *"], "--function <FUNCTION>"),
        (&["--function", "f", "--every", "5m"], "<NAME>"),
        (&["x", "--file", "s.yaml", "--function", "f"], "cannot be used with"),
        (&["x", "--file", "s.yaml", "--cron", "* * * * *"], "cannot be used with"),
    ] {
        let line: Vec<&str> = ["schedule", "add"].iter().chain(line).copied().collect();
        let err = parse(&line).expect_err("refused");
        assert!(err.to_string().contains(expected), "{line:?}: {err}");
    }
    let ScheduleCommand::Add(add) =
        schedule_command(&["schedule", "add", "x", "--function", "f", "--cron", "0 25 * * *", "--timezone", "UTC"])
    else {
        panic!("not add");
    };
    let err = add_request(*add, std::io::empty()).expect_err("refused before any call");
    assert!(err.to_string().starts_with("--cron: \"0 25 * * *\": "), "{err}");
    assert_eq!(err.exit_code(), 64);
}

#[test]
fn schedule_files_are_read_as_the_rest_body() {
    let yaml =
        "name: nightly\nfunction: core.util.echo\ncron: '30 2 * * *'\ntimezone: America/New_York\nargs: {a: 1}\n";
    let body = read_schedule(Path::new("-"), None, yaml.as_bytes()).expect("yaml");
    assert_eq!(
        (body.name.as_str(), body.cron.as_deref(), body.args),
        ("nightly", Some("30 2 * * *"), Some(json!({"a": 1})))
    );
    let body = read_schedule(Path::new("-"), Some("other"), yaml.as_bytes()).expect("yaml");
    assert_eq!(body.name, "other", "NAME overrides the file's name");
    let json = r#"{"function":"core.util.echo","interval_ms":60000,"paused":true,"next_fires":[]}"#;
    let body = read_schedule(Path::new("-"), Some("given"), json.as_bytes()).expect("the name comes from NAME");
    assert_eq!((body.name.as_str(), body.interval_ms), ("given", Some(60_000)));

    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text, expected) in [
        ("a.yaml", "name: s\nfunction: f\nevery: 5m\n", "a.yaml: every: unknown field"),
        ("b.json", "{\"name\": ", "b.json: not valid JSON"),
        ("c.yml", "function: f\ninterval_ms: 1000\n", "c.yml: name: required"),
        ("d.yaml", "name: s\nfunction: f\ncron: '* * *'\n", "d.yaml: cron: \"* * *\" has 3 fields"),
        ("e.yaml", "name: s\nfunction: f\ncron: '* * * * *'\ntimezone: Mars/Base\n", "e.yaml: timezone: \"Mars/Base\""),
    ] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("write");
        let err = read_schedule(&file, None, std::io::empty()).expect_err(name);
        assert!(err.to_string().starts_with(&format!("{}", file.display())), "{err}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert_eq!(err.exit_code(), 64);
    }
    let err = read_schedule(&dir.path().join("missing.yaml"), None, std::io::empty()).expect_err("unreadable");
    assert!(err.to_string().starts_with("cannot read "), "{err}");
}

#[tokio::test]
async fn schedules_are_added_shown_listed_paused_resumed_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, state) = fake::serve(dir.path()).await;
    let run = |args: &'static [&'static str]| legion(addr, dir.path(), args, b"");

    let (result, out) = run(&[
        "schedule",
        "add",
        "nightly",
        "--function",
        "core.util.echo",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "America/New_York",
        "--misfire",
        "skip",
    ])
    .await;
    assert_eq!(result.expect("created"), 0);
    let sent = state.created.lock().expect("lock")[0].clone();
    assert_eq!(
        (sent.cron.as_deref(), sent.timezone.as_str(), sent.misfire.as_str()),
        (Some("30 2 * * *"), "America/New_York", "skip")
    );
    assert_eq!(sent.args.as_ref().map(legion_proto::value_to_json), Some(json!({})));
    let expected = "\
name:           nightly
description:    -
function:       core.util.echo
args:           {}
transformation: -
chain:          -
cadence:        cron \"30 2 * * *\" in America/New_York
misfire:        skip
priority:       0
max_attempts:   -
timeout_ms:     -
retry:          -
region:         -
state:          running
created:        2026-03-07T00:00:00Z by api-key/test
updated:        2026-03-07T00:00:00Z
next fires:     2026-03-07T07:30:00Z
                2026-03-08T07:00:00Z
                2026-03-09T06:30:00Z
                2026-03-10T06:30:00Z
                2026-03-11T06:30:00Z
last fire:      2026-03-07T00:00:00Z fired: task 0190f5c8-7e4a-7b3c-9d2e-000000000002 (succeeded)
";
    assert_eq!(out, expected);
    assert_eq!(run(&["schedule", "show", "nightly"]).await.1, expected);

    let (result, _) = run(&["schedule", "add", "nightly", "--function", "core.util.echo", "--every", "5m"]).await;
    let err = result.expect_err("taken");
    assert_eq!((err.to_string().as_str(), err.exit_code()), ("ALREADY_EXISTS: schedule nightly already exists", 1));

    let (result, out) =
        run(&["schedule", "add", "tick", "--function", "core.util.noop", "--every", "90s", "--json"]).await;
    assert_eq!(result.expect("created"), 0);
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (&shown["interval_ms"], &shown["cron"], &shown["timezone"]),
        (&json!(90_000), &Value::Null, &json!("UTC"))
    );
    assert_eq!(shown["next_fires"][0], "2026-03-07T00:01:30Z");

    let (_, out) = run(&["schedule", "list"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("NAME     CADENCE") && lines[0].ends_with("NEXT_FIRE             LAST_FIRE"), "{out}");
    assert!(
        lines[1].starts_with("nightly  30 2 * * * America/New_York  core.util.echo  running  2026-03-07T07:30:00Z"),
        "{out}"
    );
    assert!(lines[2].starts_with("tick     every 1m 30s"), "{out}");
    assert!(lines[2].ends_with("2026-03-07T00:00:00Z fired"), "{out}");
    assert_eq!(
        *state.page_sizes.lock().expect("lock"),
        [PAGE_SIZE, PAGE_SIZE],
        "one page per schedule, tokens followed"
    );

    assert_eq!(run(&["schedule", "pause", "nightly"]).await.1, "schedule nightly paused\n");
    let (_, out) = run(&["schedule", "show", "nightly"]).await;
    assert!(out.contains("\nstate:          paused\n") && out.contains("\nnext fires:     none (paused)\n"), "{out}");
    assert_eq!(
        run(&["schedule", "resume", "nightly"]).await.1,
        "schedule nightly running, next fire 2026-03-07T07:30:00Z\n"
    );

    let (result, out) = run(&["schedule", "delete", "nightly"]).await;
    assert_eq!((result.expect("deleted"), out.as_str()), (0, ""));
    let err = run(&["schedule", "show", "nightly"]).await.0.expect_err("gone");
    assert_eq!(err.to_string(), "NOT_FOUND: schedule nightly not found");
}

#[tokio::test]
async fn fires_print_as_a_table_or_as_the_rest_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, state) = fake::serve(dir.path()).await;
    let run = |args: &'static [&'static str]| legion(addr, dir.path(), args, b"");
    run(&["schedule", "add", "tick", "--function", "core.util.noop", "--interval-ms", "300000"])
        .await
        .0
        .expect("created");

    let (result, out) = run(&["schedule", "fires", "tick"]).await;
    assert_eq!(result.expect("listed"), 0);
    let expected = "\
SLOT                  OUTCOME  STATUS     TASK_ID                               FIRED_AT                  MISSED  REASON
2026-03-07T00:00:00Z  fired    succeeded  0190f5c8-7e4a-7b3c-9d2e-000000000002  2026-03-07T00:00:00.250Z  0       -
2026-03-06T23:55:00Z  overlap  overlap    -                                     2026-03-06T23:55:00Z      0       the previous task is unfinished
2026-03-06T23:50:00Z  fired    failed     0190f5c8-7e4a-7b3c-9d2e-000000000001  2026-03-06T23:50:10Z      2       catch-up for 3 slots
";
    assert_eq!(out, expected);
    let (_, out) = run(&["schedule", "fires", "tick", "--limit", "2"]).await;
    assert!(out.ends_with("\nmore: legion schedule fires tick --page-token 2\n"), "{out}");
    let (_, out) = run(&["schedule", "fires", "tick", "--limit", "2", "--page-token", "2", "--json"]).await;
    let page: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        page,
        json!({"fires": [{"slot": "2026-03-06T23:50:00Z", "fired_at": "2026-03-06T23:50:10Z",
            "task_id": "0190f5c8-7e4a-7b3c-9d2e-000000000001", "status": "failed", "outcome": "fired",
            "reason": "catch-up for 3 slots", "missed": 2, "epoch": 3}], "next_page_token": null})
    );
    assert_eq!(*state.page_sizes.lock().expect("lock"), [20, 2, 2], "--limit is the page size, 20 by default");
    let err = run(&["schedule", "fires", "nope"]).await.0.expect_err("unknown");
    assert_eq!((err.to_string().as_str(), err.exit_code()), ("NOT_FOUND: schedule nope not found", 1));
}

/// `show --json` prints the REST shape, which `add --file` takes back under another name. Regression:
/// a paused schedule was created again running; it is created paused.
#[tokio::test]
async fn a_shown_schedule_is_added_again_from_its_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, state) = fake::serve(dir.path()).await;
    let run = |args: &'static [&'static str], stdin: &'static [u8]| legion(addr, dir.path(), args, stdin);
    let line = &[
        "schedule",
        "add",
        "tick",
        "--function",
        "core.util.noop",
        "--every",
        "1m",
        "--args",
        r#"{"n":1}"#,
        "--allow-overlap",
    ];
    run(line, b"").await.0.expect("created");
    run(&["schedule", "pause", "tick"], b"").await.0.expect("paused");
    let (_, shown) = run(&["schedule", "show", "tick", "--json"], b"").await;
    let (result, out) =
        legion(addr, dir.path(), &["schedule", "add", "tock", "--file", "-", "--json"], shown.as_bytes()).await;
    assert_eq!(result.expect("added"), 0);
    let (before, after): (Value, Value) =
        (serde_json::from_str(&shown).expect("json"), serde_json::from_str(&out).expect("json"));
    assert_eq!((&after["name"], &after["paused"]), (&json!("tock"), &json!(true)), "created paused, as exported");
    assert_eq!(after["next_fires"], json!([]));
    for member in ["function", "args", "interval_ms", "allow_overlap", "timezone", "misfire"] {
        assert_eq!(after[member], before[member], "{member}");
    }
    let sent = state.created.lock().expect("lock")[1].clone();
    assert!(sent.paused, "paused is sent");
    assert!(sent.created_by.is_empty() && sent.last_fire.is_none() && sent.next_fires.is_empty(), "output only");
}

#[test]
fn fires_and_cadences_read_as_words() {
    let fire = legion_gateway::view::ScheduleFire {
        slot: None,
        fired_at: None,
        task_id: None,
        status: "missed".into(),
        outcome: "missed".into(),
        reason: None,
        missed: 1,
        epoch: 2,
    };
    assert_eq!(output::fire_summary(&fire), "- missed; 1 earlier slot missed");
    let with_reason = legion_gateway::view::ScheduleFire { reason: Some("policy skip".into()), missed: 0, ..fire };
    assert_eq!(output::fire_summary(&with_reason), "- missed: policy skip");

    let schedule =
        Schedule::from(&v1::Schedule { name: "s".into(), interval_ms: Some(3_600_500), ..v1::Schedule::default() });
    assert_eq!(output::cadence(&schedule), "every 1h 500ms (3600500 ms), no overlap");
    assert_eq!(output::paused_line(&schedule), "schedule s running, no next fire");

    let retry = v1::RetryPolicy { initial_backoff_ms: Some(200), jitter: Some(0.0), ..v1::RetryPolicy::default() };
    let with_retry = Schedule::from(&v1::Schedule { retry: Some(retry), ..v1::Schedule::default() });
    let mut shown = Vec::new();
    output::write_schedule(&mut shown, &with_retry).expect("written");
    let shown = String::from_utf8(shown).expect("utf-8");
    assert!(shown.contains("retry:          {\"initial_backoff_ms\":200,\"jitter\":0.0}\n"), "{shown}");
}
