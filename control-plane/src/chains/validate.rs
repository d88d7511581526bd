//! Validation of a chain document when it is applied (pure, no I/O).
//!
//! Every error names the field by its path in the document (`relationships[2].conditions.all[0].fact:
//! required`), so an operator knows what to fix. Whether the trigger and action functions exist needs
//! the catalog: the caller asks it and calls [`unknown_functions`].

use std::collections::{BTreeMap, HashMap, HashSet};

use legion_common::FunctionName;
use legion_common::settings::{Limits, json_depth};
use uuid::Uuid;

use super::condition::Condition;
use super::transform::Transformation;
use super::{Definition, FieldError, Relationship};
use crate::delivery::retry::{self, RetryOverrides};
use crate::policy::parse::validate_name;
use crate::tasks::validate::json_kind;

/// Longest chain description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// A chain as a caller sends it (from the gRPC message or the REST body), before validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChainSpec {
    /// The chain's name (as policy names: 1 to 64 bytes of a-z, 0-9, `_`, `-`, `.`).
    pub name: String,
    /// Free text, at most [`MAX_DESCRIPTION_BYTES`].
    pub description: String,
    /// The chain's own depth cap.
    pub max_depth: Option<u32>,
    /// In order.
    pub relationships: Vec<RelationshipSpec>,
}

/// A relationship as a caller sends it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelationshipSpec {
    /// `extension.runner.function`.
    pub trigger: String,
    /// `extension.runner.function`.
    pub action: String,
    /// A rule document, or `None` (JSON null counts as none).
    pub conditions: Option<serde_json::Value>,
    /// A transformation document, or `None` (JSON null counts as none).
    pub transformation: Option<serde_json::Value>,
    /// In ms.
    pub delay_ms: u64,
    /// Default true.
    pub active: Option<bool>,
    /// 0 to 9.
    pub priority: Option<u32>,
    /// 1 to `limits.max_attempts`.
    pub max_attempts: Option<u32>,
    /// 1 to `limits.max_timeout_ms`, in ms.
    pub timeout_ms: Option<u32>,
    /// The retry policy fields set ([`crate::delivery::retry::check`]).
    pub retry: RetryOverrides,
}

/// Checks a chain document against `limits` and returns its definition, with a new UUIDv7 per
/// relationship.
///
/// # Errors
/// [`FieldError`] naming the first field at fault: the name, the description, the number of
/// relationships (`limits.max_relationships`), a function name, a rule ([`Condition::parse`]), a
/// transformation ([`Transformation::parse`]), `delay_ms`, `priority`, `max_attempts`, `timeout_ms`,
/// `retry.<field>` ([`retry::check`]; the fields left unset take the `retry.*` settings when a task is
/// created, see [`retry::merge`]), `max_depth`, or a cycle without `max_depth`.
pub fn validate(spec: &ChainSpec, limits: &Limits) -> Result<Definition, FieldError> {
    validate_name("name", &spec.name).map_err(|e| FieldError::new(e.field, e.reason))?;
    if spec.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(FieldError::new("description", format!("must be at most {MAX_DESCRIPTION_BYTES} bytes")));
    }
    let max = usize::try_from(limits.max_relationships).unwrap_or(usize::MAX);
    if spec.relationships.is_empty() || spec.relationships.len() > max {
        return Err(FieldError::new(
            "relationships",
            format!("must hold 1 to {max} relationships (limits.max_relationships), got {}", spec.relationships.len()),
        ));
    }
    if let Some(depth) = spec.max_depth
        && (depth == 0 || depth > limits.max_chain_depth)
    {
        return Err(FieldError::new(
            "max_depth",
            format!("must be 1 to {} (limits.max_chain_depth)", limits.max_chain_depth),
        ));
    }
    let relationships = spec
        .relationships
        .iter()
        .enumerate()
        .map(|(i, r)| relationship(i, r, limits))
        .collect::<Result<Vec<_>, _>>()?;
    if spec.max_depth.is_none()
        && let Some(cycle) = find_cycle(&relationships)
    {
        let path = cycle.functions.join(" -> ");
        return Err(FieldError::new(
            format!("relationships[{}].action", cycle.closing),
            format!(
                "closes a cycle ({path}) through relationships {:?}; a chain that can loop needs max_depth \
                 (1 to limits.max_chain_depth, {}) to cap its runs",
                cycle.relationships, limits.max_chain_depth
            ),
        ));
    }
    Ok(Definition { description: spec.description.clone(), max_depth: spec.max_depth, relationships })
}

fn relationship(i: usize, spec: &RelationshipSpec, limits: &Limits) -> Result<Relationship, FieldError> {
    let field = |name: &str| format!("relationships[{i}].{name}");
    let function = |name: &str, value: &str| -> Result<String, FieldError> {
        FunctionName::parse(value).map(|f| f.to_string()).map_err(|reason| FieldError::new(field(name), reason))
    };
    let trigger = function("trigger", &spec.trigger)?;
    let action = function("action", &spec.action)?;
    let conditions = match &spec.conditions {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => {
            let bytes = value.to_string().len();
            if bytes > limits.max_transformation_bytes {
                return Err(FieldError::new(
                    field("conditions"),
                    format!(
                        "{bytes} bytes exceeds limits.max_transformation_bytes ({})",
                        limits.max_transformation_bytes
                    ),
                ));
            }
            check_depth(value, &field("conditions"), limits)?;
            Condition::parse(value, &field("conditions"))?;
            Some(value.clone())
        }
    };
    let transformation = match &spec.transformation {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => {
            check_depth(value, &field("transformation"), limits)?;
            let parsed = Transformation::parse(value, &field("transformation"), limits.max_transformation_bytes)?;
            if let Transformation::Static { value: output } = &parsed {
                check_static(output, &field("transformation.value"), limits)?;
            }
            Some(value.clone())
        }
    };
    if spec.delay_ms > limits.max_delay_ms {
        return Err(FieldError::new(
            field("delay_ms"),
            format!("must be at most {} (limits.max_delay_ms)", limits.max_delay_ms),
        ));
    }
    let priority = match spec.priority {
        None => None,
        Some(p) => Some(
            u8::try_from(p)
                .ok()
                .filter(|p| *p <= 9)
                .ok_or_else(|| FieldError::new(field("priority"), format!("must be 0 to 9, got {p}")))?,
        ),
    };
    if let Some(n) = spec.max_attempts
        && (n == 0 || n > limits.max_attempts)
    {
        return Err(FieldError::new(
            field("max_attempts"),
            format!("must be 1 to {} (limits.max_attempts), got {n}", limits.max_attempts),
        ));
    }
    if let Some(ms) = spec.timeout_ms
        && (ms == 0 || ms > limits.max_timeout_ms)
    {
        return Err(FieldError::new(
            field("timeout_ms"),
            format!("must be 1 to {} (limits.max_timeout_ms), got {ms}", limits.max_timeout_ms),
        ));
    }
    retry::check(&spec.retry).map_err(|e| FieldError::new(field(e.field), e.reason))?;
    Ok(Relationship {
        id: Uuid::now_v7(),
        trigger,
        action,
        conditions,
        transformation,
        delay_ms: spec.delay_ms,
        active: spec.active.unwrap_or(true),
        priority,
        max_attempts: spec.max_attempts,
        timeout_ms: spec.timeout_ms,
        retry: spec.retry,
    })
}

/// A document nested deeper than `limits.max_json_depth` could not even be sent back to a gRPC client
/// (protobuf decoders stop at 100 nested messages; one JSON level is three).
fn check_depth(value: &serde_json::Value, field: &str, limits: &Limits) -> Result<(), FieldError> {
    let depth = json_depth(value);
    if depth > limits.max_json_depth {
        return Err(FieldError::new(
            field,
            format!("nested {depth} levels deep, more than limits.max_json_depth ({})", limits.max_json_depth),
        ));
    }
    Ok(())
}

/// A static value is used as it is: anything but an object or an array of objects would fail every
/// child it creates, so it is refused now.
fn check_static(value: &serde_json::Value, field: &str, limits: &Limits) -> Result<(), FieldError> {
    if let serde_json::Value::Array(items) = value
        && items.len() > usize::try_from(limits.max_fanout).unwrap_or(usize::MAX)
    {
        return Err(FieldError::new(
            field,
            format!("{} items would fan out past limits.max_fanout ({})", items.len(), limits.max_fanout),
        ));
    }
    let ok = match value {
        serde_json::Value::Object(_) => true,
        serde_json::Value::Array(items) => items.iter().all(serde_json::Value::is_object),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(FieldError::new(
        field,
        format!("must be an object (the args) or an array of objects (one child each), not {}", json_kind(value)),
    ))
}

/// Checks every trigger and action against `known` (the catalog's `extension.runner.function` names).
///
/// # Errors
/// [`FieldError`] naming the first unknown function: `relationships[1].action: unknown function
/// "http.request.patch"`.
pub fn unknown_functions(definition: &Definition, known: &HashSet<String>) -> Result<(), FieldError> {
    for (i, r) in definition.relationships.iter().enumerate() {
        for (name, function) in [("trigger", &r.trigger), ("action", &r.action)] {
            if !known.contains(function) {
                return Err(FieldError::new(
                    format!("relationships[{i}].{name}"),
                    format!("unknown function {function:?} (no executor has registered it)"),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `spec` says exactly what `definition` (a stored version) says, relationship ids aside.
/// Applying such a document changes nothing, so it is answered "unchanged" even when limits lowered
/// since would refuse it as a new document: a CI job that applies the same files keeps passing.
pub fn same_as(spec: &ChainSpec, definition: &Definition) -> bool {
    spec.description == definition.description
        && spec.max_depth == definition.max_depth
        && spec.relationships.len() == definition.relationships.len()
        && spec.relationships.iter().zip(&definition.relationships).all(|(s, d)| {
            s.trigger == d.trigger
                && s.action == d.action
                && s.conditions.as_ref().filter(|v| !v.is_null()) == d.conditions.as_ref()
                && s.transformation.as_ref().filter(|v| !v.is_null()) == d.transformation.as_ref()
                && s.delay_ms == d.delay_ms
                && s.active.unwrap_or(true) == d.active
                && s.priority == d.priority.map(u32::from)
                && s.max_attempts == d.max_attempts
                && s.timeout_ms == d.timeout_ms
                && s.retry == d.retry
        })
}

/// Every function a chain can run: each trigger and each action, sorted, once.
pub fn functions(definition: &Definition) -> Vec<String> {
    let mut all: Vec<String> =
        definition.relationships.iter().flat_map(|r| [r.trigger.clone(), r.action.clone()]).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// A cycle among active relationships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The relationships on the cycle, by index, in firing order.
    pub relationships: Vec<usize>,
    /// The functions visited, the first repeated at the end: `["a.b.c", "d.e.f", "a.b.c"]`.
    pub functions: Vec<String>,
    /// The relationship whose action returns to a function already on the path.
    pub closing: usize,
}

/// Finds a cycle in the graph whose nodes are functions and whose edges are the active relationships
/// (trigger -> action): a chain run could then fire without end. Inactive relationships never fire and
/// are left out. Depth-first search, in relationship order, so the answer is deterministic.
pub fn find_cycle(relationships: &[Relationship]) -> Option<Cycle> {
    let mut edges: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in relationships.iter().enumerate().filter(|(_, r)| r.active) {
        edges.entry(r.trigger.as_str()).or_default().push(i);
    }
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state: HashMap<&str, u8> = HashMap::new();
    let starts: Vec<&str> = edges.keys().copied().collect();
    for start in starts {
        if state.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        // Iterative DFS: (function, next edge index), and the relationship taken to reach each frame.
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        let mut taken: Vec<usize> = Vec::new();
        state.insert(start, 1);
        while let Some((function, next)) = stack.last().copied() {
            let out = edges.get(function).map(Vec::as_slice).unwrap_or_default();
            if next >= out.len() {
                state.insert(function, 2);
                stack.pop();
                taken.pop();
                continue;
            }
            if let Some(frame) = stack.last_mut() {
                frame.1 += 1;
            }
            let rel = out[next];
            let target = relationships[rel].action.as_str();
            match state.get(target).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|(f, _)| *f == target).unwrap_or(0);
                    let mut path: Vec<usize> = taken[from..].to_vec();
                    path.push(rel);
                    let mut functions: Vec<String> = stack[from..].iter().map(|(f, _)| (*f).to_owned()).collect();
                    functions.push(target.to_owned());
                    return Some(Cycle { relationships: path, functions, closing: rel });
                }
                0 => {
                    state.insert(target, 1);
                    stack.push((target, 0));
                    taken.push(rel);
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
