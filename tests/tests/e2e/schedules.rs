//! Schedules end to end (DESIGN.md section 4, docs/schedules.md): a killed leader is replaced by
//! another replica and every slot is still dealt with exactly once; an interval schedule never runs
//! two tasks at once unless `allow_overlap`; downtime is caught up once (`fire_once`) or skipped
//! (`skip`); pausing keeps the history and resuming does not catch up; the CLI.
//!
//! Every check reads `schedule_fires` and `tasks` from the test's database, in microseconds of
//! PostgreSQL's clock, the clock the scheduler decides with (see `legion_tests::schedules`). Sleeps
//! only let the scenario's time pass (a downtime, a pause); what is checked is awaited with deadlines.

use std::time::Duration;

use legion_proto::json_to_value;
use legion_tests::schedules::{self, FireRow, US_PER_MS};
use legion_tests::{ExecutorOptions, TestEnv, assert_eventually, replicas, wait};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::LONG;

/// The period of every schedule here.
const INTERVAL_MS: u64 = 1000;
const INTERVAL_US: i64 = 1_000_000;

/// Allowance for a loaded 2-core machine in the time bounds below.
const SLACK_US: i64 = 2_000_000;

/// `(rows, fired rows)` of schedule `name` with a slot after `after_us`, for probes.
async fn counted(pool: &PgPool, name: &str, after_us: i64) -> Result<(usize, usize), String> {
    let rows = schedules::probe_fires(pool, name).await?;
    let later: Vec<&FireRow> = rows.iter().filter(|r| r.slot_us > after_us).collect();
    Ok((later.len(), later.iter().filter(|r| r.outcome == "fired").count()))
}

/// Waits until schedule `name` has fired at least `n` slots after `after_us`.
async fn wait_fired(pool: &PgPool, name: &str, n: usize, after_us: i64) {
    assert_eventually!(LONG, &format!("{name}: {n} slots fired"), || async {
        match counted(pool, name, after_us).await? {
            (_, fired) if fired >= n => Ok(()),
            (rows, fired) => Err(format!("{rows} rows, {fired} fired")),
        }
    });
}

/// Every row of `name` (oldest first) after checking that its slots are accounted for from its
/// anchor.
async fn accounted_rows(pool: &PgPool, name: &str) -> Vec<FireRow> {
    let rows = schedules::fires(pool, name).await.expect("read schedule_fires");
    let (anchor, _) = schedules::times(pool, name).await.expect("read the schedule");
    schedules::check_accounting(anchor, INTERVAL_US, &rows).unwrap_or_else(|e| panic!("{name}: {e}\n{rows:#?}"));
    rows
}

/// Lease of the failover test: short, so that a replica takes over within seconds.
const LEASE_MS: u64 = 3000;
/// How often the leader looks for schedules created through another replica.
const POLL_MS: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_every_slot_is_dealt_with_once() {
    let settings = json!({"control_plane": {"leader_lease_ms": LEASE_MS, "schedule_poll_ms": POLL_MS}});
    let mut env = TestEnv::start_with_settings(settings).await.expect("control plane starts");
    let pool = env.db().pool().await.expect("pool");
    let catalog = env.catalog();
    // Started one at a time, so that each new name in ListNodes is the process just started.
    let mut names = vec![replicas::new_replica_name(&catalog, &[], LONG).await.expect("the first replica listed")];
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(env.start_replica().await.expect("replica starts"));
        names.push(replicas::new_replica_name(&catalog, &names, LONG).await.expect("the new replica listed"));
    }
    // The executor and the test's calls use a replica that does not lead (never the env's own, which
    // may be the one killed).
    let first = replicas::wait_leadership(&catalog, LONG, |l| names.contains(&l.holder)).await.expect("a leader");
    let survivor_index = usize::from(names[1] == first.holder);
    let (survivor, survivor_name) = (&others[survivor_index], names[survivor_index + 1].clone());
    let (client, survivor_catalog) = (survivor.schedules(), survivor.catalog());
    let options = ExecutorOptions { control_plane: Some(survivor.grpc_addr()), ..ExecutorOptions::default() };
    let _executor = env.start_executor(&options).await.expect("executor starts");

    let mut schedule = schedules::every("failover", "core.util.echo", &json!({}), INTERVAL_MS);
    schedule.transformation = Some(json_to_value(&json!({"engine": "jq", "expr": "{slot: .schedule.slot}"})));
    schedules::create(&client, schedule).await.expect("CreateSchedule through a replica that does not lead");
    // About 30 slots in all: ten before the kill, twenty after it.
    wait_fired(&pool, "failover", 10, 0).await;

    // The leader now (it may have changed since, on a loaded machine), killed without a chance to
    // release its lease.
    let killed =
        replicas::wait_leadership(&survivor_catalog, LONG, |l| names.contains(&l.holder)).await.expect("a leader");
    assert_ne!(killed.holder, survivor_name, "the lease moved to the replica the test talks through; cannot kill it");
    match names.iter().position(|n| *n == killed.holder) {
        Some(0) => env.kill_control_plane(),
        Some(i) => others[i - 1].kill(),
        None => panic!("the leader {killed:?} is none of {names:?}"),
    }
    let killed_us = schedules::now_us(&pool).await.expect("now");
    let taken = replicas::wait_leadership(&survivor_catalog, LONG, |l| l.holder != killed.holder)
        .await
        .expect("another replica takes the lease");
    assert!(taken.epoch > killed.epoch, "the epoch moves on with the holder: {killed:?} then {taken:?}");
    assert!(names.contains(&taken.holder), "{taken:?} is one of {names:?}");
    wait_fired(&pool, "failover", 20, killed_us).await;
    schedules::set_paused(&client, "failover", true).await.expect("PauseSchedule");

    let rows = accounted_rows(&pool, "failover").await;
    assert!(
        rows.iter().all(|r| matches!(r.outcome.as_str(), "fired" | "overlap")),
        "fire_once: a missed slot is caught up by a fire, nothing fails: {rows:#?}"
    );
    // A replica retries the lease every third of it, so the newest slot before the takeover is at most
    // a lease, a retry period, a poll and an interval older than the first one after it.
    let bound = i64::try_from(LEASE_MS + LEASE_MS / 3 + POLL_MS + INTERVAL_MS).expect("small") * US_PER_MS + SLACK_US;
    let (gap, at) = schedules::largest_gap(&rows).expect("several rows");
    eprintln!("failover: {} rows, largest gap {} ms (bound {} ms)", rows.len(), gap / US_PER_MS, bound / US_PER_MS);
    assert!(gap <= bound, "{gap} µs without a slot dealt with (bound {bound} µs), up to {at:?}");
    assert!(rows.windows(2).all(|w| w[0].epoch <= w[1].epoch), "epochs only grow along the slots: {rows:#?}");
    let newest = rows.last().expect("rows");
    assert!(newest.epoch >= taken.epoch && newest.epoch > killed.epoch, "{newest:?} after {taken:?}");
    assert!(rows.iter().any(|r| r.epoch == killed.epoch), "the killed leader dealt with slots: {rows:#?}");

    let tasks = assert_eventually!(LONG, "every echo task ended", || async {
        let tasks = schedules::tasks_of(&pool, "core.util.echo").await.map_err(|e| format!("read tasks: {e}"))?;
        let running = tasks.iter().filter(|t| schedules::UNFINISHED.contains(&t.status.as_str())).count();
        if running == 0 { Ok(tasks) } else { Err(format!("{running} of {} unfinished", tasks.len())) }
    });
    schedules::check_one_to_one(&rows, &tasks).unwrap_or_else(|e| panic!("{e}\nrows: {rows:#?}\ntasks: {tasks:#?}"));
    let failed: Vec<_> = tasks.iter().filter(|t| t.status != "succeeded").collect();
    assert!(failed.is_empty(), "every fired task succeeded: {failed:#?}");
}

/// How long each `core.util.sleep` of the overlap test runs.
const SLEEP_MS: u64 = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_schedule_never_overlaps_its_previous_task_unless_allowed() {
    let env = TestEnv::start().await.expect("control plane starts");
    let options = ExecutorOptions { concurrency: 8, ..ExecutorOptions::default() };
    let _executor = env.start_executor(&options).await.expect("executor starts");
    let pool = env.db().pool().await.expect("pool");
    let client = env.schedules().expect("ScheduleService client");
    let sleep = json!({"ms": SLEEP_MS});
    schedules::create(&client, schedules::every("serial", "core.util.sleep", &sleep, INTERVAL_MS))
        .await
        .expect("CreateSchedule serial");
    let mut overlapping = schedules::every("overlapping", "core.util.sleep", &sleep, INTERVAL_MS);
    overlapping.allow_overlap = true;
    schedules::create(&client, overlapping).await.expect("CreateSchedule overlapping");

    assert_eventually!(LONG, "three serial sleeps ended, slots passed over, parallel sleeps", || async {
        let rows = schedules::probe_fires(&pool, "serial").await?;
        let read = |e: sqlx::Error| format!("read attempts: {e}");
        let ended = schedules::attempts(&pool, "serial")
            .await
            .map_err(read)?
            .iter()
            .filter(|s| s.finished_us.is_some())
            .count();
        let passed = rows.iter().filter(|r| r.outcome == "overlap").count();
        let parallel =
            schedules::first_overlap(&schedules::attempts(&pool, "overlapping").await.map_err(read)?).is_some();
        if ended >= 3 && passed >= 4 && parallel {
            Ok(())
        } else {
            Err(format!(
                "serial: {ended} attempts ended, {passed} slots passed over; overlapping ran in parallel: {parallel}"
            ))
        }
    });
    for name in ["serial", "overlapping"] {
        schedules::set_paused(&client, name, true).await.expect("PauseSchedule");
    }
    let serial_tasks =
        assert_eventually!(LONG, "the serial tasks ended", || schedules::all_fired_terminal(&pool, "serial"));
    assert_eventually!(LONG, "the overlapping tasks ended", || schedules::all_fired_terminal(&pool, "overlapping"));

    let rows = accounted_rows(&pool, "serial").await;
    let spans = schedules::attempts(&pool, "serial").await.expect("attempts");
    assert!(spans.len() >= 3, "{spans:#?}");
    assert_eq!(schedules::first_overlap(&spans), None, "no two serial attempts ran at the same time: {spans:#?}");
    // A slot passed over had a task running: created before the decision, still unfinished at the slot.
    for row in rows.iter().filter(|r| r.outcome == "overlap") {
        let running = serial_tasks
            .iter()
            .any(|t| t.created_us < row.fired_at_us && t.finished_us.is_none_or(|end| end > row.slot_us));
        assert!(running, "slot passed over while no task ran: {row:?}\ntasks: {serial_tasks:#?}");
    }
    let rows = accounted_rows(&pool, "overlapping").await;
    assert!(rows.iter().all(|r| r.outcome == "fired"), "allow_overlap fires every slot: {rows:#?}");
    let spans = schedules::attempts(&pool, "overlapping").await.expect("attempts");
    assert!(schedules::first_overlap(&spans).is_some(), "allow_overlap ran tasks at the same time: {spans:#?}");
}

/// `control_plane.misfire_grace_ms` of the downtime test: a slot older than this at the restart was
/// missed.
const GRACE_MS: u64 = 500;
/// How long every control plane is down: at least ten slots.
const DOWNTIME: Duration = Duration::from_secs(11);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_is_caught_up_once_or_skipped() {
    let settings = json!({"control_plane": {"misfire_grace_ms": GRACE_MS}});
    let mut env = TestEnv::start_with_settings(settings).await.expect("control plane starts");
    let _executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    let pool = env.db().pool().await.expect("pool");
    let client = env.schedules().expect("ScheduleService client");
    for (name, misfire) in [("catch-up", "fire_once"), ("skip", "skip")] {
        let mut schedule = schedules::every(name, "core.util.noop", &json!({}), INTERVAL_MS);
        schedule.misfire = misfire.into();
        // The task fired just before the stop may still be unfinished at the restart (its completion
        // waits in the executor's spool): that slot would be an `overlap`, which is not under test here.
        schedule.allow_overlap = true;
        schedules::create(&client, schedule).await.expect("CreateSchedule");
    }
    for name in ["catch-up", "skip"] {
        wait_fired(&pool, name, 3, 0).await;
    }

    let stopped = env.stop_control_plane().await;
    assert!(stopped.is_some(), "the control plane stops by itself on SIGTERM");
    let down_us = schedules::now_us(&pool).await.expect("now");
    tokio::time::sleep(DOWNTIME).await;
    let restart_us = schedules::now_us(&pool).await.expect("now");
    env.restart_control_plane().await.expect("the control plane starts again");
    for name in ["catch-up", "skip"] {
        wait_fired(&pool, name, 3, restart_us).await;
    }
    for name in ["catch-up", "skip"] {
        schedules::set_paused(&client, name, true).await.expect("PauseSchedule");
    }

    let grace_us = i64::try_from(GRACE_MS).expect("small") * US_PER_MS;
    for name in ["catch-up", "skip"] {
        let rows = accounted_rows(&pool, name).await;
        let (before, after): (Vec<&FireRow>, Vec<&FireRow>) = rows.iter().partition(|r| r.slot_us < down_us);
        let (last, first) = (before.last().expect("slots before the stop"), after[0]);
        // The first tick after the restart deals with the newest due slot and counts the older ones.
        assert!(
            first.slot_us > restart_us - INTERVAL_US,
            "{name}: no slot of the downtime dealt with alone: {first:?}"
        );
        assert!(first.epoch > last.epoch, "{name}: the restarted replica leads under a new epoch");
        let older: Vec<&&FireRow> = after[1..].iter().filter(|r| r.missed >= 8).collect();
        assert!(older.is_empty(), "{name}: one row stands for the downtime: {older:?}");
        match name {
            "catch-up" => {
                assert_eq!(first.outcome, "fired", "fire_once fires the newest missed slot: {first:?}");
                assert!(first.missed >= 9, "{name}: the catch-up stands for the downtime's slots: {first:?}");
                assert!(first.reason.is_some(), "a catch-up says what it stands for: {first:?}");
            }
            _ => {
                assert!(first.missed >= 8, "{name}: the downtime's slots are counted: {first:?}");
                // The newest slot fires only if the restart came within the grace of it.
                match first.outcome.as_str() {
                    "missed" => {}
                    "fired" => assert!(first.slot_us >= restart_us - grace_us, "fired a missed slot: {first:?}"),
                    other => panic!("{name}: {other}: {first:?}"),
                }
                let late: Vec<&FireRow> = rows
                    .iter()
                    .filter(|r| r.outcome == "fired" && r.fired_at_us - r.slot_us > grace_us + SLACK_US)
                    .collect();
                assert!(late.is_empty(), "skip fires no slot older than the grace: {late:#?}");
            }
        }
        let fired_after = after[1..].iter().filter(|r| r.outcome == "fired").count();
        assert!(fired_after >= 2, "{name} fires normally after the restart: {after:#?}");
    }
}

/// `GET /api/v1/schedules/{name}/fires` (one page, newest first) as `(slot, task_id, outcome)`: what
/// does not change once written (a fire's `status` is its task's current status).
async fn rest_fires(rest: &legion_tests::rest::RestClient, name: &str) -> Result<Vec<(Value, Value, Value)>, String> {
    let reply = rest.get(&format!("/api/v1/schedules/{name}/fires")).await.map_err(|e| e.to_string())?;
    match reply.body["fires"].as_array() {
        Some(fires) if reply.status == 200 => fires
            .iter()
            .map(|f| match (&f["slot"], &f["fired_at"], &f["status"]) {
                (Value::String(_), Value::String(_), Value::String(_)) => {
                    Ok((f["slot"].clone(), f["task_id"].clone(), f["outcome"].clone()))
                }
                _ => Err(format!("a fire without slot, fired_at or status: {f}")),
            })
            .collect(),
        _ => Err(format!("fires: {} {}", reply.status, reply.body)),
    }
}

/// How long the pause test keeps its schedule paused: several slots.
const PAUSED: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_keeps_the_history_and_resume_does_not_catch_up() {
    let (env, _executor) = crate::env_with_executor().await;
    let gateway = env.start_gateway().await.expect("gateway starts");
    let rest = gateway.rest();
    let pool = env.db().pool().await.expect("pool");
    let body = json!({"name": "paused", "function": "core.util.noop", "args": {}, "interval_ms": INTERVAL_MS});
    let created = rest.post_json("/api/v1/schedules", &body).await.expect("POST /api/v1/schedules");
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        (created.body["paused"].as_bool(), created.body["interval_ms"].as_u64()),
        (Some(false), Some(INTERVAL_MS))
    );
    let before_pause = assert_eventually!(LONG, "three fires listed", || async {
        let fires = rest_fires(rest, "paused").await?;
        if fires.len() >= 3 { Ok(fires) } else { Err(format!("{} fires", fires.len())) }
    });

    let paused = rest.post_json("/api/v1/schedules/paused/pause", &json!({})).await.expect("pause");
    assert_eq!((paused.status, paused.body["paused"].as_bool()), (200, Some(true)), "{}", paused.body);
    assert_eq!(paused.body["next_fires"], json!([]), "nothing is coming while paused");
    let (anchor, paused_us) = schedules::times(&pool, "paused").await.expect("read the schedule");
    let listed = rest_fires(rest, "paused").await.expect("fires after the pause");
    let gone: Vec<_> = before_pause.iter().filter(|f| !listed.contains(f)).collect();
    assert!(gone.is_empty(), "pausing keeps the history: {gone:#?}");
    wait::holds_for("nothing fires while paused", PAUSED, || async {
        let now = rest_fires(rest, "paused").await?;
        if now == listed { Ok(()) } else { Err(format!("{} fires listed, {} at the pause", now.len(), listed.len())) }
    })
    .await
    .expect("the history stays as it was");

    let resumed = rest.post_json("/api/v1/schedules/paused/resume", &json!({})).await.expect("resume");
    assert_eq!((resumed.status, resumed.body["paused"].as_bool()), (200, Some(false)), "{}", resumed.body);
    assert_eq!(resumed.body["next_fires"].as_array().map(Vec::len), Some(5), "{}", resumed.body);
    let (_, resumed_us) = schedules::times(&pool, "paused").await.expect("read the schedule");
    assert_eventually!(LONG, "two fires after the resume", || async {
        let fires = rest_fires(rest, "paused").await?;
        if fires.len() >= listed.len() + 2 { Ok(()) } else { Err(format!("{} fires", fires.len())) }
    });
    let after = rest_fires(rest, "paused").await.expect("fires after the resume");
    let missing: Vec<_> = listed.iter().filter(|f| !after.contains(f)).collect();
    assert!(missing.is_empty(), "fires listed while paused remain after the resume: {missing:#?}");

    let rows = schedules::fires(&pool, "paused").await.expect("read schedule_fires");
    let (before, resumed_rows): (Vec<FireRow>, Vec<FireRow>) = rows.into_iter().partition(|r| r.slot_us <= paused_us);
    schedules::check_accounting(anchor, INTERVAL_US, &before).unwrap_or_else(|e| panic!("before the pause: {e}"));
    let first = resumed_rows.first().expect("rows after the resume");
    assert!(
        first.slot_us > resumed_us,
        "no slot of the pause dealt with: {first:?} (paused at {paused_us}, resumed at {resumed_us})"
    );
    assert!(first.slot_us <= resumed_us + INTERVAL_US, "the first slot after the resume fires: {first:?}");
    assert_eq!((first.outcome.as_str(), first.missed), ("fired", 0), "no catch-up for the pause: {first:?}");
    assert_eq!((first.slot_us - anchor) % INTERVAL_US, 0, "pausing does not move the slots: {first:?}");
    schedules::check_accounting(first.slot_us, INTERVAL_US, &resumed_rows)
        .unwrap_or_else(|e| panic!("after the resume: {e}"));
    let tasks = schedules::fired_tasks(&pool, "paused").await.expect("tasks");
    let during: Vec<_> = tasks.iter().filter(|t| t.created_us > paused_us && t.created_us < resumed_us).collect();
    assert!(during.is_empty(), "no task created while paused: {during:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_previews_dst_slots_and_manages_schedules() {
    let (env, _executor) = crate::env_with_executor().await;
    let limit = Duration::from_secs(60);
    let preview = [
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
    let output = env.legion(&preview, limit).await.expect("legion schedule preview");
    assert_eq!(output.code, Some(0), "stderr: {}", output.stderr);
    // 02:30 does not exist on 2026-03-08 in New York: it fires once, at 03:00 EDT.
    assert_eq!(output.stdout, "2026-03-07T07:30:00Z\n2026-03-08T07:00:00Z\n2026-03-09T06:30:00Z\n");

    // add (JSON and human output), list, show, fires, pause, delete.
    let added =
        cli_json(&env, &["schedule", "add", "cli-every", "--function", "core.util.noop", "--every", "1s", "--json"])
            .await;
    assert_eq!(
        (added["name"].as_str(), added["interval_ms"].as_u64()),
        (Some("cli-every"), Some(INTERVAL_MS)),
        "{added}"
    );
    assert_eq!((added["paused"].as_bool(), added["next_fires"].as_array().map(Vec::len)), (Some(false), Some(5)));
    let nightly = ["schedule", "add", "cli-nightly", "--function", "core.util.noop", "--cron", "30 2 * * *"];
    let output = cli_ok(&env, &[&nightly[..], &["--timezone", "America/New_York"]].concat()).await;
    assert!(output.contains(r#"cron "30 2 * * *" in America/New_York"#), "{output}");
    let listed = cli_ok(&env, &["schedule", "list"]).await;
    assert!(listed.contains("cli-every") && listed.contains("cli-nightly"), "{listed}");
    let shown = cli_json(&env, &["schedule", "show", "cli-every", "--json"]).await;
    for field in ["name", "function", "interval_ms", "misfire", "created_at"] {
        assert_eq!(shown[field], added[field], "show --json {field}: {shown}");
    }

    let pool = env.db().pool().await.expect("pool");
    let fires = assert_eventually!(LONG, "two fires listed by the cli", || async {
        let page = env
            .legion(&["schedule", "fires", "cli-every", "--json"], limit)
            .await
            .map_err(|e| format!("legion schedule fires: {e}"))?;
        let page: Value = serde_json::from_str(&page.stdout).map_err(|e| format!("{e}: {}", page.stdout))?;
        let fires = page["fires"].as_array().cloned().unwrap_or_default();
        if fires.len() >= 2 { Ok(fires) } else { Err(format!("{page}")) }
    });
    let rows = schedules::fires(&pool, "cli-every").await.expect("read schedule_fires");
    for fire in &fires {
        let stored =
            rows.iter().any(|r| fire["task_id"].as_str() == r.task_id.as_deref() && fire["outcome"] == r.outcome);
        assert!(stored, "{fire} is a stored fire: {rows:#?}");
    }
    let table = cli_ok(&env, &["schedule", "fires", "cli-every"]).await;
    assert!(table.contains("fired"), "{table}");
    assert_eq!(cli_ok(&env, &["schedule", "pause", "cli-every"]).await.trim(), "schedule cli-every paused");
    cli_ok(&env, &["schedule", "delete", "cli-nightly"]).await;
    let gone = env.legion(&["schedule", "show", "cli-nightly"], limit).await.expect("legion schedule show");
    assert_ne!(gone.code, Some(0), "a deleted schedule is not found: {}", gone.stdout);
    assert!(gone.stderr.contains("cli-nightly"), "the error names the schedule: {}", gone.stderr);
}

/// Runs `legion ARGS` and returns its stdout; panics unless it exits 0.
async fn cli_ok(env: &TestEnv, args: &[&str]) -> String {
    let output = env.legion(args, Duration::from_secs(60)).await.expect("legion runs");
    assert_eq!(output.code, Some(0), "legion {}\nstdout: {}\nstderr: {}", args.join(" "), output.stdout, output.stderr);
    output.stdout
}

/// Runs `legion ARGS` and parses its stdout as one JSON document.
async fn cli_json(env: &TestEnv, args: &[&str]) -> Value {
    let stdout = cli_ok(env, args).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("legion {}: not JSON ({e}): {stdout}", args.join(" ")))
}
