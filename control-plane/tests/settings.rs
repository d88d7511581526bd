//! The binary refuses unusable TLS material before it starts: exit 64 (EX_USAGE) with a message naming
//! the setting. Regression test: a key that did not match its certificate exited 1 with "KeyMismatch",
//! and a non-PEM file failed later with a misleading "peer sent no certificates".

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// Runs `legion-control-plane --settings <file>` in an empty directory and home, with settings whose
/// `tls.cert` and `tls.key` are the given files of `certs`. Returns the exit code and stderr.
fn run_with(certs: &Path, cert: &str, key: &str) -> (Option<i32>, String) {
    let home = tempfile::tempdir().expect("tempdir");
    let settings = home.path().join("settings.json");
    let json = serde_json::json!({
        "tls": {
            "ca": certs.join("ca.pem"),
            "cert": certs.join(cert),
            "key": certs.join(key),
        }
    });
    std::fs::write(&settings, json.to_string()).expect("write settings");
    let output = Command::new(env!("CARGO_BIN_EXE_legion-control-plane"))
        .arg("--settings")
        .arg(&settings)
        .current_dir(home.path())
        .env_clear()
        .env("HOME", home.path())
        .output()
        .expect("run the control plane");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn unusable_tls_material_exits_64_naming_the_setting() {
    let certs = tempfile::tempdir().expect("tempdir");
    legion_common::tls::write_dev_certs(certs.path(), "exec-1").expect("dev certs");
    std::fs::write(certs.path().join("garbage.pem"), "this is not PEM").expect("write");

    let (code, stderr) = run_with(certs.path(), "control-plane.pem", "gateway-key.pem");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("tls.key"), "{stderr}");

    let (code, stderr) = run_with(certs.path(), "garbage.pem", "control-plane-key.pem");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("tls.cert"), "{stderr}");

    let (code, stderr) = run_with(certs.path(), "control-plane.pem", "garbage.pem");
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("tls.key"), "{stderr}");
}
