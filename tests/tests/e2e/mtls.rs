//! The executor service is for node certificates only: no certificate is UNAUTHENTICATED, a
//! certificate of another CA fails the TLS handshake, a gateway certificate is PERMISSION_DENIED.

use legion_proto::v1::{HeartbeatRequest, RegisterNodeRequest};
use legion_tests::TestEnv;
use legion_tests::certs::{Identity, TestCerts};
use legion_tests::grpc::{self, ExecutorClient};
use tonic::Code;

fn register(name: &str) -> tonic::Request<RegisterNodeRequest> {
    grpc::request(RegisterNodeRequest {
        name: name.to_owned(),
        region: "default".into(),
        version: "e2e".into(),
        concurrency: 1,
        extensions: Vec::new(),
    })
}

fn heartbeat(name: &str) -> tonic::Request<HeartbeatRequest> {
    grpc::request(HeartbeatRequest { name: name.to_owned(), free_slots: 1, ..HeartbeatRequest::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_service_requires_a_node_certificate() {
    let env = TestEnv::start().await.expect("control plane starts");
    let url = env.control_plane_url();
    let node = env.certs().node_name().to_owned();

    // Control: the node certificate of the test's CA may register as its own node.
    let channel = grpc::connect(&url, &env.certs().tls(Identity::Executor)).await.expect("node connects");
    let response = ExecutorClient::new(channel).register_node(register(&node)).await;
    assert!(response.is_ok(), "a node certificate may call RegisterNode: {response:?}");

    // No client certificate: TLS succeeds (certificates are optional at the TLS layer), the call does not.
    let channel = grpc::connect(&url, &env.certs().tls(Identity::None)).await.expect("user connects");
    let mut client = ExecutorClient::new(channel);
    for status in [
        client.register_node(register(&node)).await.expect_err("no certificate: RegisterNode refused"),
        client.heartbeat(heartbeat(&node)).await.expect_err("no certificate: Heartbeat refused"),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    // A gateway certificate is authenticated but not allowed.
    let channel = grpc::connect(&url, &env.certs().tls(Identity::Gateway)).await.expect("gateway connects");
    let mut client = ExecutorClient::new(channel);
    for status in [
        client.register_node(register("gateway")).await.expect_err("gateway: RegisterNode refused"),
        client.heartbeat(heartbeat("gateway")).await.expect_err("gateway: Heartbeat refused"),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }

    // A node certificate signed by another CA: the server rejects it in the handshake. With TLS 1.3
    // the client may consider its side done before the server's alert arrives, so the failure shows
    // either at connect or as the first call's transport error, never as an application status.
    let foreign_dir = env.work_dir().join("foreign-certs");
    let foreign = TestCerts::write(&foreign_dir, &node).expect("foreign certificates");
    let tls = env.certs().tls_with_identity_of(&foreign, Identity::Executor);
    match grpc::connect(&url, &tls).await {
        Err(e) => {
            eprintln!("foreign certificate refused at connect: {e}");
            assert!(matches!(e, grpc::Error::Connect { .. }), "handshake failure: {e}");
        }
        Ok(channel) => {
            let status = ExecutorClient::new(channel)
                .register_node(register(&node))
                .await
                .expect_err("a foreign certificate must not reach the executor service");
            eprintln!("foreign certificate refused at the first call: {status:?}");
            // Depending on when the server's alert arrives, tonic reports the dead connection as
            // Unknown ("transport error"), Cancelled ("connection closed") or Unavailable; in every
            // case the status comes from the transport, not from the service.
            assert!(
                matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
                "a transport error, not an application status: {status:?}"
            );
            let from_transport = std::error::Error::source(&status)
                .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some());
            assert!(from_transport, "the status is caused by a transport error: {status:?}");
        }
    }
}
