//! What the node knows about itself, shared by the consumer, the heartbeat loop and the admin
//! listener: registration, draining, and the state of each loaded extension as the executor sees it.
//!
//! Extension states reported in heartbeats, chosen so that each report is a valid transition of the
//! control plane's catalog state machine (`control-plane/src/catalog/state.rs`): `loaded` until its
//! queue is first consumed, `running` while consuming, `stopped` while the broker is unreachable (and
//! `running` again once reconnected), `stopping` while the node drains, `stopped` in the final
//! heartbeat. An extension the operator disabled is not consumed and not reported: its state on the
//! node is the operator's (`disabled`), and a report from the node must not race with an enable.
//! Readiness (`/readyz`) is: registered, not draining, and every enabled extension consuming.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use legion_common::admin::Readiness;
use legion_proto::v1::{ExtensionState, ExtensionStatus};
use tokio::sync::Notify;

/// The node's state. Shared as `Arc`.
#[derive(Debug)]
pub struct NodeState {
    registered: AtomicBool,
    draining: AtomicBool,
    extensions: Mutex<BTreeMap<String, ExtensionState>>,
    readiness: Readiness,
    changed: Notify,
}

impl NodeState {
    /// The state of a node that loaded `extensions` (all `loaded`, not registered, not ready).
    pub fn new(extensions: &[String], readiness: Readiness) -> Self {
        readiness.set(false);
        Self {
            registered: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            extensions: Mutex::new(extensions.iter().map(|e| (e.clone(), ExtensionState::Loaded)).collect()),
            readiness,
            changed: Notify::new(),
        }
    }

    /// Marks the node registered with the control plane.
    pub fn set_registered(&self) {
        self.registered.store(true, Ordering::SeqCst);
        self.update_readiness();
    }

    /// Marks the node draining: every enabled extension `stopping`, not ready.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.set_all(ExtensionState::Stopping);
    }

    /// Whether the node is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Sets one extension's state (ignored for an extension that is not loaded, and, once draining,
    /// for anything but `stopped`).
    pub fn set_extension(&self, extension: &str, state: ExtensionState) {
        if self.draining() && state != ExtensionState::Stopped && state != ExtensionState::Stopping {
            return;
        }
        let mut changed = false;
        if let Ok(mut map) = self.extensions.lock()
            && let Some(current) = map.get_mut(extension)
        {
            changed = *current != state;
            *current = state;
        }
        self.update_readiness();
        if changed {
            self.changed.notify_one();
        }
    }

    /// Sets every enabled (not `disabled`) extension's state.
    pub fn set_all(&self, state: ExtensionState) {
        if let Ok(mut map) = self.extensions.lock() {
            map.values_mut().filter(|s| **s != ExtensionState::Disabled).for_each(|s| *s = state);
        }
        self.update_readiness();
        self.changed.notify_one();
    }

    /// Resolves after the next change of an extension's state (the heartbeat loop reports it at once).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Marks every extension not consuming (the broker connection is gone): `disabled` for those in
    /// `disabled`, `stopped` for those that were `running`; `loaded` ones stay `loaded`.
    pub fn set_not_consuming(&self, disabled: &BTreeSet<String>) {
        let current: Vec<(String, ExtensionState)> =
            self.extensions.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
        for (name, state) in current {
            if disabled.contains(&name) {
                self.set_extension(&name, ExtensionState::Disabled);
            } else if state == ExtensionState::Running || state == ExtensionState::Disabled {
                self.set_extension(&name, ExtensionState::Stopped);
            }
        }
    }

    /// The state of each enabled extension, for heartbeats (disabled ones are left out, see the module
    /// docs).
    pub fn extension_statuses(&self) -> Vec<ExtensionStatus> {
        self.extensions
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, state)| **state != ExtensionState::Disabled)
                    .map(|(name, state)| ExtensionStatus {
                        name: name.clone(),
                        state: *state as i32,
                        reason: String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The state of one extension.
    pub fn extension(&self, name: &str) -> Option<ExtensionState> {
        self.extensions.lock().ok().and_then(|m| m.get(name).copied())
    }

    fn update_readiness(&self) {
        let consuming = self.extensions.lock().is_ok_and(|m| {
            m.values().any(|s| *s == ExtensionState::Running)
                && m.values().all(|s| matches!(s, ExtensionState::Running | ExtensionState::Disabled))
        });
        self.readiness.set(self.registered.load(Ordering::SeqCst) && !self.draining() && consuming);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (NodeState, Readiness) {
        let readiness = Readiness::default();
        (NodeState::new(&["core".into(), "http".into()], readiness.clone()), readiness)
    }

    #[test]
    fn ready_once_registered_and_consuming_every_enabled_extension() {
        let (s, ready) = state();
        s.set_extension("core", ExtensionState::Running);
        s.set_extension("http", ExtensionState::Running);
        assert!(!ready.get(), "not registered yet");
        s.set_registered();
        assert!(ready.get());
        s.set_extension("http", ExtensionState::Disabled);
        assert!(ready.get(), "a disabled extension does not make the node unready");
        s.set_not_consuming(&BTreeSet::from(["http".to_owned()]));
        assert!(!ready.get(), "broker gone");
        assert_eq!(s.extension("core"), Some(ExtensionState::Stopped));
        assert_eq!(s.extension("http"), Some(ExtensionState::Disabled));
        let reported: Vec<String> = s.extension_statuses().into_iter().map(|e| e.name).collect();
        assert_eq!(reported, vec!["core"], "disabled extensions are not reported");
        s.set_extension("core", ExtensionState::Running);
        assert!(ready.get(), "consuming again after reconnecting");
    }

    #[test]
    fn never_consumed_extensions_stay_loaded_when_the_broker_is_down() {
        let (s, _) = state();
        s.set_not_consuming(&BTreeSet::new());
        assert_eq!(s.extension("core"), Some(ExtensionState::Loaded));
    }

    #[test]
    fn draining_stops_everything_and_sticks() {
        let (s, ready) = state();
        s.set_registered();
        s.set_all(ExtensionState::Running);
        assert!(ready.get());
        s.set_draining();
        assert!(!ready.get());
        s.set_extension("core", ExtensionState::Running);
        assert_eq!(s.extension("core"), Some(ExtensionState::Stopping), "no way back from draining");
        s.set_all(ExtensionState::Stopped);
        let statuses = s.extension_statuses();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.iter().all(|e| e.state() == ExtensionState::Stopped));
        let (d, _) = state();
        d.set_extension("http", ExtensionState::Disabled);
        d.set_draining();
        assert_eq!(d.extension("http"), Some(ExtensionState::Disabled), "disabled stays disabled");
        let statuses = d.extension_statuses();
        assert_eq!(statuses.len(), 1);
        assert_eq!((statuses[0].name.as_str(), statuses[0].state()), ("core", ExtensionState::Stopping));
    }
}
