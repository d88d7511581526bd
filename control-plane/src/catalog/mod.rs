//! The extension catalog: which extensions, runners and functions executors offer, and the state of
//! each extension on each node, driven by the state machine of [`state`].

pub mod state;

use legion_common::ExtensionState;
use state::{Error, Event, transition};

/// One applied transition of the catalog state machine, as stored in `node_extension_transitions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state before; `None` when the node-extension is new.
    pub from: Option<ExtensionState>,
    /// The state after.
    pub to: ExtensionState,
    /// The event applied.
    pub event: Event,
}

/// The transitions a `RegisterNode` applies to one node-extension: `register`, `load`, and `disable`
/// when the extension is disabled. A node-extension that is disabled stays disabled while the
/// extension is; one left disabled after the extension was enabled is enabled.
pub fn on_register(current: Option<ExtensionState>, extension_disabled: bool) -> Vec<Transition> {
    let mut transitions = Vec::new();
    let mut state = current;
    let mut apply = |state: &mut Option<ExtensionState>, event: Event| {
        let next = match *state {
            None => (event == Event::Register).then_some(ExtensionState::Registered),
            Some(s) => transition(s, event).ok(),
        };
        if let Some(next) = next {
            transitions.push(Transition { from: *state, to: next, event });
            *state = Some(next);
        }
    };
    if state == Some(ExtensionState::Disabled) {
        if !extension_disabled {
            apply(&mut state, Event::Enable);
        }
        return transitions;
    }
    apply(&mut state, Event::Register);
    apply(&mut state, Event::Load);
    if extension_disabled {
        apply(&mut state, Event::Disable);
    }
    transitions
}

/// The transition a heartbeat's reported state asks for, if any: `Ok(None)` when nothing changed (the
/// same state; for `failed`, the same state and reason).
///
/// # Errors
/// [`Error::InvalidTransition`] when the reported state cannot follow the current one; the caller logs
/// it and keeps the current state.
pub fn on_report(
    current: ExtensionState,
    current_reason: Option<&str>,
    reported: ExtensionState,
    reported_reason: Option<&str>,
) -> Result<Option<Transition>, Error> {
    if current == reported && (reported != ExtensionState::Failed || current_reason == reported_reason) {
        return Ok(None);
    }
    let event = state::event_for_reported(reported);
    let to = transition(current, event)?;
    Ok(Some(Transition { from: Some(current), to, event }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(transitions: &[Transition]) -> Vec<(Option<ExtensionState>, ExtensionState, Event)> {
        transitions.iter().map(|t| (t.from, t.to, t.event)).collect()
    }

    #[test]
    fn a_new_node_extension_is_registered_then_loaded() {
        assert_eq!(
            path(&on_register(None, false)),
            vec![
                (None, ExtensionState::Registered, Event::Register),
                (Some(ExtensionState::Registered), ExtensionState::Loaded, Event::Load)
            ]
        );
    }

    #[test]
    fn a_disabled_extension_ends_disabled_on_a_new_node() {
        let transitions = on_register(None, true);
        assert_eq!(transitions.last().map(|t| (t.to, t.event)), Some((ExtensionState::Disabled, Event::Disable)));
        assert_eq!(transitions.len(), 3);
    }

    #[test]
    fn a_restarted_node_registers_again() {
        assert_eq!(
            path(&on_register(Some(ExtensionState::Running), false)),
            vec![
                (Some(ExtensionState::Running), ExtensionState::Registered, Event::Register),
                (Some(ExtensionState::Registered), ExtensionState::Loaded, Event::Load)
            ]
        );
    }

    #[test]
    fn a_disabled_node_extension_stays_disabled_or_is_enabled() {
        assert!(on_register(Some(ExtensionState::Disabled), true).is_empty());
        assert_eq!(
            path(&on_register(Some(ExtensionState::Disabled), false)),
            vec![(Some(ExtensionState::Disabled), ExtensionState::Loaded, Event::Enable)]
        );
    }

    #[test]
    fn reports_apply_valid_transitions_only() {
        assert_eq!(on_report(ExtensionState::Running, None, ExtensionState::Running, None), Ok(None));
        assert_eq!(
            on_report(ExtensionState::Loaded, None, ExtensionState::Running, None),
            Ok(Some(Transition {
                from: Some(ExtensionState::Loaded),
                to: ExtensionState::Running,
                event: Event::Start
            }))
        );
        assert!(on_report(ExtensionState::Disabled, None, ExtensionState::Running, None).is_err());
        assert!(on_report(ExtensionState::Registered, None, ExtensionState::Stopped, None).is_err());
        // A failure with a new reason is applied again so that the reason is kept; the same one is not.
        assert!(matches!(on_report(ExtensionState::Failed, Some("a"), ExtensionState::Failed, Some("b")), Ok(Some(_))));
        assert_eq!(on_report(ExtensionState::Failed, Some("a"), ExtensionState::Failed, Some("a")), Ok(None));
    }
}
