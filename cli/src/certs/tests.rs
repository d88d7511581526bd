use std::time::Duration;

use legion_common::settings::TlsSettings;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::*;

fn tls(dir: &Path, ca: &str, cert: Option<&str>) -> TlsSettings {
    TlsSettings {
        ca: Some(dir.join(ca)),
        cert: cert.map(|c| dir.join(format!("{c}.pem"))),
        key: cert.map(|c| dir.join(format!("{c}-key.pem"))),
    }
}

/// Serves gRPC health over TLS with the control-plane certificate of `dir` on a free loopback port.
async fn serve_health(dir: &Path) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_reporter, service) = tonic_health::server::health_reporter();
    let config = legion_common::tls::server_config(&tls(dir, "ca.pem", Some("control-plane"))).expect("server tls");
    let server = Server::builder().tls_config(config).expect("tls config").add_service(service);
    tokio::spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    addr
}

async fn check(url: &str, tls: &TlsSettings) -> Result<i32, tonic::Status> {
    let config = legion_common::tls::client_config(tls).expect("client tls");
    let channel = Endpoint::from_shared(url.to_owned())
        .expect("url")
        .tls_config(config)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let response = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
    Ok(response.into_inner().status)
}

#[test]
fn init_writes_and_prints_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("certs");
    let mut out = Vec::new();
    let files = init(&target, "exec-9", &mut out).expect("init");
    let printed: Vec<PathBuf> = String::from_utf8(out).expect("utf-8").lines().map(PathBuf::from).collect();
    assert_eq!(printed, files);
    assert_eq!(files.len(), DEV_CERT_FILES.len());
    for file in &files {
        assert!(std::fs::metadata(file).expect("written").len() > 0, "{}", file.display());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(target.join("gateway-key.pem")).expect("key").permissions().mode();
    assert_eq!(mode & 0o077, 0, "private keys are not readable by others");
}

#[tokio::test]
async fn written_certificates_carry_a_mutual_tls_connection() {
    legion_common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    init(dir.path(), "exec-9", &mut Vec::new()).expect("init");
    let addr = serve_health(dir.path()).await;

    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}", addr.port());
        for client in [Some("gateway"), Some("executor"), None] {
            let status = check(&url, &tls(dir.path(), "ca.pem", client)).await;
            assert_eq!(status.ok(), Some(ServingStatus::Serving as i32), "{url} as {client:?}");
        }
    }

    let executor = std::fs::read(dir.path().join("executor.pem")).expect("read");
    let der = rustls_pemfile_der(&executor);
    assert_eq!(
        legion_common::tls::principal_from_certs(&[der]),
        Some(legion_common::tls::Principal::Node("exec-9".into()))
    );
}

#[tokio::test]
async fn another_ca_is_not_trusted() {
    legion_common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    init(dir.path(), "executor", &mut Vec::new()).expect("init");
    init(other.path(), "executor", &mut Vec::new()).expect("init");
    let addr = serve_health(dir.path()).await;
    let url = format!("https://localhost:{}", addr.port());
    let status = check(&url, &tls(other.path(), "ca.pem", None)).await;
    assert_eq!(status.expect_err("the server's certificate is from another CA").code(), tonic::Code::Unavailable);
}

/// The DER bytes of the first certificate of a PEM file.
fn rustls_pemfile_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).next().expect("one certificate").expect("valid pem").to_vec()
}

#[tokio::test]
async fn a_node_certificate_from_the_same_ca_carries_a_mutual_tls_connection() {
    legion_common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    init(dir.path(), "exec-1", &mut Vec::new()).expect("init");
    let mut out = Vec::new();
    let (cert, key) = node(dir.path(), "exec-2", &mut out).expect("node");
    assert_eq!(String::from_utf8(out).expect("utf-8").lines().count(), 2);
    assert_eq!(cert, dir.path().join("node-exec-2.pem"));
    let addr = serve_health(dir.path()).await;
    let url = format!("https://localhost:{}", addr.port());
    let settings = TlsSettings { ca: Some(dir.path().join("ca.pem")), cert: Some(cert.clone()), key: Some(key) };
    assert_eq!(check(&url, &settings).await.ok(), Some(ServingStatus::Serving as i32));
    let der = rustls_pemfile_der(&std::fs::read(&cert).expect("read"));
    assert_eq!(
        legion_common::tls::principal_from_certs(&[der]),
        Some(legion_common::tls::Principal::Node("exec-2".into()))
    );

    let empty = tempfile::tempdir().expect("tempdir");
    assert!(node(empty.path(), "exec-2", &mut Vec::new()).is_err(), "no CA in the directory");
}
