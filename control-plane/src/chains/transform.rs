//! Transformations (DESIGN.md section 4): when a task of a chain run succeeds, a relationship's
//! transformation turns the context `{"results": <parent result>, "args": <parent args>, "task": <parent
//! metadata>}` into the args of the action task. An object output is one child's args; an array output
//! fans out into one child per element (the caller, [`super::fire`], decides what is acceptable).
//!
//! Documents:
//! - `{"engine":"jinja","template":"…"}`: a minijinja template ([`jinja`]); the context keys are the
//!   template variables (`{{ results.status }}`, `{{ args.url }}`, `{{ task.id }}`) and the rendered
//!   text must parse as JSON. Auto-escaping is off, `tojson` is available, a missing attribute renders
//!   empty (`UndefinedBehavior::Chainable`) and a render may spend at most [`JINJA_FUEL`] instructions.
//! - `{"engine":"jq","expr":"…"}`: a jq expression run by jaq ([`jq`]). Exactly one output is the
//!   value; zero or several outputs make a JSON array of them (so `.results.items[]` and
//!   `.results.items` both fan out). The builtins that reach the host are not defined
//!   ([`BLOCKED_JQ_NAMES`]): using one is a compile error when the chain is applied.
//! - `{"engine":"static","value":<any JSON>}`: the value itself.
//!
//! [`Transformation::parse`] validates a document when a chain is applied; [`Transformation::evaluate`]
//! runs one in this process. The control plane never calls `evaluate` for `jinja` or `jq` itself: both
//! engines can loop or allocate without bound, so [`super::sandbox`] runs them in separate processes with
//! memory and time limits, and that process calls `evaluate`. Compiled templates and filters are kept
//! per thread in a small LRU map ([`COMPILED_CACHE_CAPACITY`] entries per engine) keyed by the
//! document text, so evaluating the same transformation again does not recompile it.

mod cache;
mod jinja;
mod jq;
#[cfg(test)]
mod tests;

use std::io;

use serde::{Deserialize, Serialize};

use super::FieldError;

pub use jinja::JINJA_FUEL;
pub use jq::BLOCKED_JQ_NAMES;

/// Most compiled programs kept per engine and per thread (in practice: per sandbox process).
pub const COMPILED_CACHE_CAPACITY: usize = 256;

/// Deepest nesting of arrays and objects a `jq` or `jinja` output may have: serde_json reads at most
/// 128 levels, and the sandbox reply wraps the value.
pub const MAX_OUTPUT_DEPTH: usize = 100;

/// A transformation document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase", deny_unknown_fields)]
pub enum Transformation {
    /// A minijinja template that renders JSON.
    Jinja {
        /// The template text.
        template: String,
    },
    /// A jq expression (jaq).
    Jq {
        /// The expression.
        expr: String,
    },
    /// A fixed value.
    Static {
        /// The value.
        value: serde_json::Value,
    },
}

impl Transformation {
    /// Parses the document `value` found at `field` (e.g. `relationships[1].transformation`) and
    /// compiles it without evaluating it: the template's syntax, or the jq expression's parse and
    /// compile (so an undefined filter such as `env` is refused here). `max_bytes`
    /// (`limits.max_transformation_bytes`) caps the template or expression length in bytes, or the
    /// serialized static value.
    ///
    /// # Errors
    /// [`FieldError`] naming `field` (not an object, unknown field), `field.engine` (required, unknown),
    /// `field.template`, `field.expr` or `field.value` (required, not a string, too large, does not
    /// parse or compile).
    pub fn parse(value: &serde_json::Value, field: &str, max_bytes: usize) -> Result<Self, FieldError> {
        let Some(document) = value.as_object() else {
            return Err(FieldError::new(field, "must be an object"));
        };
        let engine_field = format!("{field}.engine");
        let engine = match document.get("engine") {
            None | Some(serde_json::Value::Null) => return Err(FieldError::new(engine_field, "required")),
            Some(serde_json::Value::String(engine)) => engine.as_str(),
            Some(_) => return Err(FieldError::new(engine_field, "must be a string (jinja, jq or static)")),
        };
        let key = match engine {
            "jinja" => "template",
            "jq" => "expr",
            "static" => "value",
            other => {
                return Err(FieldError::new(
                    engine_field,
                    format!("unknown engine {other:?} (expected jinja, jq or static)"),
                ));
            }
        };
        if let Some(unknown) = document.keys().find(|k| *k != "engine" && *k != key) {
            return Err(FieldError::new(field, format!("unknown field {unknown:?}")));
        }
        let sub_field = format!("{field}.{key}");
        let Some(body) = document.get(key) else {
            return Err(FieldError::new(sub_field, "required"));
        };
        let too_large = |bytes: usize| format!("{bytes} bytes exceeds limits.max_transformation_bytes ({max_bytes})");
        if engine == "static" {
            let bytes = json_size(body, usize::MAX).unwrap_or(usize::MAX);
            if bytes > max_bytes {
                return Err(FieldError::new(sub_field, too_large(bytes)));
            }
            return Ok(Self::Static { value: body.clone() });
        }
        let Some(text) = body.as_str() else {
            return Err(FieldError::new(sub_field, "must be a string"));
        };
        if text.len() > max_bytes {
            return Err(FieldError::new(sub_field, too_large(text.len())));
        }
        if engine == "jinja" {
            jinja::compile(text).map_err(|e| FieldError::new(&sub_field, format!("does not compile: {e}")))?;
            Ok(Self::Jinja { template: text.to_owned() })
        } else {
            jq::compile(text).map_err(|e| FieldError::new(&sub_field, e.to_string()))?;
            Ok(Self::Jq { expr: text.to_owned() })
        }
    }

    /// The engine name as written in documents: `jinja`, `jq` or `static`.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Jinja { .. } => "jinja",
            Self::Jq { .. } => "jq",
            Self::Static { .. } => "static",
        }
    }

    /// Whether evaluating may loop or allocate without bound, so that it must run in
    /// [`super::sandbox`]: true for `jinja` and `jq`.
    pub fn needs_sandbox(&self) -> bool {
        !matches!(self, Self::Static { .. })
    }

    /// Evaluates on `context` (`{"results", "args", "task"}`) in this process. Used inside the sandbox
    /// process and by tests only: a `jinja` or `jq` document can run without end here. The output,
    /// serialized as compact JSON, may be at most `max_output_bytes`
    /// (`control_plane.transform_max_output_bytes`); `jq` outputs are counted while they are converted,
    /// so an exponentially large value fails instead of exhausting memory.
    ///
    /// # Errors
    /// The reason, for the child task's `error`: a template or jq runtime error, a render that is not
    /// JSON, an output over `max_output_bytes`, or a document that no longer compiles.
    pub fn evaluate(&self, context: &serde_json::Value, max_output_bytes: usize) -> Result<serde_json::Value, String> {
        let value = match self {
            Self::Static { value } => value.clone(),
            Self::Jinja { template } => jinja::evaluate(template, context, max_output_bytes)?,
            Self::Jq { expr } => jq::evaluate(expr, context, max_output_bytes)?,
        };
        json_size(&value, max_output_bytes).map_err(|()| output_too_large(max_output_bytes))?;
        Ok(value)
    }
}

/// The error for an output larger than `max_output_bytes`.
pub(crate) fn output_too_large(max_output_bytes: usize) -> String {
    format!("output exceeds control_plane.transform_max_output_bytes ({max_output_bytes} bytes)")
}

/// The length of `value` serialized as compact JSON, or `Err` as soon as it passes `limit` (nothing is
/// allocated for the text).
pub(crate) fn json_size(value: &serde_json::Value, limit: usize) -> Result<usize, ()> {
    let mut counter = Counter { written: 0, limit };
    serde_json::to_writer(&mut counter, value).map_err(|_| ())?;
    Ok(counter.written)
}

/// An [`io::Write`] that only counts, and fails past its limit.
struct Counter {
    written: usize,
    limit: usize,
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) use legion_common::text::truncate;
