//! Prometheus metrics of the control plane, served on `/metrics` of `control_plane.admin_listen`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label of a start decision: `run`, `drop` or `dead_letter`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    /// The decision.
    pub decision: &'static str,
}

/// Label of a completion outcome: `succeeded`, `retried`, `failed`, `timed_out` or `stale`; of a
/// schedule's slot: `fired`, `overlap`, `missed` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: &'static str,
}

/// Label of a batch kind: `submit`, `publish`, `start` or `complete`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabel {
    /// The kind of batch.
    pub kind: &'static str,
}

/// Every metric of the control plane. Cheap to clone (each metric is an `Arc` inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `legion_tasks_submitted_total`: tasks created by `SubmitTask` (idempotent repeats excluded).
    pub submitted: Counter,
    /// `legion_task_starts_total{decision}`: `StartTask` items by decision.
    pub starts: Family<DecisionLabel, Counter>,
    /// `legion_task_completions_total{outcome}`: `CompleteTask` items by outcome.
    pub completions: Family<OutcomeLabel, Counter>,
    /// `legion_outbox_published_total`: outbox rows confirmed by the broker and deleted.
    pub published: Counter,
    /// `legion_outbox_publish_failures_total`: outbox publishes nacked, returned or cut off.
    pub publish_failures: Counter,
    /// `legion_outbox_depth`: outbox rows waiting, sampled every few seconds.
    pub outbox_depth: Gauge,
    /// `legion_tasks_redispatched_total`: tasks of lost nodes dispatched again.
    pub redispatched: Counter,
    /// `legion_batch_size{kind}`: items per committed batch.
    pub batch_size: Family<BatchLabel, Histogram>,
    /// `legion_schedule_fires_total{outcome}`: schedule slots dealt with by this replica's scheduler, by
    /// outcome (`fired`, `overlap`, `missed`, `failed`).
    pub schedule_fires: Family<OutcomeLabel, Counter>,
    /// `legion_schedule_lateness_seconds`: for each slot fired, how long after the slot its task was
    /// written (`fired_at - slot`, database clock).
    pub schedule_lateness: Histogram,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` under the `legion_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            submitted: Counter::default(),
            starts: Family::default(),
            completions: Family::default(),
            published: Counter::default(),
            publish_failures: Counter::default(),
            outbox_depth: Gauge::default(),
            redispatched: Counter::default(),
            batch_size: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 12))),
            schedule_fires: Family::default(),
            // 5 ms to about 82 s.
            schedule_lateness: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
        };
        let r = registry.sub_registry_with_prefix("legion");
        r.register("tasks_submitted", "Tasks created by SubmitTask", metrics.submitted.clone());
        r.register("task_starts", "StartTask items by decision", metrics.starts.clone());
        r.register("task_completions", "CompleteTask items by outcome", metrics.completions.clone());
        r.register("outbox_published", "Outbox rows confirmed by the broker", metrics.published.clone());
        r.register(
            "outbox_publish_failures",
            "Outbox publishes nacked, returned or cut off",
            metrics.publish_failures.clone(),
        );
        r.register("outbox_depth", "Outbox rows waiting to be published", metrics.outbox_depth.clone());
        r.register("tasks_redispatched", "Tasks of lost nodes dispatched again", metrics.redispatched.clone());
        r.register("batch_size", "Items per committed batch", metrics.batch_size.clone());
        r.register("schedule_fires", "Schedule slots dealt with, by outcome", metrics.schedule_fires.clone());
        r.register_with_unit(
            "schedule_lateness",
            "Time from a schedule's slot to the write of its task",
            Unit::Seconds,
            metrics.schedule_lateness.clone(),
        );
        metrics
    }

    /// Metrics registered in a throwaway registry (tests, tools).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Records the size of a committed batch.
    pub fn observe_batch(&self, kind: &'static str, size: usize) {
        #[allow(clippy::cast_precision_loss)]
        self.batch_size.get_or_create(&BatchLabel { kind }).observe(size as f64);
    }
}

/// A fresh registry with the control plane's metrics, shared with the admin listener.
pub fn registry() -> (Arc<Registry>, Metrics) {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    (Arc::new(registry), metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_the_legion_prefix() {
        let (registry, metrics) = registry();
        metrics.submitted.inc_by(3);
        metrics.starts.get_or_create(&DecisionLabel { decision: "run" }).inc();
        metrics.observe_batch("submit", 3);
        metrics.schedule_fires.get_or_create(&OutcomeLabel { outcome: "overlap" }).inc();
        metrics.schedule_lateness.observe(0.02);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("legion_tasks_submitted_total 3"), "{text}");
        assert!(text.contains("legion_task_starts_total{decision=\"run\"} 1"), "{text}");
        assert!(text.contains("legion_batch_size_count{kind=\"submit\"} 1"), "{text}");
        assert!(text.contains("legion_schedule_fires_total{outcome=\"overlap\"} 1"), "{text}");
        assert!(text.contains("legion_schedule_lateness_seconds_count 1"), "{text}");
    }
}
