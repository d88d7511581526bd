//! Waiting with a deadline instead of sleeping: poll a probe until it succeeds ([`eventually`],
//! [`assert_eventually!`](crate::assert_eventually)) or check that it keeps succeeding for a while
//! ([`holds_for`]).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often probes run.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A probe did not succeed in time (or, for [`holds_for`], stopped succeeding). `Debug` prints the
/// same text as `Display`, for readable `expect` messages.
#[derive(thiserror::Error)]
#[error("{what}: {verdict} after {waited:?}; last observation: {last}")]
pub struct Timeout {
    /// What was awaited.
    pub what: String,
    /// "not reached" or "broken".
    pub verdict: &'static str,
    /// How long the harness polled.
    pub waited: Duration,
    /// The probe's last error.
    pub last: String,
}

impl std::fmt::Debug for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Runs `probe` every [`POLL_INTERVAL`] until it returns `Ok`, and returns that value. The probe's
/// `Err` describes what it saw, for the failure message.
///
/// # Errors
/// [`Timeout`] with the last observation when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut previous: Option<String> = None;
    loop {
        let last = match tokio::time::timeout(timeout.saturating_sub(start.elapsed()), probe()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(observed)) => observed,
            // Usually the last run, cut short by the deadline: keep what the run before it saw.
            Err(_) => match previous.take() {
                Some(seen) => format!("{seen} (the last probe did not return before the deadline)"),
                None => "the probe itself did not return in time".to_owned(),
            },
        };
        previous = Some(last.clone());
        if start.elapsed() >= timeout {
            return Err(Timeout { what: what.to_owned(), verdict: "not reached", waited: start.elapsed(), last });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Runs `probe` every [`POLL_INTERVAL`] for `duration` and requires every run to return `Ok`: for
/// conditions that must stay true (a task stays `pending` while the broker is down).
///
/// # Errors
/// [`Timeout`] with the first failed observation.
pub async fn holds_for<F, Fut>(what: &str, duration: Duration, mut probe: F) -> Result<(), Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        if let Err(last) = probe().await {
            return Err(Timeout { what: what.to_owned(), verdict: "broken", waited: start.elapsed(), last });
        }
        if start.elapsed() >= duration {
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `assert_eventually!(timeout, "what", || async { … Ok(v) / Err(observation) })`: awaits
/// [`eventually`] and panics with the last observation when the deadline passes; evaluates to the
/// probe's value.
#[macro_export]
macro_rules! assert_eventually {
    ($timeout:expr, $what:expr, $probe:expr $(,)?) => {
        match $crate::wait::eventually($what, $timeout, $probe).await {
            Ok(value) => value,
            Err(timeout) => panic!("{timeout}"),
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_success() {
        let calls = AtomicU32::new(0);
        let value = eventually("third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= 3 { Ok(n) } else { Err(format!("call {n}")) }
        })
        .await
        .expect("reached");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn eventually_reports_the_last_observation() {
        let err = eventually("never", Duration::from_millis(250), || async { Err::<(), _>("still no".to_owned()) })
            .await
            .expect_err("times out");
        assert_eq!((err.what.as_str(), err.verdict, err.last.as_str()), ("never", "not reached", "still no"));
        assert!(err.waited >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn holds_for_fails_on_the_first_break() {
        let calls = AtomicU32::new(0);
        let err = holds_for("stable", Duration::from_secs(5), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 { Ok(()) } else { Err("changed".to_owned()) }
        })
        .await
        .expect_err("breaks");
        assert_eq!((err.verdict, err.last.as_str()), ("broken", "changed"));
        holds_for("always", Duration::from_millis(200), || async { Ok(()) }).await.expect("holds");
    }

    #[tokio::test]
    async fn a_probe_cut_by_the_deadline_keeps_the_previous_observation() {
        let calls = AtomicU32::new(0);
        let err = eventually("slow", Duration::from_millis(300), || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err::<(), _>("status queued".to_owned())
            } else {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Err("never seen".to_owned())
            }
        })
        .await
        .expect_err("times out");
        assert_eq!(err.last, "status queued (the last probe did not return before the deadline)");
    }

    #[tokio::test]
    async fn the_macro_evaluates_to_the_value() {
        let v = assert_eventually!(Duration::from_secs(1), "now", || async { Ok::<_, String>(7) });
        assert_eq!(v, 7);
    }
}
