//! A gRPC channel over several control-plane replicas: `control_plane.url` first, then
//! `control_plane.failover_urls`, in order.
//!
//! Every call goes to the current replica. A call that fails below gRPC (a [`tonic::transport::Error`]:
//! the connection is refused, times out or breaks, which a client sees as `UNAVAILABLE`; or the call
//! passes its gRPC deadline, set with `tonic::Request::set_timeout` or `Endpoint::timeout`, which it
//! sees as `CANCELLED`) makes the next replica current, round robin, and the failed call returns its
//! error: a request body cannot be sent twice, so the caller retries, as it does for any transient
//! failure, and its retry goes to the next replica. A deadline enforced outside the channel (a
//! `tokio::time::timeout` that drops the call) is not seen here. Calls answered with a gRPC status, errors included, do not move it: a replica that answers
//! is reachable. The current replica is shared by every clone, so one failure moves them all.
//!
//! Why not `Channel::balance_list`: tonic's balancer keeps a lazily connected endpoint that refuses
//! connections in its ready set and hands it calls that fail, so with one replica down a share of all
//! calls would fail for as long as it stays down; here one call fails, once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Context, Poll, Service};
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 keep-alive ping interval of the channels to the control plane: with
/// [`KEEP_ALIVE_TIMEOUT`], a replica that stops answering (frozen, cut off by the network) breaks the
/// connection, and so moves the calls to the next replica, within about 10 s, even with no call of
/// its own timing out.
pub const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a keep-alive ping may go unanswered before the connection is closed.
pub const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Channels to the replicas, and which one is current. Build with [`Failover::connect_lazy`], or
/// from one [`Channel`] (no failover).
#[derive(Debug, Clone)]
pub struct Failover {
    /// One channel per replica, in the order of the settings.
    channels: Vec<Channel>,
    /// The replicas' URLs, for logs.
    urls: Arc<[String]>,
    /// Index of the current replica, shared by every clone.
    current: Arc<AtomicUsize>,
    /// The channel `poll_ready` made ready, which `call` must use.
    ready: Option<usize>,
}

impl Failover {
    /// Lazily connected channels to `endpoints` (`(url, endpoint)`, at least one, the first current).
    /// Nothing connects until the first call.
    ///
    /// # Panics
    /// When `endpoints` is empty.
    pub fn connect_lazy(endpoints: Vec<(String, Endpoint)>) -> Self {
        assert!(!endpoints.is_empty(), "a failover channel needs at least one endpoint");
        let (urls, channels): (Vec<String>, Vec<Channel>) =
            endpoints.into_iter().map(|(url, endpoint)| (url, endpoint.connect_lazy())).unzip();
        Self { channels, urls: urls.into(), current: Arc::new(AtomicUsize::new(0)), ready: None }
    }

    /// The URL of the current replica.
    pub fn current_url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }
}

impl From<Channel> for Failover {
    fn from(channel: Channel) -> Self {
        Self {
            channels: vec![channel],
            urls: vec![String::new()].into(),
            current: Arc::new(AtomicUsize::new(0)),
            ready: None,
        }
    }
}

/// Makes the replica after `failed` current, unless another call already moved on from it.
fn fail_over(current: &AtomicUsize, urls: &[String], failed: usize, error: &tonic::transport::Error) {
    if urls.len() < 2 {
        return;
    }
    let next = (failed + 1) % urls.len();
    if current.compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(
            failed = %urls[failed],
            next = %urls[next],
            error = %crate::text::error_chain(error),
            "control plane replica unreachable; calls go to the next one"
        );
    }
}

impl Service<Request<Body>> for Failover {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let index = *self.ready.get_or_insert_with(|| self.current.load(Ordering::Relaxed) % self.channels.len());
        let polled = self.channels[index].poll_ready(cx);
        if let Poll::Ready(Err(error)) = &polled {
            self.ready = None;
            fail_over(&self.current, &self.urls, index, error);
        }
        polled
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let index = self.ready.take().unwrap_or_else(|| self.current.load(Ordering::Relaxed) % self.channels.len());
        let response = self.channels[index].call(request);
        let (current, urls) = (Arc::clone(&self.current), Arc::clone(&self.urls));
        Box::pin(async move {
            let answered = response.await;
            if let Err(error) = &answered {
                fail_over(&current, &urls, index, error);
            }
            answered
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::transport::server::TcpIncoming;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    /// A plain-HTTP gRPC health server on a free port; its URL.
    async fn health_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_reporter, service) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder().add_service(service).serve_with_incoming(TcpIncoming::from(listener)),
        );
        format!("http://{addr}")
    }

    /// A URL where nothing listens: a port bound, then freed.
    async fn refusing() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}")
    }

    fn failover(urls: &[String]) -> Failover {
        Failover::connect_lazy(
            urls.iter().map(|u| (u.clone(), Endpoint::from_shared(u.clone()).expect("url"))).collect(),
        )
    }

    async fn check(client: &mut HealthClient<Failover>) -> Result<(), tonic::Status> {
        client.check(HealthCheckRequest { service: String::new() }).await.map(|_| ())
    }

    #[tokio::test]
    async fn a_refused_call_moves_every_clone_to_the_next_replica_and_a_status_does_not() {
        let (down, up) = (refusing().await, health_server().await);
        let channel = failover(&[down.clone(), up.clone()]);
        let mut client = HealthClient::new(channel.clone());
        assert_eq!(channel.current_url(), down);
        let refused = check(&mut client).await.expect_err("the first replica refuses the connection");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert_eq!(channel.current_url(), up, "a clone sees the move");
        check(&mut client).await.expect("the retry goes to the second replica");
        // An answer with an error status is an answer: the replica stays current.
        let unknown =
            client.check(HealthCheckRequest { service: "no.such.Service".into() }).await.expect_err("unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert_eq!(channel.current_url(), up);
    }

    #[tokio::test]
    async fn the_replicas_are_tried_round_robin() {
        let (first, second, up) = (refusing().await, refusing().await, health_server().await);
        let channel = failover(&[up.clone(), first.clone(), second.clone()]);
        channel.current.store(1, Ordering::Relaxed);
        let mut client = HealthClient::new(channel.clone());
        check(&mut client).await.expect_err("first refuses");
        assert_eq!(channel.current_url(), second);
        check(&mut client).await.expect_err("second refuses");
        assert_eq!(channel.current_url(), up, "back to the start of the list");
        check(&mut client).await.expect("the one that answers");
    }

    #[tokio::test]
    async fn one_channel_never_moves() {
        let channel = Failover::from(Endpoint::from_shared(refusing().await).expect("url").connect_lazy());
        let mut client = HealthClient::new(channel.clone());
        check(&mut client).await.expect_err("refused");
        assert_eq!(channel.current.load(Ordering::Relaxed), 0);
    }
}
