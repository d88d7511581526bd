//! Waiting until the control plane lists the expected number of active executors.
//!
//! An executor counts as ready when its node is `active` and it has loaded the extension of the
//! benchmarked function in a state that can take tasks (not failed, disabled, stopping or stopped). A
//! node that loaded no such extension (e.g. a control-plane node) does not count.

use std::time::{Duration, Instant};

use legion_proto::v1::catalog_service_client::CatalogServiceClient;
use legion_proto::v1::{ExtensionState, ListNodesRequest, Node, NodeStatus};

use crate::client::AuthChannel;

/// How often `ListNodes` is called while waiting.
pub const POLL: Duration = Duration::from_millis(250);

/// Why the wait ended without enough executors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The deadline passed.
    #[error(
        "waited {waited_s} s for {expected} active executor(s) with extension {extension}, saw {seen:?}{}",
        last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    Timeout {
        /// Seconds waited.
        waited_s: u64,
        /// Executors wanted.
        expected: usize,
        /// The extension they must have loaded.
        extension: String,
        /// Ready executors at the last successful call.
        seen: Vec<String>,
        /// The last gRPC error, if the last call failed.
        last_error: Option<String>,
    },
}

/// Names of the nodes in `nodes` that are active and have loaded `extension` in a usable state,
/// sorted.
pub fn ready_executors(nodes: &[Node], extension: &str) -> Vec<String> {
    let mut names: Vec<String> = nodes
        .iter()
        .filter(|node| node.status() == NodeStatus::Active)
        .filter(|node| {
            node.extensions.get(extension).is_some_and(|state| {
                !matches!(
                    ExtensionState::try_from(*state),
                    Ok(ExtensionState::Failed
                        | ExtensionState::Disabled
                        | ExtensionState::Stopping
                        | ExtensionState::Stopped)
                        | Err(_)
                )
            })
        })
        .map(|node| node.name.clone())
        .collect();
    names.sort();
    names
}

/// Calls `ListNodes` every [`POLL`] until at least `expected` executors are ready (see the module
/// docs), for at most `timeout`. Errors of single calls (e.g. the control plane is still starting) are
/// retried until the deadline. Returns the ready executors' names.
///
/// # Errors
/// [`Error::Timeout`] with what was seen last.
pub async fn wait_for_executors(
    client: &mut CatalogServiceClient<AuthChannel>,
    extension: &str,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<String>, Error> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut logged = None;
    loop {
        let last_error = match client.list_nodes(ListNodesRequest {}).await {
            Ok(response) => {
                seen = ready_executors(&response.into_inner().nodes, extension);
                if seen.len() >= expected {
                    return Ok(seen);
                }
                if logged != Some(seen.len()) {
                    tracing::info!(ready = seen.len(), expected, "waiting for executors");
                    logged = Some(seen.len());
                }
                None
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), error = status.message(), "list nodes failed");
                Some(format!("{:?}: {}", status.code(), status.message()))
            }
        };
        if started.elapsed() >= timeout {
            return Err(Error::Timeout {
                waited_s: started.elapsed().as_secs(),
                expected,
                extension: extension.to_owned(),
                seen,
                last_error,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, status: NodeStatus, extensions: &[(&str, ExtensionState)]) -> Node {
        Node {
            name: name.into(),
            status: status.into(),
            extensions: extensions.iter().map(|(n, s)| ((*n).to_owned(), i32::from(*s))).collect(),
            ..Node::default()
        }
    }

    #[test]
    fn only_active_nodes_with_a_usable_extension_count() {
        let nodes = [
            node("b-ready", NodeStatus::Active, &[("core", ExtensionState::Running)]),
            node(
                "a-loaded",
                NodeStatus::Active,
                &[("core", ExtensionState::Loaded), ("http", ExtensionState::Running)],
            ),
            node("lost", NodeStatus::Lost, &[("core", ExtensionState::Running)]),
            node("draining", NodeStatus::Draining, &[("core", ExtensionState::Running)]),
            node("failed", NodeStatus::Active, &[("core", ExtensionState::Failed)]),
            node("disabled", NodeStatus::Active, &[("core", ExtensionState::Disabled)]),
            node("stopped", NodeStatus::Active, &[("core", ExtensionState::Stopped)]),
            node("http-only", NodeStatus::Active, &[("http", ExtensionState::Running)]),
            node("control-plane", NodeStatus::Active, &[]),
        ];
        assert_eq!(ready_executors(&nodes, "core"), vec!["a-loaded".to_owned(), "b-ready".to_owned()]);
        assert_eq!(ready_executors(&nodes, "http"), vec!["a-loaded".to_owned(), "http-only".to_owned()]);
        assert!(ready_executors(&nodes, "file").is_empty());
    }

    #[test]
    fn an_unknown_state_number_does_not_count() {
        let mut n = node("x", NodeStatus::Active, &[]);
        n.extensions.insert("core".into(), 99);
        assert!(ready_executors(&[n], "core").is_empty());
    }
}
