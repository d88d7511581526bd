//! The transformation sandbox runs `jinja` and `jq` in `legion-control-plane sandbox` processes: a
//! runaway or a memory bomb fails its evaluation, is killed and replaced, and never takes the control
//! plane (or the pool) down.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use legion_control_plane::chains::sandbox::{Sandbox, SandboxSettings};
use legion_control_plane::chains::transform::Transformation;
use serde_json::{Value, json};

const MEMORY_BYTES: u64 = 256 << 20;

fn sandbox(workers: usize, timeout: Duration) -> Sandbox {
    Sandbox::new(SandboxSettings {
        program: PathBuf::from(env!("CARGO_BIN_EXE_legion-control-plane")),
        workers,
        timeout,
        memory_bytes: MEMORY_BYTES,
        max_output_bytes: 1 << 20,
    })
}

fn transformation(document: Value) -> Transformation {
    Transformation::parse(&document, "transformation", 65_536).expect("parses")
}

fn jq(expr: &str) -> Transformation {
    transformation(json!({"engine": "jq", "expr": expr}))
}

fn context() -> Value {
    json!({
        "results": {"status": 200, "items": [{"id": 1}, {"id": 2}]},
        "args": {"url": "https://example.test/a"},
        "task": {"id": "0190c7e2-0000-7000-8000-000000000001"},
    })
}

/// The pool still evaluates after a failure.
async fn assert_works(pool: &Sandbox) {
    let out = pool.evaluate(&jq("{status: .results.status}"), &context()).await.expect("evaluates");
    assert_eq!(out, json!({"status": 200}));
}

#[tokio::test]
async fn jinja_jq_and_static_evaluate() {
    let pool = sandbox(2, Duration::from_secs(10));
    let jinja = transformation(json!({
        "engine": "jinja",
        "template": r#"{"url": "{{ args.url }}", "status": {{ results.status }}, "parent": "{{ task.id }}"}"#,
    }));
    assert_eq!(
        pool.evaluate(&jinja, &context()).await.expect("jinja"),
        json!({"url": "https://example.test/a", "status": 200, "parent": "0190c7e2-0000-7000-8000-000000000001"})
    );
    assert_eq!(pool.evaluate(&jq(".results.items[]"), &context()).await.expect("jq"), json!([{"id": 1}, {"id": 2}]));
    let err = pool.evaluate(&jq(r#"error("boom")"#), &context()).await.expect_err("jq error");
    assert_eq!(err, "boom");
    let stat = transformation(json!({"engine": "static", "value": {"a": 1}}));
    assert_eq!(pool.evaluate(&stat, &context()).await.expect("static"), json!({"a": 1}));
    pool.shutdown().await;
    let err = pool.evaluate(&jq("."), &context()).await.expect_err("shut down");
    assert_eq!(err, "transformation sandbox is shut down");
}

#[tokio::test]
async fn a_runaway_times_out_and_the_pool_recovers() {
    let pool = sandbox(1, Duration::from_millis(500));
    for expr in ["last(repeat(1))", "[range(1e12)] | length"] {
        let started = Instant::now();
        let err = pool.evaluate(&jq(expr), &context()).await.expect_err("runaway");
        assert_eq!(err, "transformation ran past control_plane.transform_timeout_ms (500 ms)", "{expr}");
        assert!(started.elapsed() < Duration::from_secs(5), "{expr}: {:?}", started.elapsed());
        assert_works(&pool).await;
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn a_memory_bomb_kills_its_process_and_the_pool_recovers() {
    let pool = sandbox(1, Duration::from_secs(20));
    for expr in [r#""x" * 2000000000 | length"#, "[range(1e9)] | length"] {
        let err = pool.evaluate(&jq(expr), &context()).await.expect_err("memory bomb");
        assert!(
            err.starts_with(
                "transformation sandbox exited (memory limit control_plane.transform_memory_bytes or a crash): "
            ),
            "{expr}: {err}"
        );
        assert_works(&pool).await;
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn concurrent_evaluations_share_the_workers() {
    let pool = sandbox(2, Duration::from_secs(30));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let context = json!({"results": {"n": i}, "args": {}, "task": {}});
            pool.evaluate(&jq("{n: (.results.n * 2)}"), &context).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.expect("joins").expect("evaluates"), json!({"n": i * 2}));
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_evaluation_does_not_poison_the_pool() {
    let pool = sandbox(1, Duration::from_secs(30));
    let runaway = jq("last(repeat(1))");
    let cancelled = tokio::time::timeout(Duration::from_millis(300), pool.evaluate(&runaway, &context())).await;
    assert!(cancelled.is_err(), "still running when dropped");
    assert_works(&pool).await;
    pool.shutdown().await;
}

#[tokio::test]
async fn an_oversized_reply_is_refused() {
    let pool = Sandbox::new(SandboxSettings {
        program: PathBuf::from(env!("CARGO_BIN_EXE_legion-control-plane")),
        workers: 1,
        timeout: Duration::from_secs(10),
        memory_bytes: MEMORY_BYTES,
        max_output_bytes: 1000,
    });
    let err = pool.evaluate(&jq(r#""x" * 5000"#), &context()).await.expect_err("too large");
    assert_eq!(err, "output exceeds control_plane.transform_max_output_bytes (1000 bytes)");
    assert_works(&pool).await;
    pool.shutdown().await;
}

#[tokio::test]
async fn a_missing_program_is_an_error_not_a_panic() {
    let pool = Sandbox::new(SandboxSettings {
        program: PathBuf::from("/nonexistent/legion-control-plane"),
        workers: 1,
        timeout: Duration::from_secs(1),
        memory_bytes: MEMORY_BYTES,
        max_output_bytes: 1000,
    });
    let err = pool.evaluate(&jq("."), &context()).await.expect_err("cannot start");
    assert!(err.starts_with("transformation sandbox could not start: "), "{err}");
}

#[test]
fn host_access_is_refused_before_anything_runs() {
    for expr in ["env", "$ENV", "env.HOME", "$ENV.PATH", "input", "inputs"] {
        let document = json!({"engine": "jq", "expr": expr});
        let err = Transformation::parse(&document, "transformation", 65_536).expect_err(expr).to_string();
        assert!(err.starts_with("transformation.expr: does not"), "{expr}: {err}");
    }
}

#[test]
fn the_sandbox_process_answers_on_stdio_and_exits_at_eof() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_legion-control-plane"))
        .args(["sandbox", "--memory-bytes", &MEMORY_BYTES.to_string(), "--max-output-bytes", "4096"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(
            concat!(
                r#"{"transformation":{"engine":"jq","expr":".args"},"context":{"args":{"a":1}}}"#,
                "\n",
                "not json\n",
            )
            .as_bytes(),
        )
        .expect("writes");
    drop(stdin);
    let output = child.wait_with_output().expect("exits");
    assert!(output.status.success(), "{:?}", output.status);
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], r#"{"ok":{"a":1}}"#);
    assert!(lines[1].starts_with(r#"{"error":"invalid transformation request: "#), "{}", lines[1]);
}

/// The pids of this process's `sandbox` children started with `--max-output-bytes <marker>`.
fn sandbox_children(marker: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the `(comm)`: state, ppid, …
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).unwrap_or("");
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == me && cmdline.split(|b| *b == 0).any(|arg| arg == marker.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn a_process_that_died_while_idle_is_replaced_before_use() {
    // An output limit no other test uses marks this test's process.
    let pool = Sandbox::new(SandboxSettings {
        program: PathBuf::from(env!("CARGO_BIN_EXE_legion-control-plane")),
        workers: 1,
        timeout: Duration::from_secs(10),
        memory_bytes: MEMORY_BYTES,
        max_output_bytes: 1_048_577,
    });
    assert_works(&pool).await;
    let pids = sandbox_children("1048577");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let killed = std::process::Command::new("kill").arg("-9").arg(pids[0].to_string()).status().unwrap();
    assert!(killed.success());
    // Give the kernel a moment to end it; the next evaluation must not pay for its death.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_works(&pool).await;
}

#[test]
fn a_sandbox_whose_control_plane_died_stops_at_once() {
    // A shell starts the sandbox on a runaway request and exits: the sandbox is orphaned mid-evaluation,
    // as when the control plane is killed with SIGKILL. Nobody is left to enforce its timeout.
    let program = env!("CARGO_BIN_EXE_legion-control-plane");
    let request = r#"{"transformation":{"engine":"jq","expr":"reduce range(1e15) as $i (0; . + 1)"},"context":{}}"#;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("request.json");
    std::fs::write(&input, format!("{request}\n")).unwrap();
    // An explicit redirection: without one, a background command of a shell reads /dev/null.
    let script = format!(
        "'{program}' sandbox --memory-bytes {MEMORY_BYTES} --max-output-bytes 1024 < '{}' > /dev/null 2>&1 & echo $!; sleep 0.5",
        input.display()
    );
    let output = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
    let pid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "{output:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Gone, or a zombie waiting for whoever adopted it: either way it no longer runs.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| {
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        });
        if state.as_deref().is_none_or(|s| s == "Z" || s == "X") {
            break;
        }
        assert!(Instant::now() < deadline, "the orphaned sandbox {pid} still runs (state {state:?})");
        std::thread::sleep(Duration::from_millis(100));
    }
}
