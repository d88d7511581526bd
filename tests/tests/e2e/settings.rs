//! Bad settings: every binary exits 64 (`EX_USAGE`) with a message naming the key, before it touches
//! any service.

use std::time::Duration;

use legion_common::EXIT_USAGE;
use legion_tests::lock::{Mode, ServiceLock};

const BINARIES: [&str; 4] = ["legion-control-plane", "legion-executor", "legion-gateway", "legion"];

/// Extra arguments after `--settings FILE` so that each binary gets far enough to load its settings.
fn args_for(binary: &str) -> &'static [&'static str] {
    match binary {
        "legion" => &["task", "get", "0190b6a0-0000-7000-8000-000000000000"],
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_exit_64_naming_the_key() {
    let _lock = tokio::task::spawn_blocking(|| ServiceLock::acquire(Mode::Shared))
        .await
        .expect("lock task")
        .expect("service lock");
    let dir = tempfile::Builder::new().prefix("legion-e2e-settings-").tempdir().expect("tempdir");
    let cases = [
        ("concurrency-zero", r#"{"executor": {"concurrency": 0}}"#, "executor.concurrency"),
        ("bad-database-url", r#"{"data": {"url": "mysql://localhost/legion"}}"#, "data.url"),
        ("unknown-key", r#"{"executor": {"concurency": 4}}"#, "concurency"),
    ];
    let mut failures = Vec::new();
    for (name, json, key) in cases {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, json).expect("write settings");
        let file = file.to_string_lossy().into_owned();
        for binary in BINARIES {
            let mut args = vec!["--settings", file.as_str()];
            args.extend_from_slice(args_for(binary));
            let output = legion_tests::cli::run(binary, dir.path(), &args, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{binary} with {name}: {e}"));
            if output.code != Some(EXIT_USAGE) || !output.stderr.contains(key) {
                failures.push(format!(
                    "{binary} with {name} ({json}): exit {:?}, stderr must name {key:?}: {}",
                    output.code,
                    output.stderr.trim()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
