//! The catalog state machine: the lifecycle of one extension on one node (DESIGN.md section 4,
//! docs/architecture.md "Catalog state machine").
//!
//! The lifecycle is `registered → loaded → running → stopping → stopped`; any state can `fail`; an
//! operator `disable`s and `enable`s. The full table (state × event → next state; `-` is refused):
//!
//! | state \ event | register   | load   | start   | stop     | stopped | fail   | disable  | enable |
//! |---------------|------------|--------|---------|----------|---------|--------|----------|--------|
//! | registered    | registered | loaded | -       | -        | -       | failed | disabled | -      |
//! | loaded        | registered | -      | running | stopping | stopped | failed | disabled | -      |
//! | running       | registered | -      | -       | stopping | stopped | failed | disabled | -      |
//! | stopping      | registered | -      | -       | -        | stopped | failed | disabled | -      |
//! | stopped       | registered | loaded | running | -        | -       | failed | disabled | -      |
//! | failed        | registered | loaded | running | -        | -       | failed | disabled | -      |
//! | disabled      | -          | -      | -       | -        | -       | failed | -        | loaded |
//!
//! Heartbeats report a *state*, not an event, and may skip short-lived states: so `stopped` is accepted
//! from `loaded` and `running` (a missed `stopping`), and `start` from `stopped` and `failed` (a restart
//! or a recovery between two heartbeats). Self-transitions are refused (callers skip a report equal to
//! the current state) except `register` (a restarted node registers again) and `fail` (a new reason).
//! A disabled extension stays disabled, whatever its nodes report, until an operator enables it.
//!
//! The states themselves, with their stored names and protobuf values, are
//! [`legion_common::ExtensionState`], shared with the gateway.

use std::fmt;

use legion_common::ExtensionState;

/// Something that happens to an extension on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The node (re)registers the extension.
    Register,
    /// The node loaded the extension.
    Load,
    /// The node started consuming.
    Start,
    /// The node begins to stop the extension.
    Stop,
    /// The node finished stopping the extension.
    Stopped,
    /// The extension failed.
    Fail,
    /// An operator disabled the extension.
    Disable,
    /// An operator enabled the extension again.
    Enable,
}

/// A refused transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `event` is not allowed in `state`.
    #[error("event {event} is not allowed in state {state}")]
    InvalidTransition {
        /// The current state.
        state: ExtensionState,
        /// The refused event.
        event: Event,
    },
}

/// Every event.
pub const ALL_EVENTS: [Event; 8] = [
    Event::Register,
    Event::Load,
    Event::Start,
    Event::Stop,
    Event::Stopped,
    Event::Fail,
    Event::Disable,
    Event::Enable,
];

/// Applies `event` to `state`.
///
/// # Errors
/// [`Error::InvalidTransition`] when the event is not allowed in that state (see the module docs).
pub fn transition(state: ExtensionState, event: Event) -> Result<ExtensionState, Error> {
    use Event as E;
    use ExtensionState as S;
    let next = match (state, event) {
        (S::Disabled, E::Enable) => S::Loaded,
        (S::Disabled, E::Fail) => S::Failed,
        (S::Disabled, _) => return Err(Error::InvalidTransition { state, event }),
        (_, E::Register) => S::Registered,
        (_, E::Fail) => S::Failed,
        (_, E::Disable) => S::Disabled,
        (S::Registered | S::Stopped | S::Failed, E::Load) => S::Loaded,
        (S::Loaded | S::Stopped | S::Failed, E::Start) => S::Running,
        (S::Loaded | S::Running, E::Stop) => S::Stopping,
        (S::Loaded | S::Running | S::Stopping, E::Stopped) => S::Stopped,
        _ => return Err(Error::InvalidTransition { state, event }),
    };
    Ok(next)
}

/// The event that leads to `state` when a node reports it (heartbeats report states).
pub fn event_for_reported(state: ExtensionState) -> Event {
    match state {
        ExtensionState::Registered => Event::Register,
        ExtensionState::Loaded => Event::Load,
        ExtensionState::Running => Event::Start,
        ExtensionState::Stopping => Event::Stop,
        ExtensionState::Stopped => Event::Stopped,
        ExtensionState::Failed => Event::Fail,
        ExtensionState::Disabled => Event::Disable,
    }
}

impl Event {
    /// The stored name, e.g. `start` (`node_extension_transitions.event`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Load => "load",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Stopped => "stopped",
            Self::Fail => "fail",
            Self::Disable => "disable",
            Self::Enable => "enable",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use ExtensionState as S;

    /// The full table: `expected(state, event)` is the next state or `None` for a refused event.
    #[rustfmt::skip]
    fn expected(state: ExtensionState, event: Event) -> Option<ExtensionState> {
        let row: [Option<ExtensionState>; 8] = match state {
            //                 register          load           start           stop             stopped          fail           disable           enable
            S::Registered => [Some(S::Registered), Some(S::Loaded), None, None, None, Some(S::Failed), Some(S::Disabled), None],
            S::Loaded => [Some(S::Registered), None, Some(S::Running), Some(S::Stopping), Some(S::Stopped), Some(S::Failed), Some(S::Disabled), None],
            S::Running => [Some(S::Registered), None, None, Some(S::Stopping), Some(S::Stopped), Some(S::Failed), Some(S::Disabled), None],
            S::Stopping => [Some(S::Registered), None, None, None, Some(S::Stopped), Some(S::Failed), Some(S::Disabled), None],
            S::Stopped => [Some(S::Registered), Some(S::Loaded), Some(S::Running), None, None, Some(S::Failed), Some(S::Disabled), None],
            S::Failed => [Some(S::Registered), Some(S::Loaded), Some(S::Running), None, None, Some(S::Failed), Some(S::Disabled), None],
            S::Disabled => [None, None, None, None, None, Some(S::Failed), None, Some(S::Loaded)],
        };
        let column = ALL_EVENTS.iter().position(|e| *e == event).expect("every event is in ALL_EVENTS");
        row[column]
    }

    #[test]
    fn every_state_event_pair_follows_the_table() {
        for state in S::ALL {
            for event in ALL_EVENTS {
                match (transition(state, event), expected(state, event)) {
                    (Ok(next), Some(want)) => assert_eq!(next, want, "{state} + {event}"),
                    (Err(Error::InvalidTransition { state: s, event: e }), None) => {
                        assert_eq!((s, e), (state, event));
                    }
                    (got, want) => panic!("{state} + {event}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn the_happy_path_runs_registered_to_stopped() {
        let mut state = S::Registered;
        for event in [E::Load, E::Start, E::Stop, E::Stopped] {
            state = transition(state, event).expect("lifecycle step");
        }
        assert_eq!(state, S::Stopped);
    }

    #[test]
    fn any_state_can_fail() {
        for state in S::ALL {
            assert_eq!(transition(state, E::Fail), Ok(S::Failed), "{state}");
        }
    }

    #[test]
    fn disabled_only_leaves_by_enable_or_failure() {
        let allowed: Vec<Event> = ALL_EVENTS.into_iter().filter(|e| transition(S::Disabled, *e).is_ok()).collect();
        assert_eq!(allowed, vec![E::Fail, E::Enable]);
        for state in S::ALL.into_iter().filter(|s| *s != S::Disabled) {
            assert_eq!(transition(state, E::Disable), Ok(S::Disabled), "{state}");
            assert!(transition(state, E::Enable).is_err(), "{state} + enable");
        }
    }

    #[test]
    fn a_reported_state_maps_to_the_event_that_reaches_it() {
        for state in S::ALL {
            let event = event_for_reported(state);
            assert!(S::ALL.iter().any(|from| transition(*from, event) == Ok(state)), "{state}");
        }
    }
}
