//! The executor's Prometheus metrics, served on `/metrics` of the admin listener.
//!
//! - `legion_executor_deliveries_total{extension}`: broker deliveries received;
//! - `legion_executor_malformed_deliveries_total`: deliveries rejected as malformed (dead-lettered);
//! - `legion_executor_starts_total{decision}`: StartTask decisions (`run`, `drop`, `error`);
//! - `legion_executor_runs_total{outcome}`: finished attempts by outcome (`succeeded`, `failed`,
//!   `rejected`, `timeout`, `panic`, `aborted`);
//! - `legion_executor_run_duration_seconds`: runner wall time, histogram;
//! - `legion_executor_in_flight`: attempts running now, gauge;
//! - `legion_executor_report_batch_size{kind}`: items per StartTask/CompleteTask call (`start`,
//!   `complete`), histogram;
//! - `legion_executor_report_retries_total{kind}`: report calls retried after a transient error;
//! - `legion_executor_requeued_total`: deliveries requeued at shutdown or after a refused report;
//! - `legion_executor_attached_deliveries_total`: deliveries of a task already in flight here (same
//!   task and dispatch, typically a redelivery after a connection loss) attached to it, not run again;
//! - `legion_executor_spool_spooled_total`: completions written to the spool (the control plane was
//!   unreachable);
//! - `legion_executor_spool_replayed_total`: spooled completions answered by the control plane
//!   (accepted or stale);
//! - `legion_executor_spool_expired_total`: spooled completions dropped past
//!   `executor.spool_retention_s`;
//! - `legion_executor_spool_corrupt_total`: spool lines skipped because they do not decrypt or parse
//!   (a torn last line after a crash, tampering);
//! - `legion_executor_spool_refused_total`: spooled completions the control plane refused outright,
//!   dropped;
//! - `legion_executor_spool_bytes`: bytes held in the spool's files, gauge.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One label `name=value`.
pub type Labels = Vec<(&'static str, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn batch_histogram() -> Histogram {
    // 1, 2, 4, … 1024 items.
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// The metrics; cheap to clone (clones share the values).
#[derive(Clone)]
pub struct Metrics {
    /// Deliveries by extension.
    pub deliveries: Family<Labels, Counter>,
    /// Malformed deliveries.
    pub malformed: Counter,
    /// Start decisions.
    pub starts: Family<Labels, Counter>,
    /// Finished attempts by outcome.
    pub runs: Family<Labels, Counter>,
    /// Runner wall time, seconds.
    pub run_duration: Histogram,
    /// Attempts running now.
    pub in_flight: Gauge,
    /// Items per report call, by kind.
    pub report_batch: HistogramFamily,
    /// Retried report calls, by kind.
    pub report_retries: Family<Labels, Counter>,
    /// Requeued deliveries.
    pub requeued: Counter,
    /// Deliveries attached to an attempt already in flight.
    pub attached: Counter,
    /// Completions written to the spool.
    pub spool_spooled: Counter,
    /// Spooled completions answered at replay.
    pub spool_replayed: Counter,
    /// Spooled completions dropped past the retention.
    pub spool_expired: Counter,
    /// Spool lines skipped as unreadable.
    pub spool_corrupt: Counter,
    /// Spooled completions refused outright at replay, dropped.
    pub spool_refused: Counter,
    /// Bytes held in the spool's files.
    pub spool_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            deliveries: Family::default(),
            malformed: Counter::default(),
            starts: Family::default(),
            runs: Family::default(),
            // 1 ms to about 65 s.
            run_duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            in_flight: Gauge::default(),
            report_batch: Family::new_with_constructor(batch_histogram),
            report_retries: Family::default(),
            requeued: Counter::default(),
            attached: Counter::default(),
            spool_spooled: Counter::default(),
            spool_replayed: Counter::default(),
            spool_expired: Counter::default(),
            spool_corrupt: Counter::default(),
            spool_refused: Counter::default(),
            spool_bytes: Gauge::default(),
        }
    }
}

/// `[(name, value)]` as a label set.
pub fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}

impl Metrics {
    /// Registers every metric in `registry` under the `legion_executor_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("legion_executor");
        r.register("deliveries", "Broker deliveries received", self.deliveries.clone());
        r.register("malformed_deliveries", "Deliveries rejected as malformed", self.malformed.clone());
        r.register("starts", "StartTask decisions", self.starts.clone());
        r.register("runs", "Finished attempts by outcome", self.runs.clone());
        r.register("run_duration_seconds", "Runner wall time", self.run_duration.clone());
        r.register("in_flight", "Attempts running now", self.in_flight.clone());
        r.register("report_batch_size", "Items per StartTask or CompleteTask call", self.report_batch.clone());
        r.register("report_retries", "Report calls retried after a transient error", self.report_retries.clone());
        r.register("requeued", "Deliveries requeued", self.requeued.clone());
        r.register(
            "attached_deliveries",
            "Deliveries attached to an attempt already in flight instead of being run again",
            self.attached.clone(),
        );
        r.register("spool_spooled", "Completions written to the spool", self.spool_spooled.clone());
        r.register("spool_replayed", "Spooled completions answered at replay", self.spool_replayed.clone());
        r.register("spool_expired", "Spooled completions dropped past the retention", self.spool_expired.clone());
        r.register(
            "spool_corrupt",
            "Spool lines skipped because they do not decrypt or parse",
            self.spool_corrupt.clone(),
        );
        r.register("spool_refused", "Spooled completions refused outright at replay", self.spool_refused.clone());
        r.register("spool_bytes", "Bytes held in the spool's files", self.spool_bytes.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_their_names() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.deliveries.get_or_create(&label("extension", "core")).inc();
        metrics.runs.get_or_create(&label("outcome", "succeeded")).inc_by(2);
        metrics.report_batch.get_or_create(&label("kind", "start")).observe(7.0);
        metrics.in_flight.set(3);
        metrics.spool_expired.inc();
        metrics.spool_bytes.set(512);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for expected in [
            "legion_executor_deliveries_total{extension=\"core\"} 1",
            "legion_executor_runs_total{outcome=\"succeeded\"} 2",
            "legion_executor_report_batch_size_count{kind=\"start\"} 1",
            "legion_executor_in_flight 3",
            "legion_executor_spool_expired_total 1",
            "legion_executor_spool_bytes 512",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
