//! The queues one session consumes and the state of each, without I/O: for every loaded extension
//! `legion.ext.<ext>` and `legion.ext.<ext>.<region>` (the tasks of this executor's region), each
//! consuming (with its consumer tag), waiting to be consumed again after the broker cancelled its
//! consumer (with a capped backoff), or off (the extension is disabled).
//!
//! An extension is reported `running` only while every one of its queues is consumed; while one is
//! not (its consumer was cancelled by the broker, e.g. the queue was deleted), it is reported
//! `stopped`, which makes the node unready (see [`crate::state`]); both are valid transitions of the
//! catalog state machine.

use std::collections::BTreeMap;
use std::time::Duration;

use legion_common::broker;
use legion_proto::v1::ExtensionState;
use tokio::time::Instant;

use crate::backoff::Backoff;

/// First delay before consuming a queue again after the broker cancelled its consumer.
pub const RESUBSCRIBE_INITIAL: Duration = Duration::from_millis(200);
/// Longest delay between two attempts to consume a queue again.
pub const RESUBSCRIBE_MAX: Duration = Duration::from_secs(10);
/// A consumer that lived this long starts the backoff of its queue over when it is cancelled.
pub const STABLE_CONSUMER: Duration = Duration::from_secs(30);

/// One queue of an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// The extension.
    pub extension: String,
    /// `None` for the region-free queue, `Some(region)` for the region's.
    pub region: Option<String>,
    /// The queue's name (`legion.ext.<ext>` or `legion.ext.<ext>.<region>`).
    pub name: String,
}

/// What a queue is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not consumed: the extension is disabled (or the session has not consumed it yet).
    Off,
    /// Consumed by the consumer `tag` since `since`.
    Consuming {
        /// The consumer tag.
        tag: String,
        /// When consuming started.
        since: Instant,
    },
    /// The broker cancelled the consumer; consume again at `due`.
    Waiting {
        /// When to try again.
        due: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    queue: Queue,
    status: Status,
    backoff: Backoff,
}

/// Every queue of the loaded extensions, by queue name.
#[derive(Debug)]
pub struct Subscriptions {
    entries: BTreeMap<String, Entry>,
}

impl Subscriptions {
    /// The queues of `extensions` for an executor of `region`, all off.
    pub fn new(extensions: &[String], region: &str) -> Self {
        let mut entries = BTreeMap::new();
        for extension in extensions {
            for region in [None, Some(region.to_owned())] {
                let name = broker::extension_queue(extension, region.as_deref());
                let queue = Queue { extension: extension.clone(), region, name: name.clone() };
                let backoff = Backoff::new(RESUBSCRIBE_INITIAL, RESUBSCRIBE_MAX);
                entries.insert(name, Entry { queue, status: Status::Off, backoff });
            }
        }
        Self { entries }
    }

    /// The queues of `extension`, region-free first.
    pub fn queues_of(&self, extension: &str) -> Vec<Queue> {
        let mut queues: Vec<Queue> =
            self.entries.values().filter(|e| e.queue.extension == extension).map(|e| e.queue.clone()).collect();
        queues.sort_by_key(|q| q.region.is_some());
        queues
    }

    /// The queue named `name`.
    pub fn queue(&self, name: &str) -> Option<Queue> {
        self.entries.get(name).map(|e| e.queue.clone())
    }

    /// The status of the queue named `name`.
    pub fn status(&self, name: &str) -> Option<&Status> {
        self.entries.get(name).map(|e| &e.status)
    }

    /// Records that `queue` is consumed by `tag` from `now`.
    pub fn consuming(&mut self, queue: &str, tag: String, now: Instant) {
        if let Some(e) = self.entries.get_mut(queue) {
            e.status = Status::Consuming { tag, since: now };
        }
    }

    /// Records that consuming `queue` failed or stopped: try again after the queue's next backoff
    /// delay. Returns that delay.
    pub fn retry_later(&mut self, queue: &str, now: Instant) -> Duration {
        let Some(e) = self.entries.get_mut(queue) else { return Duration::ZERO };
        let delay = e.backoff.next_delay();
        e.status = Status::Waiting { due: now + delay };
        delay
    }

    /// The consumer `tag` of `queue` ended. Returns `true` when it was the queue's live consumer (the
    /// broker cancelled it; the queue now waits to be consumed again, see [`Self::retry_later`]), and
    /// `false` for a consumer we cancelled ourselves or one that was already replaced.
    pub fn consumer_ended(&mut self, queue: &str, tag: &str, now: Instant) -> bool {
        let Some(e) = self.entries.get_mut(queue) else { return false };
        match &e.status {
            Status::Consuming { tag: live, since } if live == tag => {
                if now.saturating_duration_since(*since) >= STABLE_CONSUMER {
                    e.backoff.reset();
                }
                self.retry_later(queue, now);
                true
            }
            _ => false,
        }
    }

    /// Turns every queue of `extension` off; returns the tags of the consumers to cancel.
    pub fn turn_off(&mut self, extension: &str) -> Vec<(String, String)> {
        let mut tags = Vec::new();
        for e in self.entries.values_mut().filter(|e| e.queue.extension == extension) {
            if let Status::Consuming { tag, .. } = &e.status {
                tags.push((e.queue.name.clone(), tag.clone()));
            }
            e.status = Status::Off;
            e.backoff.reset();
        }
        tags
    }

    /// Every live consumer as `(queue, tag)`.
    pub fn consumers(&self) -> Vec<(String, String)> {
        self.entries
            .values()
            .filter_map(|e| match &e.status {
                Status::Consuming { tag, .. } => Some((e.queue.name.clone(), tag.clone())),
                _ => None,
            })
            .collect()
    }

    /// The earliest time a waiting queue is due, if any waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match e.status {
                Status::Waiting { due } => Some(due),
                _ => None,
            })
            .min()
    }

    /// The waiting queues due at `now`.
    pub fn due(&self, now: Instant) -> Vec<Queue> {
        self.entries
            .values()
            .filter(|e| matches!(e.status, Status::Waiting { due } if due <= now))
            .map(|e| e.queue.clone())
            .collect()
    }

    /// The state to report for an enabled `extension`: `running` while every one of its queues is
    /// consumed, `stopped` otherwise.
    pub fn extension_state(&self, extension: &str) -> ExtensionState {
        let mut queues = self.entries.values().filter(|e| e.queue.extension == extension).peekable();
        if queues.peek().is_some() && queues.all(|e| matches!(e.status, Status::Consuming { .. })) {
            ExtensionState::Running
        } else {
            ExtensionState::Stopped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs() -> Subscriptions {
        Subscriptions::new(&["core".into(), "log".into()], "eu-west")
    }

    #[test]
    fn every_extension_has_its_region_free_and_its_region_queue() {
        let s = subs();
        let names: Vec<String> = s.queues_of("core").into_iter().map(|q| q.name).collect();
        assert_eq!(names, vec!["legion.ext.core", "legion.ext.core.eu-west"]);
        assert_eq!(s.queue("legion.ext.log.eu-west").and_then(|q| q.region), Some("eu-west".into()));
        assert_eq!(s.queue("legion.ext.log").and_then(|q| q.region), None);
    }

    #[test]
    fn an_extension_runs_only_while_all_its_queues_are_consumed() {
        let mut s = subs();
        let now = Instant::now();
        assert_eq!(s.extension_state("core"), ExtensionState::Stopped);
        s.consuming("legion.ext.core", "t1".into(), now);
        assert_eq!(s.extension_state("core"), ExtensionState::Stopped, "the region queue is not consumed yet");
        s.consuming("legion.ext.core.eu-west", "t2".into(), now);
        assert_eq!(s.extension_state("core"), ExtensionState::Running);
        assert!(s.consumer_ended("legion.ext.core", "t1", now), "a broker cancel");
        assert_eq!(s.extension_state("core"), ExtensionState::Stopped);
        assert_eq!(s.extension_state("unknown"), ExtensionState::Stopped);
    }

    #[test]
    fn a_cancelled_queue_is_due_after_a_growing_backoff() {
        let mut s = subs();
        let now = Instant::now();
        s.consuming("legion.ext.core", "t1".into(), now);
        assert!(s.consumer_ended("legion.ext.core", "t1", now));
        let Some(Status::Waiting { due }) = s.status("legion.ext.core").cloned() else { panic!("waiting") };
        assert!(due > now && due <= now + RESUBSCRIBE_INITIAL);
        assert_eq!(s.next_due(), Some(due));
        assert!(s.due(now).is_empty());
        assert_eq!(s.due(due).into_iter().map(|q| q.name).collect::<Vec<_>>(), vec!["legion.ext.core"]);
        let second = s.retry_later("legion.ext.core", now);
        assert!(second >= RESUBSCRIBE_INITIAL && second <= RESUBSCRIBE_INITIAL * 2, "{second:?}");
        s.consuming("legion.ext.core", "t2".into(), now);
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn our_own_cancels_and_replaced_consumers_are_not_broker_cancels() {
        let mut s = subs();
        let now = Instant::now();
        s.consuming("legion.ext.core", "t1".into(), now);
        s.consuming("legion.ext.core.eu-west", "t2".into(), now);
        let mut tags = s.turn_off("core");
        tags.sort();
        assert_eq!(
            tags,
            vec![("legion.ext.core".into(), "t1".into()), ("legion.ext.core.eu-west".into(), "t2".into())]
        );
        assert!(!s.consumer_ended("legion.ext.core", "t1", now), "cancelled by us: off stays off");
        assert_eq!(s.status("legion.ext.core"), Some(&Status::Off));
        s.consuming("legion.ext.core", "t3".into(), now);
        assert!(!s.consumer_ended("legion.ext.core", "t1", now), "an old consumer of the queue");
        assert!(s.consumers().contains(&("legion.ext.core".into(), "t3".into())));
    }
}
