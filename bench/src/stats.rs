//! Latency summaries and rates. Pure functions, exact (no histogram buckets): a benchmark run holds at
//! most a few hundred thousand samples, which sort in milliseconds.

use serde::Serialize;

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median (nearest rank), ms.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), ms.
    pub p99_ms: f64,
    /// Largest sample, ms.
    pub max_ms: f64,
    /// Arithmetic mean, ms.
    pub mean_ms: f64,
}

/// The nearest-rank percentile `q` (0.0 to 1.0) of `sorted` (ascending): the smallest sample such that
/// at least `q` of all samples are at or below it. `None` for no samples.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    // Rank is 1-based: ceil(q * n), at least 1.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// Summarizes `samples` (milliseconds, any order; NaN samples are dropped). `None` for no samples.
pub fn summarize(mut samples: Vec<f64>) -> Option<Summary> {
    samples.retain(|s| !s.is_nan());
    samples.sort_by(f64::total_cmp);
    let count = samples.len();
    #[allow(clippy::cast_precision_loss)]
    let mean_ms = samples.iter().sum::<f64>() / count as f64;
    Some(Summary {
        count,
        p50_ms: percentile(&samples, 0.50)?,
        p99_ms: percentile(&samples, 0.99)?,
        max_ms: *samples.last()?,
        mean_ms,
    })
}

/// `count` per second over `seconds`; 0 when no time passed.
pub fn rate(count: usize, seconds: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

/// Milliseconds from `from` to `to` (negative if `to` is earlier).
pub fn millis_between(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let micros = (to - from).num_microseconds().unwrap_or(i64::MAX) as f64;
    micros / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(50.0));
        assert_eq!(percentile(&sorted, 0.99), Some(99.0));
        assert_eq!(percentile(&sorted, 1.0), Some(100.0));
        assert_eq!(percentile(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        // 10 samples: p99 is the 10th, p50 the 5th.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 0.99), Some(10.0));
        assert_eq!(percentile(&ten, 0.5), Some(5.0));
    }

    #[test]
    fn summaries_sort_their_input_and_drop_nan() {
        let summary = summarize(vec![5.0, 1.0, f64::NAN, 3.0, 2.0, 4.0]).expect("samples");
        assert_eq!(summary, Summary { count: 5, p50_ms: 3.0, p99_ms: 5.0, max_ms: 5.0, mean_ms: 3.0 });
        assert_eq!(summarize(Vec::new()), None);
        assert_eq!(summarize(vec![f64::NAN]), None);
    }

    #[test]
    fn rates_and_durations() {
        assert!((rate(10_000, 4.0) - 2500.0).abs() < f64::EPSILON);
        assert!(rate(5, 0.0).abs() < f64::EPSILON);
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let t1 = t0 + chrono::Duration::microseconds(1_500);
        assert!((millis_between(t0, t1) - 1.5).abs() < 1e-9);
        assert!((millis_between(t1, t0) + 1.5).abs() < 1e-9);
    }
}
