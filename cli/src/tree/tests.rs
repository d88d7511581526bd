use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::*;

const ROOT: &str = "0190f5c8-0000-7000-8000-000000000000";

fn at(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(1_767_225_600_000 + ms)
}

fn task(id: &str, parent: Option<&str>, relationship: Option<&str>, fanout: Option<u32>) -> Task {
    Task {
        id: id.to_owned(),
        function: "core.util.echo".to_owned(),
        status: TaskStatus::Succeeded,
        args: json!({}),
        result: serde_json::Value::Null,
        error: None,
        attempt: 1,
        max_attempts: 1,
        priority: 0,
        chain: Some("c".to_owned()),
        chain_version: Some(1),
        root_id: Some(ROOT.to_owned()),
        parent_id: parent.map(str::to_owned),
        relationship_id: relationship.map(str::to_owned),
        depth: 0,
        fanout_index: fanout,
        node: None,
        region: None,
        created_at: at(0),
        started_at: at(0),
        finished_at: at(5),
        timeout_ms: 1000,
        owner: "api-key/k".to_owned(),
        retry: None,
        replays: 0,
    }
}

fn text(tree: &TaskTree) -> String {
    let mut out = Vec::new();
    tree.write_text(&mut out).expect("writes");
    String::from_utf8(out).expect("utf-8")
}

/// The ids of the lines, with their indentation.
fn outline(tree: &TaskTree) -> Vec<String> {
    text(tree)
        .lines()
        .map(|l| {
            let indent = l.len() - l.trim_start().len();
            format!("{}{}", " ".repeat(indent), l.trim_start().split("  ").next().unwrap_or_default())
        })
        .collect()
}

#[test]
fn children_are_ordered_by_relationship_then_fanout_then_id() {
    let tasks = vec![
        task("c-r2", Some(ROOT), Some("r2"), None),
        task("b-r1-f1", Some(ROOT), Some("r1"), Some(1)),
        task("z-r1-f0", Some(ROOT), Some("r1"), Some(0)),
        task("a-r1-f1", Some(ROOT), Some("r1"), Some(1)),
        task("grandchild", Some("c-r2"), Some("r3"), None),
        task(ROOT, None, None, None),
    ];
    let tree = TaskTree::build(tasks, ROOT).expect("root present");
    assert_eq!(tree.len(), 6);
    assert_eq!(tree.top().id, ROOT);
    assert_eq!(outline(&tree), [ROOT, "  z-r1-f0", "  a-r1-f1", "  b-r1-f1", "  c-r2", "    grandchild"]);
}

#[test]
fn a_task_inside_the_run_shows_only_its_subtree() {
    let tasks = vec![
        task(ROOT, None, None, None),
        task("a", Some(ROOT), Some("r1"), None),
        task("b", Some(ROOT), Some("r2"), None),
        task("a1", Some("a"), Some("r3"), Some(0)),
        task("a2", Some("a"), Some("r3"), Some(1)),
        task("a1x", Some("a1"), Some("r4"), None),
    ];
    let tree = TaskTree::build(tasks.clone(), "a").expect("present");
    assert_eq!(outline(&tree), ["a", "  a1", "    a1x", "  a2"]);
    let tree = TaskTree::build(tasks.clone(), "a1x").expect("present");
    assert_eq!(outline(&tree), ["a1x"], "a leaf alone");
    assert!(TaskTree::build(tasks, "nope").is_none());
}

#[test]
fn lines_carry_status_duration_and_the_reason_of_what_did_not_succeed() {
    let mut skipped = task("s", Some(ROOT), Some("r1"), None);
    skipped.status = TaskStatus::Skipped;
    skipped.error = Some("condition false: results.status equal 200 (was 500)".to_owned());
    (skipped.started_at, skipped.finished_at) = (None, at(0));
    let mut retried = task("ok", Some(ROOT), Some("r2"), None);
    retried.error = Some("attempt 1 failed: boom".to_owned());
    (retried.started_at, retried.finished_at) = (at(1000), at(2250));
    let mut running = task("run", Some(ROOT), Some("r3"), None);
    (running.status, running.finished_at) = (TaskStatus::Running, None);
    let mut failed = task("f", Some(ROOT), Some("r4"), None);
    failed.status = TaskStatus::Failed;
    failed.error = Some(format!("{}\nsecond line", "x".repeat(200)));
    let tree =
        TaskTree::build(vec![task(ROOT, None, None, None), skipped, retried, running, failed], ROOT).expect("root");
    let text = text(&tree);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("{ROOT}  core.util.echo  succeeded  5ms"));
    assert_eq!(lines[1], "  s  core.util.echo  skipped  -  condition false: results.status equal 200 (was 500)");
    assert_eq!(lines[2], "  ok  core.util.echo  succeeded  1250ms", "a succeeded task shows no old error");
    assert_eq!(lines[3], "  run  core.util.echo  running  -");
    assert_eq!(lines[4], format!("  f  core.util.echo  failed  5ms  {}…", "x".repeat(119)));
}

#[test]
fn errors_are_cut_to_one_line() {
    assert_eq!(one_line("  boom  ", 120), "boom");
    assert_eq!(one_line("first\nsecond", 120), "first …");
    assert_eq!(one_line("tab\there\r", 120), "tab here");
    assert_eq!(one_line("ééééé", 3), "éé…", "cut on characters, not bytes");
    assert_eq!(one_line(&"y".repeat(120), 120), "y".repeat(120), "exactly the limit is kept");
}

#[test]
fn the_json_tree_nests_rest_tasks() {
    let tasks = vec![
        task(ROOT, None, None, None),
        task("b", Some(ROOT), Some("r1"), Some(1)),
        task("a", Some(ROOT), Some("r1"), Some(0)),
        task("a1", Some("a"), Some("r2"), None),
    ];
    let tree = TaskTree::build(tasks, ROOT).expect("root");
    let json = serde_json::to_value(tree.json()).expect("serializes");
    assert_eq!(json["task"]["id"], ROOT);
    assert_eq!(json["task"]["status"], "succeeded");
    assert_eq!(json["children"][0]["task"]["id"], "a");
    assert_eq!(json["children"][0]["task"]["fanout_index"], 0);
    assert_eq!(json["children"][0]["children"][0]["task"]["id"], "a1");
    assert_eq!(json["children"][0]["children"][0]["children"], json!([]));
    assert_eq!(json["children"][1]["task"]["id"], "b");
    assert_eq!(json.as_object().map(serde_json::Map::len), Some(2));
    let text = serde_json::to_string(&tree.json()).expect("serializes");
    assert!(text.starts_with(&format!(r#"{{"task":{{"id":"{ROOT}","#)), "task comes first: {text:.80}");
}

#[test]
fn repeats_orphans_and_parent_loops_neither_duplicate_nor_loop() {
    let mut looped_root = task(ROOT, Some("a1"), None, None);
    looped_root.parent_id = Some("a1".to_owned());
    let tasks = vec![
        looped_root,
        task("a", Some(ROOT), Some("r1"), None),
        task("a", Some(ROOT), Some("r1"), None),
        task("a1", Some("a"), Some("r2"), None),
        task("orphan", Some("not-listed"), Some("r1"), None),
        task("self", Some("self"), Some("r1"), None),
    ];
    let tree = TaskTree::build(tasks.clone(), ROOT).expect("root");
    assert_eq!(outline(&tree), [ROOT, "  a", "    a1"]);
    let tree = TaskTree::build(tasks, "a").expect("a");
    assert_eq!(outline(&tree), ["a".to_owned(), "  a1".to_owned(), format!("    {ROOT}")]);
}

/// 10,000+ tasks, listed in a scrambled order: built and printed in linear-ish time, every task once,
/// in sibling order.
#[test]
fn ten_thousand_tasks_build_and_print_quickly() {
    let id = |parent: usize, child: usize| format!("t-{parent:03}-{child:03}");
    let mut tasks = vec![task(ROOT, None, None, None)];
    for p in 0..100 {
        tasks.push(task(&id(p, 999), Some(ROOT), Some("r1"), Some(u32::try_from(p).expect("small"))));
        for c in 0..99 {
            tasks.push(task(&id(p, c), Some(&id(p, 999)), Some("r2"), Some(u32::try_from(98 - c).expect("small"))));
        }
    }
    assert_eq!(tasks.len(), 10_001);
    // A deterministic scramble: a stride coprime with the length.
    let n = tasks.len();
    let scrambled: Vec<Task> = (0..n).map(|i| tasks[(i * 7919) % n].clone()).collect();
    let started = Instant::now();
    let tree = TaskTree::build(scrambled, ROOT).expect("root");
    let mut out = Vec::new();
    tree.write_text(&mut out).expect("writes");
    let json = serde_json::to_vec(&tree.json()).expect("serializes");
    let elapsed = started.elapsed();
    assert!(elapsed.as_secs() < 5, "took {elapsed:?}");
    let text = String::from_utf8(out).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10_001);
    assert!(lines[1].starts_with("  t-000-999  "), "{}", lines[1]);
    assert!(lines[2].starts_with("    t-000-098  "), "fan-out order: {}", lines[2]);
    assert!(lines[100].starts_with("    t-000-000  "), "{}", lines[100]);
    assert!(lines[101].starts_with("  t-001-999  "), "{}", lines[101]);
    assert!(json.len() > 10_001 * 100);
}

/// A run as deep as `limits.max_chain_depth` may be (1000) prints as text and JSON.
#[test]
fn a_run_at_the_deepest_depth_cap_prints() {
    let mut tasks = vec![task(ROOT, None, None, None)];
    let mut parent = ROOT.to_owned();
    for depth in 1..=1000 {
        let id = format!("d{depth:04}");
        let mut child = task(&id, Some(&parent), Some("r1"), None);
        child.depth = depth;
        tasks.push(child);
        parent = id;
    }
    let tree = TaskTree::build(tasks, ROOT).expect("root");
    let text = text(&tree);
    let last = text.lines().last().expect("lines");
    assert!(last.starts_with(&format!("{}d1000  ", " ".repeat(2000))), "{:.40}", last.trim_start());
    let json = serde_json::to_value(tree.json()).expect("serializes");
    let mut node = &json;
    for _ in 0..1000 {
        node = &node["children"][0];
    }
    assert_eq!(node["task"]["id"], "d1000");
}

#[test]
fn durations_are_in_milliseconds_or_a_dash() {
    let mut t = task("x", None, None, None);
    assert_eq!(duration(&t), "5ms");
    t.finished_at = t.started_at.map(|s| s + Duration::milliseconds(61_000));
    assert_eq!(duration(&t), "61000ms");
    t.started_at = None;
    assert_eq!(duration(&t), "-");
}

fn proto(id: String, parent: Option<String>, relationship: Option<&str>, fanout: Option<u32>, depth: u32) -> v1::Task {
    v1::Task {
        id,
        function: "core.util.echo".into(),
        status: v1::TaskStatus::Succeeded as i32,
        chain: Some("c".into()),
        chain_version: Some(1),
        root_id: Some(ROOT.into()),
        parent_id: parent,
        relationship_id: relationship.map(str::to_owned),
        fanout_index: fanout,
        depth,
        started_at: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 }),
        finished_at: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 7_000_000 }),
        ..v1::Task::default()
    }
}

/// `legion task tree` against a control plane: the run is fetched in pages of 1000, a task outside
/// chains is shown alone without listing anything, and `--json` nests the same tree.
#[tokio::test]
async fn task_tree_fetches_every_page_of_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tasks = vec![proto(ROOT.into(), None, None, None, 0)];
    for p in 0..50u32 {
        let parent = format!("0190f5c8-0000-7000-8000-{:012}", 1_000_000 + p);
        tasks.push(proto(parent.clone(), Some(ROOT.into()), Some("r1"), Some(p), 1));
        for c in 0..49u32 {
            let id = format!("0190f5c8-0000-7000-8000-{:012}", 2_000_000 + p * 100 + c);
            tasks.push(proto(id, Some(parent.clone()), Some("r2"), Some(c), 2));
        }
    }
    let mut skipped = proto("0190f5c8-0000-7000-8000-000000000009".into(), Some(ROOT.into()), Some("r0"), None, 1);
    skipped.status = v1::TaskStatus::Skipped as i32;
    skipped.error = Some("condition false".into());
    (skipped.started_at, skipped.finished_at) = (None, None);
    tasks.push(skipped);
    let alone = "0190f5c8-0000-7000-8000-00000000aaaa";
    tasks.push(v1::Task { id: alone.into(), chain: None, root_id: None, ..proto(String::new(), None, None, None, 0) });
    let run_size = tasks.len() - 1;
    assert!(run_size > 2000, "more than two pages");
    let (addr, state) = crate::testing::serve(dir.path(), tasks).await;

    let (result, out) = crate::testing::legion(addr, dir.path(), &["task", "tree", ROOT], b"").await;
    assert_eq!(result.expect("prints"), 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), run_size);
    assert_eq!(lines[0], format!("{ROOT}  core.util.echo  succeeded  7ms"));
    assert_eq!(lines[1], "  0190f5c8-0000-7000-8000-000000000009  core.util.echo  skipped  -  condition false");
    assert!(lines[2].starts_with("  0190f5c8-0000-7000-8000-000001000000  "), "{}", lines[2]);
    assert!(lines[3].starts_with("    0190f5c8-0000-7000-8000-000002000000  "), "{}", lines[3]);
    assert_eq!(*state.page_sizes.lock().expect("lock"), [1000, 1000, 1000]);

    let subtree = "0190f5c8-0000-7000-8000-000001000049";
    let (result, out) = crate::testing::legion(addr, dir.path(), &["task", "tree", subtree, "--json"], b"").await;
    assert_eq!(result.expect("prints"), 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!((&json["task"]["id"], &json["task"]["depth"]), (&json!(subtree), &json!(1)));
    assert_eq!(json["children"].as_array().map(Vec::len), Some(49));
    assert_eq!(json["children"][48]["task"]["fanout_index"], 48);

    state.page_sizes.lock().expect("lock").clear();
    let (result, out) = crate::testing::legion(addr, dir.path(), &["task", "tree", alone], b"").await;
    assert_eq!((result.expect("prints"), out.lines().count()), (0, 1));
    assert!(state.page_sizes.lock().expect("lock").is_empty(), "a task outside chains lists nothing");

    let (result, _) =
        crate::testing::legion(addr, dir.path(), &["task", "tree", "0190f5c8-0000-7000-8000-0000000fffff"], b"").await;
    assert_eq!(result.expect_err("unknown").exit_code(), 1);
}
