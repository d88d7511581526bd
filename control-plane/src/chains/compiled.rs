//! Chain versions parsed for firing, and a bounded in-memory cache of them.
//!
//! A chain version never changes once written (`chain_versions` rows are immutable), so a cached
//! version is never stale; a deleted chain is noticed by the store, which checks that the version still
//! exists before firing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::condition::Condition;
use super::transform::Transformation;
use super::{Definition, FieldError, Relationship};

/// Most chain versions kept parsed in memory; past it the cache is emptied and refilled on demand.
pub const CACHE_CAPACITY: usize = 1024;

/// A relationship with its conditions and transformation parsed.
#[derive(Debug, Clone)]
pub struct CompiledRelationship {
    /// As stored.
    pub relationship: Relationship,
    /// Parsed `conditions`.
    pub condition: Option<Condition>,
    /// Parsed `transformation`.
    pub transformation: Option<Transformation>,
}

/// A chain version ready to fire.
#[derive(Debug, Clone)]
pub struct CompiledChain {
    /// `chain_versions.id`.
    pub version: i64,
    /// The chain's depth cap, if it has its own.
    pub max_depth: Option<u32>,
    /// In the order applied.
    pub relationships: Vec<CompiledRelationship>,
}

impl CompiledChain {
    /// Parses a stored definition. Definitions were validated when applied, so the size limits are not
    /// checked again.
    ///
    /// # Errors
    /// [`FieldError`] when a stored document no longer parses (a version written by a newer Legion).
    pub fn compile(version: i64, definition: &Definition) -> Result<Self, FieldError> {
        let relationships = definition
            .relationships
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let condition =
                    r.conditions.as_ref().map(|c| Condition::parse(c, &format!("relationships[{i}].conditions")));
                let transformation = r
                    .transformation
                    .as_ref()
                    .map(|t| Transformation::parse(t, &format!("relationships[{i}].transformation"), usize::MAX));
                Ok(CompiledRelationship {
                    relationship: r.clone(),
                    condition: condition.transpose()?,
                    transformation: transformation.transpose()?,
                })
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        Ok(Self { version, max_depth: definition.max_depth, relationships })
    }

    /// The active relationships fired by a task of `function`, in order.
    pub fn fired_by(&self, function: &str) -> Vec<&CompiledRelationship> {
        self.relationships.iter().filter(|r| r.relationship.active && r.relationship.trigger == function).collect()
    }
}

/// Parsed chain versions by id. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ChainCache {
    versions: Arc<Mutex<HashMap<i64, Arc<CompiledChain>>>>,
}

impl ChainCache {
    /// The cached version, if any.
    pub fn get(&self, version: i64) -> Option<Arc<CompiledChain>> {
        self.versions.lock().ok().and_then(|map| map.get(&version).cloned())
    }

    /// Caches a version and returns it.
    pub fn insert(&self, chain: CompiledChain) -> Arc<CompiledChain> {
        let chain = Arc::new(chain);
        if let Ok(mut map) = self.versions.lock() {
            if map.len() >= CACHE_CAPACITY {
                map.clear();
            }
            map.insert(chain.version, chain.clone());
        }
        chain
    }
}
