//! Prometheus metrics of the REST API: requests by route, method and status, and their latency.
//!
//! Exposed at `GET /metrics` in the OpenMetrics 1.0 text format:
//! - `legion_gateway_http_requests_total{method,route,status}`: responses sent;
//! - `legion_gateway_http_request_duration_seconds{method,route}`: time to the response head, in
//!   seconds (for `/events`, the time until the stream starts).
//!
//! `route` is the route template (`/api/v1/tasks/{id}`), never the raw path, so ids do not create
//! series; requests that match no route count as `unmatched`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The gateway's HTTP metrics and the registry that exposes them. Cheap to share as `Arc`.
#[derive(Debug)]
pub struct HttpMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMetrics {
    /// Creates the metrics, registered under the `legion_gateway` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("legion_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("http_requests", "HTTP responses sent, by method, route and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response head, by method and route",
            latency.clone(),
        );
        Self { registry, requests, latency }
    }

    /// Counts one response.
    pub fn observe(&self, method: &str, route: &str, status: StatusCode, seconds: f64) {
        let (method, route) = (method.to_owned(), route.to_owned());
        self.latency.get_or_create(&RouteLabels { method: method.clone(), route: route.clone() }).observe(seconds);
        self.requests.get_or_create(&RequestLabels { method, route, status: status.as_u16() }).inc();
    }

    /// The metrics in the Prometheus text format.
    ///
    /// # Errors
    /// [`std::fmt::Error`] if encoding fails (it does not for these metric types).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)?;
        Ok(body)
    }
}

/// Middleware: times and counts every request under its route template.
pub async fn track(State(metrics): State<Arc<HttpMetrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    metrics.observe(&method, &route, response.status(), started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_template_and_status() {
        let metrics = HttpMetrics::new();
        metrics.observe("GET", "/api/v1/tasks/{id}", StatusCode::OK, 0.002);
        metrics.observe("GET", "/api/v1/tasks/{id}", StatusCode::OK, 0.004);
        metrics.observe("GET", "/api/v1/tasks/{id}", StatusCode::NOT_FOUND, 0.001);
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains(
                r#"legion_gateway_http_requests_total{method="GET",route="/api/v1/tasks/{id}",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"status="404"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"legion_gateway_http_request_duration_seconds_count{method="GET",route="/api/v1/tasks/{id}"} 3"#
            ),
            "{text}"
        );
    }
}
