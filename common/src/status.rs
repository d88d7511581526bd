//! The status enums every process shares (DESIGN.md section 4, contract): a task's status, the state of
//! an extension on a node and a node's status.
//!
//! Each value has one lowercase name (`timed_out`, `dead_lettered`), the same everywhere: stored in
//! PostgreSQL (`tasks.status`, `node_extensions.state`, `nodes.status`), in the REST JSON (serde,
//! `snake_case`), in the OpenAPI document (utoipa) and on the command line. Each also has one value of
//! the matching `legion.v1` protobuf enum. The protobuf `*_UNSPECIFIED` value (and a number the enum
//! does not define) is none of them: converting it gives `None` or [`Error::UnknownProto`], and the
//! caller decides what that means (an invalid request, a corrupt response).
//!
//! The catalog state machine over [`ExtensionState`] (events and transitions) is the control plane's.

use std::fmt;
use std::str::FromStr;

use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A name or a protobuf value that is none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A name that is none of the lowercase names.
    #[error("unknown {kind} {name:?}; expected one of {}", .expected.join(", "))]
    UnknownName {
        /// What was parsed, e.g. `task status`.
        kind: &'static str,
        /// The name given.
        name: String,
        /// Every accepted name.
        expected: &'static [&'static str],
    },
    /// A protobuf enum number that is `*_UNSPECIFIED` or that the enum does not define.
    #[error("protobuf {kind} {value} is unspecified or unknown")]
    UnknownProto {
        /// What was converted, e.g. `task status`.
        kind: &'static str,
        /// The number given.
        value: i32,
    },
}

/// Defines a status enum whose variants match those of a `legion.v1` enum (less `Unspecified`) by name,
/// with its lowercase names, `ALL`, `NAMES`, `as_str`, the protobuf conversions, `FromStr` and
/// `Display`. The names given must be serde's `snake_case` of the variants (a test checks it).
macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $kind:literal, v1::$proto:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in lifecycle order.
            pub const ALL: [Self; [$($text),+].len()] = [$(Self::$variant),+];

            /// The names of [`Self::ALL`], in the same order.
            pub const NAMES: [&'static str; [$($text),+].len()] = [$($text),+];

            /// The lowercase name (`timed_out`): stored, in JSON and on the command line.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The protobuf enum value.
            pub fn to_proto(self) -> v1::$proto {
                match self {
                    $(Self::$variant => v1::$proto::$variant,)+
                }
            }

            /// The value of a protobuf enum value; `None` for `*_UNSPECIFIED`.
            pub fn from_proto(value: v1::$proto) -> Option<Self> {
                Self::ALL.into_iter().find(|s| s.to_proto() == value)
            }

            /// The value of a protobuf field, which holds the enum's number.
            ///
            /// # Errors
            /// [`Error::UnknownProto`] for `*_UNSPECIFIED` or a number the enum does not define.
            pub fn from_wire(value: i32) -> Result<Self, Error> {
                v1::$proto::try_from(value)
                    .ok()
                    .and_then(Self::from_proto)
                    .ok_or(Error::UnknownProto { kind: $kind, value })
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| Error::UnknownName {
                    kind: $kind,
                    name: s.to_owned(),
                    expected: &Self::NAMES,
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$name> for v1::$proto {
            fn from(value: $name) -> Self {
                value.to_proto()
            }
        }
    };
}

status_enum! {
    /// Lifecycle status of a task, as a lowercase string.
    pub enum TaskStatus as "task status", v1::TaskStatus {
        /// Accepted and durable; waiting in the outbox to be published to the broker.
        Pending => "pending",
        /// Waiting for `not_before`: a delay or a retry backoff.
        Scheduled => "scheduled",
        /// Published to the broker with a confirm; waiting for an executor.
        Queued => "queued",
        /// An executor runs the current attempt.
        Running => "running",
        /// Terminal: the function returned a result.
        Succeeded => "succeeded",
        /// Terminal: the last attempt failed.
        Failed => "failed",
        /// Terminal: cancelled by a caller.
        Cancelled => "cancelled",
        /// Terminal: the last attempt ran past its timeout.
        TimedOut => "timed_out",
        /// Terminal: delivered more often than `transport.delivery_limit`, or unroutable.
        DeadLettered => "dead_lettered",
        /// Terminal: a chain condition was false.
        Skipped => "skipped",
    }
}

impl TaskStatus {
    /// Whether the status is final, never to change again: succeeded, failed, cancelled, timed_out,
    /// dead_lettered or skipped.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut | Self::DeadLettered | Self::Skipped
        )
    }
}

status_enum! {
    /// State of an extension on a node (the catalog state machine), as a lowercase string.
    pub enum ExtensionState as "extension state", v1::ExtensionState {
        /// The node announced the extension.
        Registered => "registered",
        /// The extension's code is loaded on the node.
        Loaded => "loaded",
        /// The node consumes the extension's queue.
        Running => "running",
        /// The node is stopping the extension.
        Stopping => "stopping",
        /// The node stopped the extension.
        Stopped => "stopped",
        /// The extension failed on the node.
        Failed => "failed",
        /// An operator disabled the extension: no dispatch.
        Disabled => "disabled",
    }
}

status_enum! {
    /// Status of a node, as a lowercase string.
    pub enum NodeStatus as "node status", v1::NodeStatus {
        /// Heartbeating and taking tasks.
        Active => "active",
        /// Shutting down: finishes its tasks and takes no new ones.
        Draining => "draining",
        /// Silent for longer than `control_plane.node_lease_ms`.
        Lost => "lost",
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use serde::de::DeserializeOwned;

    use super::*;

    /// Each name parses back, displays as itself and is the JSON string; bad names are refused with
    /// an error that lists the accepted ones.
    fn names_round_trip<T>(all: &[T], as_str: fn(T) -> &'static str)
    where
        T: Copy + Debug + PartialEq + FromStr<Err = Error> + fmt::Display + Serialize + DeserializeOwned,
    {
        for value in all.iter().copied() {
            let name = as_str(value);
            assert_eq!(name.parse::<T>(), Ok(value));
            assert_eq!(value.to_string(), name);
            assert_eq!(serde_json::to_value(value).expect("serializes"), serde_json::json!(name), "{name}");
            assert_eq!(serde_json::from_value::<T>(serde_json::json!(name)).expect("deserializes"), value);
        }
        for bad in ["bogus", "unspecified", "", "RUNNING", "Running"] {
            let err = bad.parse::<T>().expect_err(bad);
            let names: Vec<&str> = all.iter().map(|v| as_str(*v)).collect();
            assert!(err.to_string().ends_with(&format!("{bad:?}; expected one of {}", names.join(", "))), "{err}");
        }
    }

    #[test]
    fn task_statuses_have_their_contract_names() {
        assert_eq!(
            TaskStatus::NAMES,
            [
                "pending",
                "scheduled",
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                "timed_out",
                "dead_lettered",
                "skipped"
            ]
        );
        names_round_trip(&TaskStatus::ALL, TaskStatus::as_str);
        assert_eq!(
            "done".parse::<TaskStatus>().map_err(|e| e.to_string()),
            Err("unknown task status \"done\"; expected one of pending, scheduled, queued, running, succeeded, \
                 failed, cancelled, timed_out, dead_lettered, skipped"
                .to_owned())
        );
    }

    #[test]
    fn extension_states_have_their_contract_names() {
        assert_eq!(
            ExtensionState::NAMES,
            ["registered", "loaded", "running", "stopping", "stopped", "failed", "disabled"]
        );
        names_round_trip(&ExtensionState::ALL, ExtensionState::as_str);
    }

    #[test]
    fn node_statuses_have_their_contract_names() {
        assert_eq!(NodeStatus::NAMES, ["active", "draining", "lost"]);
        names_round_trip(&NodeStatus::ALL, NodeStatus::as_str);
    }

    #[test]
    fn terminal_statuses_match_the_contract() {
        let terminal: Vec<&str> =
            TaskStatus::ALL.into_iter().filter(|s| s.is_terminal()).map(TaskStatus::as_str).collect();
        assert_eq!(terminal, ["succeeded", "failed", "cancelled", "timed_out", "dead_lettered", "skipped"]);
    }

    /// Each value converts to a distinct protobuf value and back; `*_UNSPECIFIED` and unknown numbers
    /// convert to no value.
    fn proto_round_trip<T, P>(
        all: &[T],
        kind: &'static str,
        to_proto: fn(T) -> P,
        from_proto: fn(P) -> Option<T>,
        from_wire: fn(i32) -> Result<T, Error>,
        unspecified: P,
    ) where
        T: Copy + Debug + PartialEq,
        P: Copy + Into<i32>,
    {
        for value in all.iter().copied() {
            let proto = to_proto(value);
            assert_eq!(from_proto(proto), Some(value));
            assert_eq!(from_wire(proto.into()), Ok(value));
        }
        assert_eq!(from_proto(unspecified), None);
        for number in [unspecified.into(), 99, -1] {
            assert_eq!(from_wire(number), Err(Error::UnknownProto { kind, value: number }));
        }
    }

    #[test]
    fn values_round_trip_through_protobuf() {
        use {ExtensionState as E, NodeStatus as N, TaskStatus as T};
        proto_round_trip(&T::ALL, "task status", T::to_proto, T::from_proto, T::from_wire, v1::TaskStatus::Unspecified);
        let unspecified = v1::ExtensionState::Unspecified;
        proto_round_trip(&E::ALL, "extension state", E::to_proto, E::from_proto, E::from_wire, unspecified);
        proto_round_trip(&N::ALL, "node status", N::to_proto, N::from_proto, N::from_wire, v1::NodeStatus::Unspecified);

        assert_eq!(v1::TaskStatus::from(TaskStatus::TimedOut), v1::TaskStatus::TimedOut);
        assert_eq!(
            TaskStatus::from_wire(0).map_err(|e| e.to_string()),
            Err("protobuf task status 0 is unspecified or unknown".to_owned())
        );
    }

    /// The OpenAPI schema of each enum lists exactly its names, and no `unspecified`.
    #[test]
    fn schemas_list_the_names() {
        fn enum_values<T: ToSchema>() -> serde_json::Value {
            serde_json::to_value(T::schema()).expect("schema serializes")["enum"].clone()
        }
        assert_eq!(enum_values::<TaskStatus>(), serde_json::json!(TaskStatus::NAMES));
        assert_eq!(enum_values::<ExtensionState>(), serde_json::json!(ExtensionState::NAMES));
        assert_eq!(enum_values::<NodeStatus>(), serde_json::json!(NodeStatus::NAMES));
    }
}
