//! Vault-style policies and their evaluation, following HashiCorp Vault's documented ACL semantics
//! (<https://developer.hashicorp.com/vault/docs/concepts/policies>, "Priority matching").
//!
//! A policy is a list of rules `{path, capabilities}`. A rule path is exact (`tasks/core/util/echo`),
//! a glob that ends in `*` and matches every path with that prefix (`tasks/core/*`, `tasks/co*`), or
//! holds `+` segments that match exactly one path segment (`tasks/+/util/echo`, `tasks/+/util/*`).
//!
//! Evaluation of a set of policies against one resource path:
//! 1. Rules of the same path across the policies merge: `deny` anywhere makes the rule `deny` only;
//!    otherwise the capabilities are the union.
//! 2. An exact rule for the path wins outright.
//! 3. Otherwise, among the matching glob and `+` rules (for plain globs only the longest prefix takes
//!    part, as in Vault's radix-tree lookup) the highest-priority one wins, by Vault's order:
//!    a later first `+` or `*` wins; a non-prefix rule beats a prefix (`*`) rule; fewer `+` segments
//!    win; a longer rule wins; finally the lexicographically greater rule wins.
//! 4. The winning rule's capabilities are the answer, and `deny` among them means `deny` only. No
//!    matching rule means `deny`.
//!
//! Capabilities from two different rules never add up: the most specific rule decides alone, which is
//! how a `deny` on a narrow path overrides a broad allow, and how a narrow allow can grant less than a
//! broad one.

pub mod parse;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;

/// What a rule allows on its paths (Vault's capabilities, with `execute` for running functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Create a resource.
    Create,
    /// Read a resource.
    Read,
    /// Change a resource.
    Update,
    /// Remove a resource.
    Delete,
    /// List resources.
    List,
    /// Run a function (`runners/<extension>/<runner>/<function>`).
    Execute,
    /// Privileged operations on the path.
    Sudo,
    /// Nothing; overrides every other capability of the same rule.
    Deny,
}

impl Capability {
    /// Every capability, in display order.
    pub const ALL: [Self; 8] =
        [Self::Create, Self::Read, Self::Update, Self::Delete, Self::List, Self::Execute, Self::Sudo, Self::Deny];

    /// The lowercase name (`read`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Execute => "execute",
            Self::Sudo => "sudo",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Capability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
            format!("unknown capability {s:?}; expected one of {}", names.join(", "))
        })
    }
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Exact path, glob (`…*`) or a path with `+` segments.
    pub path: String,
    /// What the rule allows; `deny` overrides the rest.
    pub capabilities: BTreeSet<Capability>,
}

/// A named set of rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The policy's name.
    pub name: String,
    /// Its rules.
    pub rules: Vec<Rule>,
}

/// The name of the built-in policy that allows everything (Vault's `root`): bound to the bootstrap admin
/// key, and neither changeable nor deletable through the API.
pub const ADMIN_POLICY: &str = "admin";

impl Policy {
    /// The built-in [`ADMIN_POLICY`]: every capability but `deny` on every path (`*`).
    pub fn admin() -> Self {
        let capabilities = Capability::ALL.into_iter().filter(|c| *c != Capability::Deny).collect();
        Self { name: ADMIN_POLICY.to_owned(), rules: vec![Rule { path: "*".to_owned(), capabilities }] }
    }

    /// The rules as JSON: `[{"path","capabilities":[…]}]`, capabilities in display order.
    pub fn rules_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.rules
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "path": r.path,
                        "capabilities": r.capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }

    /// A policy from its stored JSON rules (see [`Policy::rules_json`]).
    ///
    /// # Errors
    /// [`parse::Invalid`] when the stored rules do not parse (a hand-edited row).
    pub fn from_rules_json(name: &str, rules: &serde_json::Value) -> Result<Self, parse::Invalid> {
        let items = rules.as_array().map(Vec::as_slice).unwrap_or_default();
        let pairs: Vec<(String, Vec<String>)> = items
            .iter()
            .map(|r| {
                let path = r.get("path").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
                let caps = r
                    .get("capabilities")
                    .and_then(serde_json::Value::as_array)
                    .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                (path, caps)
            })
            .collect();
        parse::parse_policy(name, &pairs)
    }
}

/// The merged rules of a set of policies, ready to answer capability questions.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    exact: HashMap<String, BTreeSet<Capability>>,
    globs: Vec<(String, BTreeSet<Capability>)>,
    wildcards: Vec<(String, BTreeSet<Capability>)>,
}

/// A matching non-exact rule and what ranks it (Vault's `wcPathDescr`).
struct Candidate<'a> {
    first_wildcard_or_glob: usize,
    is_prefix: bool,
    wildcards: usize,
    path: &'a str,
    capabilities: &'a BTreeSet<Capability>,
}

impl Candidate<'_> {
    /// Vault's priority order; `Less` means lower priority.
    fn priority_cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.first_wildcard_or_glob
            .cmp(&other.first_wildcard_or_glob)
            .then_with(|| other.is_prefix.cmp(&self.is_prefix))
            .then_with(|| other.wildcards.cmp(&self.wildcards))
            .then_with(|| self.path.len().cmp(&other.path.len()))
            .then_with(|| self.path.cmp(other.path))
    }
}

fn merge(into: &mut BTreeSet<Capability>, from: &BTreeSet<Capability>) {
    if into.contains(&Capability::Deny) || from.contains(&Capability::Deny) {
        *into = BTreeSet::from([Capability::Deny]);
    } else {
        into.extend(from.iter().copied());
    }
}

impl Acl {
    /// Merges `policies` (rules of the same path: `deny` wins, else union).
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Self {
        let mut merged: HashMap<&str, BTreeSet<Capability>> = HashMap::new();
        for rule in policies.into_iter().flat_map(|p| &p.rules) {
            match merged.get_mut(rule.path.as_str()) {
                Some(existing) => merge(existing, &rule.capabilities),
                None => {
                    let mut caps = BTreeSet::new();
                    merge(&mut caps, &rule.capabilities);
                    merged.insert(rule.path.as_str(), caps);
                }
            }
        }
        let mut acl = Self::default();
        for (path, caps) in merged {
            if path.contains('+') {
                acl.wildcards.push((path.to_owned(), caps));
            } else if path.ends_with('*') {
                acl.globs.push((path.to_owned(), caps));
            } else {
                acl.exact.insert(path.to_owned(), caps);
            }
        }
        acl
    }

    /// The capabilities on `path`: those of the winning rule, `{deny}` when it denies or when no rule
    /// matches. As Vault's `sys/capabilities` (which asks with a list operation), a path ending in `/`
    /// that has no exact rule also takes the exact rule of the path without it.
    pub fn capabilities(&self, path: &str) -> BTreeSet<Capability> {
        self.lookup(path, true)
    }

    /// Whether `path` allows `capability` (`deny` is never "allowed"). For `list`, a path ending in `/`
    /// also matches the exact rule without it, as Vault does for list operations.
    pub fn allows(&self, path: &str, capability: Capability) -> bool {
        capability != Capability::Deny && self.lookup(path, capability == Capability::List).contains(&capability)
    }

    /// Vault's `ACL.AllowOperation`: leading `/` dropped; the exact rule, then (list operations only)
    /// the exact rule without a trailing `/`; then the best glob or `+` rule, then (list operations only)
    /// the best one for the path without its trailing `/`. A `+` matches any one segment, an empty one
    /// included (answers checked against OpenBao 2.7.2).
    fn lookup(&self, path: &str, list: bool) -> BTreeSet<Capability> {
        let path = path.trim_start_matches('/');
        let deny = || BTreeSet::from([Capability::Deny]);
        // For list operations a trailing `/` is optional: `tasks/` also takes the rules of `tasks`.
        let bare = path.strip_suffix('/').filter(|_| list);
        let winner = self
            .exact
            .get(path)
            .or_else(|| bare.and_then(|p| self.exact.get(p)))
            .or_else(|| self.best_non_exact(path))
            .or_else(|| bare.and_then(|p| self.best_non_exact(p)));
        match winner {
            Some(caps) if !caps.contains(&Capability::Deny) && !caps.is_empty() => caps.clone(),
            _ => deny(),
        }
    }

    fn best_non_exact(&self, path: &str) -> Option<&BTreeSet<Capability>> {
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        // Plain globs: only the longest matching prefix takes part (Vault's radix LongestPrefix).
        if let Some((glob, caps)) = self
            .globs
            .iter()
            .filter(|(glob, _)| path.starts_with(&glob[..glob.len() - 1]))
            .max_by_key(|(glob, _)| glob.len())
        {
            candidates.push(Candidate {
                first_wildcard_or_glob: glob.len() - 1,
                is_prefix: true,
                wildcards: 0,
                path: glob,
                capabilities: caps,
            });
        }
        for (pattern, caps) in &self.wildcards {
            if let Some(candidate) = match_wildcard(pattern, path, caps) {
                candidates.push(candidate);
            }
        }
        candidates.into_iter().max_by(Candidate::priority_cmp).map(|c| c.capabilities)
    }
}

/// Matches a rule path holding `+` segments (and maybe a final `*`) against `path`.
fn match_wildcard<'a>(pattern: &'a str, path: &str, caps: &'a BTreeSet<Capability>) -> Option<Candidate<'a>> {
    let (body, is_prefix) = match pattern.strip_suffix('*') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    let pattern_segments: Vec<&str> = body.split('/').collect();
    let path_segments: Vec<&str> = path.split('/').collect();
    if path_segments.len() < pattern_segments.len() || (!is_prefix && path_segments.len() != pattern_segments.len()) {
        return None;
    }
    let last = pattern_segments.len() - 1;
    for (i, (want, got)) in pattern_segments.iter().zip(&path_segments).enumerate() {
        let ok = match *want {
            "+" => true,
            _ if is_prefix && i == last => got.starts_with(want),
            _ => want == got,
        };
        if !ok {
            return None;
        }
    }
    // A prefix rule's last segment matched the beginning of its path segment; the segments after it
    // are free (`foo/+/ba*` covers `foo/x/bar/baz`, as the glob of the joined path would).
    let first_wildcard_or_glob = pattern.find(['+', '*']).unwrap_or(pattern.len());
    let wildcards = pattern_segments.iter().filter(|s| **s == "+").count();
    Some(Candidate { first_wildcard_or_glob, is_prefix, wildcards, path: pattern, capabilities: caps })
}

#[cfg(test)]
mod tests;
