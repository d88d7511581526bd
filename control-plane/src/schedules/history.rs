//! Bounding the fire history: while this replica leads, it deletes each schedule's fire rows beyond
//! its `control_plane.schedule_history` newest (`docs/schedules.md`, "History").
//!
//! A **sweep** visits every schedule in id order, in passes of bounded work
//! ([`FireHistoryStore::prune_fires`]): at most [`PASS_INDEX_ENTRIES`] / `keep` schedules (1 to
//! [`MAX_PASS_SCHEDULES`]) and [`PASS_MAX_ROWS`] deleted rows per pass, one pass every [`PASS_PAUSE`].
//! After a complete sweep it waits `every` (a minute in the control plane) before the next. A
//! schedule may therefore hold more than `keep` rows for a while: what it fires between two visits.
//! Deleting old rows is idempotent, so it needs no fence: a replica that just lost the lease and
//! finishes a pass does no harm.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::dispatch::backoff::Backoff;
use crate::leader::Leadership;
use crate::store::schedules::{FireHistoryStore, Pruned};

/// Fire-row index entries a pass may walk to find where each schedule's history ends (each visited
/// schedule costs up to `keep`).
pub const PASS_INDEX_ENTRIES: u32 = 250_000;

/// Most schedules visited per pass.
pub const MAX_PASS_SCHEDULES: u32 = 1000;

/// Most rows deleted per pass.
pub const PASS_MAX_ROWS: u32 = 10_000;

/// The pause between two passes of a sweep.
pub const PASS_PAUSE: Duration = Duration::from_secs(1);

/// How the history is pruned.
#[derive(Debug, Clone, Copy)]
pub struct HistorySettings {
    /// Fire rows kept per schedule (`control_plane.schedule_history`).
    pub keep: u32,
    /// The wait between the end of a sweep and the start of the next.
    pub every: Duration,
}

impl HistorySettings {
    /// Schedules visited per pass: [`PASS_INDEX_ENTRIES`] / `keep`, 1 to [`MAX_PASS_SCHEDULES`].
    pub fn schedules_per_pass(&self) -> u32 {
        (PASS_INDEX_ENTRIES / self.keep.max(1)).clamp(1, MAX_PASS_SCHEDULES)
    }
}

/// Where a sweep is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// The last schedule id visited; `None` at the start of a sweep.
    pub after: Option<Uuid>,
    /// Rows deleted since the sweep started.
    pub deleted: u64,
}

/// Where the next pass starts after `pass` of a sweep at `sweep`, with `per_pass` schedules per pass and
/// at most `max_rows` rows: `None` when the sweep is complete.
pub fn next(sweep: Sweep, pass: Pruned, per_pass: u32, max_rows: u32) -> Option<Sweep> {
    let deleted = sweep.deleted + pass.deleted;
    if pass.deleted >= u64::from(max_rows) {
        // Cut short by the row limit: the same schedules again.
        return Some(Sweep { after: sweep.after, deleted });
    }
    if pass.visited < per_pass || pass.last.is_none() {
        return None;
    }
    Some(Sweep { after: pass.last, deleted })
}

/// Runs until `shutdown`, sweeping while `leadership` is `Some`.
pub async fn run(
    store: Arc<dyn FireHistoryStore>,
    settings: HistorySettings,
    mut leadership: watch::Receiver<Option<Leadership>>,
    shutdown: CancellationToken,
) {
    let per_pass = settings.schedules_per_pass();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut sweep = Sweep::default();
    loop {
        let wait = if leadership.borrow_and_update().is_none() {
            sweep = Sweep::default();
            None
        } else {
            match store.prune_fires(sweep.after, per_pass, settings.keep, PASS_MAX_ROWS).await {
                Ok(pass) => {
                    backoff.reset();
                    match next(sweep, pass, per_pass, PASS_MAX_ROWS) {
                        Some(more) => {
                            sweep = more;
                            Some(PASS_PAUSE)
                        }
                        None => {
                            if sweep.deleted + pass.deleted > 0 {
                                tracing::info!(
                                    deleted = sweep.deleted + pass.deleted,
                                    keep = settings.keep,
                                    "fire history pruned: older rows beyond control_plane.schedule_history deleted"
                                );
                            }
                            sweep = Sweep::default();
                            Some(settings.every)
                        }
                    }
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "cannot prune the fire history");
                    Some(delay)
                }
            }
        };
        match wait {
            Some(wait) => tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            },
            // Not leading: wait until it does.
            None => tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_visit_fewer_schedules_when_more_rows_are_kept() {
        let per = |keep| HistorySettings { keep, every: Duration::from_secs(60) }.schedules_per_pass();
        assert_eq!((per(100), per(10_000), per(250_000), per(1_000_000)), (1000, 25, 1, 1));
    }

    #[test]
    fn a_sweep_moves_on_repeats_a_pass_cut_short_and_ends() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let start = Sweep::default();
        // A full pass: the next one starts after its last schedule.
        let moved = next(start, Pruned { deleted: 5, visited: 2, last: Some(a) }, 2, 100).expect("more");
        assert_eq!(moved, Sweep { after: Some(a), deleted: 5 });
        // The row limit cut it short: the same schedules again.
        let again = next(moved, Pruned { deleted: 100, visited: 2, last: Some(b) }, 2, 100).expect("more");
        assert_eq!(again, Sweep { after: Some(a), deleted: 105 });
        // Fewer schedules than asked: the sweep is complete.
        assert_eq!(next(again, Pruned { deleted: 1, visited: 1, last: Some(b) }, 2, 100), None);
        assert_eq!(next(again, Pruned { deleted: 0, visited: 0, last: None }, 2, 100), None);
    }

    #[test]
    fn the_history_setting_is_bounded() {
        let mut settings = legion_common::Settings::default();
        for (keep, valid) in [(99, false), (100, true), (1_000_000, true), (1_000_001, false)] {
            settings.control_plane.schedule_history = keep;
            let result = settings.validate();
            assert_eq!(result.is_ok(), valid, "{keep}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("control_plane.schedule_history"), "{e}");
            }
        }
    }
}
