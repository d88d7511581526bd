//! Deliveries in flight on this executor, keyed by `(task_id, dispatch)`, so that a second delivery of
//! a message whose attempt is already in flight here is attached to that attempt instead of being run
//! a second time.
//!
//! Why: when the broker connection drops, the broker requeues every unacked message and redelivers it
//! (`redelivered`), often to this same executor once it has reconnected, while the runner started from
//! the first delivery is still running (runners outlive the connection). Starting it again would make
//! the control plane take the task over (a redelivery of a running task) and run its side effect twice.
//!
//! The rule, applied to every decoded delivery:
//! - no delivery of the same `(task_id, dispatch)` is in flight here → this delivery is the *owner*: it
//!   calls `StartTask` and, on `RUN`, runs and completes the attempt as the delivery protocol says;
//! - a delivery of the same `(task_id, dispatch)` is in flight here (starting, running, or reporting
//!   its completion) → this delivery is *attached*: no `StartTask`, no run; it waits for the owner's
//!   settlement and settles itself the same way. So when the owner's completion is answered, the new
//!   delivery is acked (the owner's own delivery belongs to a dead channel, its ack fails harmlessly
//!   and the broker has already requeued it as this very redelivery); a drop acks it, a requeue
//!   requeues it;
//! - a delivery of the same task with another `dispatch` is a different publish (a retry or a replay):
//!   it is an owner of its own and `StartTask` decides, as usual;
//! - the owner leaves the table at the moment its settlement is decided, atomically with handing that
//!   settlement to the attached deliveries. A delivery arriving after that point finds no owner and
//!   calls `StartTask`, which drops it (the task finished, or was given a new dispatch) or takes it over
//!   as the protocol says: the race between an attempt finishing and its redelivery arriving resolves
//!   either way without a second run of the finished attempt;
//! - an owner that vanishes without a settlement (its task ended abnormally) releases its attached
//!   deliveries, which then claim the key again and go through `StartTask` themselves.
//!
//! Two deliveries of the same dispatch on one live channel (a message published twice by a control
//! plane that crashed between publishing and recording the confirm) attach the same way; the control
//! plane would have dropped the second one, and both are acked once the attempt is answered.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use uuid::Uuid;

/// A message's identity: the task and the dispatch (publish) the message carries.
pub type Key = (Uuid, u32);

/// The deliveries in flight; `S` is what an owner hands to its attached deliveries (the settlement).
#[derive(Debug)]
pub struct Deliveries<S> {
    entries: Mutex<HashMap<Key, Vec<oneshot::Sender<S>>>>,
}

impl<S> Default for Deliveries<S> {
    fn default() -> Self {
        Self { entries: Mutex::new(HashMap::new()) }
    }
}

/// The outcome of [`Deliveries::claim`].
#[derive(Debug)]
pub enum Claim<'a, S: Clone> {
    /// No delivery of this key was in flight: the caller processes the message and then calls
    /// [`Owner::finish`].
    Owner(Owner<'a, S>),
    /// A delivery of this key is in flight: the caller waits for its settlement. An error means the
    /// owner vanished without one; claim again.
    Attached(oneshot::Receiver<S>),
}

/// The right and duty to process a key. Dropping it without [`Owner::finish`] releases the attached
/// deliveries without a settlement.
#[derive(Debug)]
pub struct Owner<'a, S: Clone> {
    deliveries: &'a Deliveries<S>,
    key: Key,
    finished: bool,
}

impl<S> Deliveries<S> {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Vec<oneshot::Sender<S>>>> {
        // The map stays consistent whatever panicked while holding it: every operation is one insert
        // or remove.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims `key` for a new delivery (see the module docs).
    pub fn claim(&self, key: Key) -> Claim<'_, S>
    where
        S: Clone,
    {
        let mut entries = self.lock();
        match entries.get_mut(&key) {
            Some(attached) => {
                let (tx, rx) = oneshot::channel();
                attached.push(tx);
                Claim::Attached(rx)
            }
            None => {
                entries.insert(key, Vec::new());
                Claim::Owner(Owner { deliveries: self, key, finished: false })
            }
        }
    }

    /// Keys in flight now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no delivery is in flight.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn release(&self, key: &Key) -> Vec<oneshot::Sender<S>> {
        self.lock().remove(key).unwrap_or_default()
    }
}

impl<S: Clone> Owner<'_, S> {
    /// The key owned.
    pub fn key(&self) -> Key {
        self.key
    }

    /// Leaves the table and hands `settlement` to every attached delivery, atomically with respect to
    /// [`Deliveries::claim`]. Returns how many deliveries were attached.
    pub fn finish(mut self, settlement: S) -> usize {
        self.finished = true;
        let attached = self.deliveries.release(&self.key);
        let count = attached.len();
        for tx in attached {
            // An attached delivery whose task ended (shutdown) no longer listens; nothing to do.
            let _ = tx.send(settlement.clone());
        }
        count
    }
}

impl<S: Clone> Drop for Owner<'_, S> {
    fn drop(&mut self) {
        if !self.finished {
            // Dropping the senders wakes the attached deliveries with an error: they claim again.
            drop(self.deliveries.release(&self.key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dispatch: u32) -> (Uuid, u32) {
        (Uuid::from_u128(7), dispatch)
    }

    #[tokio::test]
    async fn a_second_delivery_of_the_same_dispatch_attaches_and_gets_the_settlement() {
        let d: Deliveries<&'static str> = Deliveries::default();
        let Claim::Owner(owner) = d.claim(key(1)) else { panic!("first delivery owns") };
        let Claim::Attached(first) = d.claim(key(1)) else { panic!("second delivery attaches") };
        let Claim::Attached(second) = d.claim(key(1)) else { panic!("third delivery attaches") };
        assert_eq!(d.len(), 1);
        assert_eq!(owner.finish("ack"), 2);
        assert_eq!(first.await, Ok("ack"));
        assert_eq!(second.await, Ok("ack"));
        assert!(d.is_empty());
    }

    #[test]
    fn another_dispatch_is_another_owner() {
        let d: Deliveries<()> = Deliveries::default();
        let Claim::Owner(_one) = d.claim(key(1)) else { panic!("owner") };
        let Claim::Owner(_two) = d.claim(key(2)) else { panic!("dispatch 2 is a new publish: its own owner") };
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn after_finishing_a_new_delivery_owns_again() {
        let d: Deliveries<()> = Deliveries::default();
        let Claim::Owner(owner) = d.claim(key(1)) else { panic!("owner") };
        assert_eq!(owner.finish(()), 0);
        assert!(matches!(d.claim(key(1)), Claim::Owner(_)), "a late redelivery goes to StartTask");
    }

    #[tokio::test]
    async fn a_vanished_owner_releases_its_attached_deliveries_without_a_settlement() {
        let d: Deliveries<()> = Deliveries::default();
        let owner = d.claim(key(1));
        let Claim::Attached(rx) = d.claim(key(1)) else { panic!("attached") };
        drop(owner);
        assert!(rx.await.is_err());
        assert!(d.is_empty());
        assert!(matches!(d.claim(key(1)), Claim::Owner(_)));
    }
}
