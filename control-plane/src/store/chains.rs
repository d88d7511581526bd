//! Storage of chains and their immutable versions.

use async_trait::async_trait;

use super::Result;
use crate::chains::{Chain, Definition};

/// The outcome of [`ChainStore::apply_chain`].
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The chain after the apply.
    pub chain: Chain,
    /// No chain of this name existed.
    pub created: bool,
    /// A new version was written (false when the definition equals the current one, relationship ids
    /// aside).
    pub changed: bool,
}

/// Chains: named sets of relationships, each change a new immutable version.
#[async_trait]
pub trait ChainStore: Send + Sync {
    /// Creates chain `name` or gives it a new version with `definition`, recording `actor` as the
    /// author; an unchanged definition (ignoring relationship ids) writes nothing and keeps the current
    /// version and its relationship ids.
    async fn apply_chain(&self, name: &str, definition: &Definition, actor: &str) -> Result<Applied>;

    /// The chain with its current version, or `None`.
    async fn get_chain(&self, name: &str) -> Result<Option<Chain>>;

    /// Chains by name after `after` (exclusive): at most `limit`, and whether more follow.
    async fn list_chains(&self, after: Option<&str>, limit: u32) -> Result<(Vec<Chain>, bool)>;

    /// Deletes the chain and all its versions; false when it did not exist. Runs pinned to a deleted
    /// version create no further tasks.
    async fn delete_chain(&self, name: &str) -> Result<bool>;
}
