//! Startup checks of the gateway: it refuses to run without its identity (`tls.cert` and `tls.key`),
//! or with a key that does not belong to its certificate, and the binary exits 64 naming the key.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use legion_common::Settings;
use legion_common::settings::TlsSettings;
use tokio_util::sync::CancellationToken;

const MISSING_CERT: &str =
    "settings key tls.cert is required: the gateway authenticates to the control plane with its certificate";

/// Longest the binary may take to refuse its settings.
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

fn dev_tls(dir: &Path) -> TlsSettings {
    legion_common::install_crypto_provider();
    legion_common::tls::write_dev_certs(dir, "executor").expect("dev certs");
    TlsSettings {
        ca: Some(dir.join("ca.pem")),
        cert: Some(dir.join("gateway.pem")),
        key: Some(dir.join("gateway-key.pem")),
    }
}

/// `run` with these TLS settings; the listener, were it reached, would be on a free port.
async fn run_with(tls: TlsSettings) -> anyhow::Result<()> {
    let mut settings = Settings::default();
    settings.control_plane.url = "https://127.0.0.1:1".into();
    settings.api.listen = "127.0.0.1:0".parse().expect("addr");
    settings.tls = tls;
    let shutdown = CancellationToken::new();
    // A gateway that starts would serve until shutdown: stop it at once so the test cannot hang.
    shutdown.cancel();
    legion_gateway::run(settings, shutdown).await
}

fn settings_error(result: anyhow::Result<()>) -> String {
    let error = result.expect_err("the gateway must refuse to start");
    let gateway = error.downcast_ref::<legion_gateway::Error>().expect("a gateway error");
    assert!(gateway.is_settings(), "exit 64 for {gateway}");
    error.to_string()
}

/// Regression: a gateway without a client certificate ran, and the control plane saw an anonymous caller.
#[tokio::test]
async fn a_gateway_without_its_certificate_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dev_tls(dir.path());
    let err = settings_error(run_with(TlsSettings { cert: None, key: None, ..tls.clone() }).await);
    assert_eq!(err, MISSING_CERT);
    let err = settings_error(run_with(TlsSettings { key: None, ..tls.clone() }).await);
    assert_eq!(
        err,
        "settings key tls.key is required: the gateway authenticates to the control plane with its certificate"
    );
    run_with(tls).await.expect("with its certificate the gateway starts (and stops at once)");
}

#[tokio::test]
async fn a_key_of_another_certificate_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dev_tls(dir.path());
    let err =
        settings_error(run_with(TlsSettings { key: Some(dir.path().join("executor-key.pem")), ..tls.clone() }).await);
    assert!(err.starts_with("settings key tls.key:"), "{err}");
    let err = settings_error(run_with(TlsSettings { cert: Some(dir.path().join("nope.pem")), ..tls }).await);
    assert!(err.contains("nope.pem"), "{err}");
}

#[test]
fn the_binary_exits_64_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dev_tls(&dir.path().join("certs"));
    let settings = serde_json::json!({
        "control_plane": { "url": "https://127.0.0.1:1" },
        "api": { "listen": "127.0.0.1:0" },
        "tls": { "ca": tls.ca },
    });
    let file = dir.path().join("gateway.json");
    std::fs::write(&file, settings.to_string()).expect("write settings");
    let log = dir.path().join("gateway.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_legion-gateway"))
        .arg("--settings")
        .arg(&file)
        .current_dir(dir.path())
        .env_clear()
        .env("HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("the gateway binary runs");
    // A gateway that started would serve until signalled: give it a deadline, then kill it.
    let deadline = Instant::now() + EXIT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).expect("log");
    let status = status.unwrap_or_else(|| panic!("the gateway started without a certificate: {stderr}"));
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains(MISSING_CERT), "{stderr}");
}
