//! The `jq` engine: jaq with the host-access builtins removed, and outputs converted to JSON under a byte
//! budget.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use jaq_core::compile::Undefined;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Exn, Vars, data};
use jaq_json::{Num, Val};
use serde::Deserialize;

use super::cache::{self, Lru};
use super::{COMPILED_CACHE_CAPACITY, MAX_OUTPUT_DEPTH, output_too_large, truncate};

/// Builtins of jaq's standard library that are not defined for transformations, because they reach
/// the host or the process: the environment (`env`; `$ENV` is never declared either), the clock and
/// the local time zone (`now`, `localtime`, `strflocaltime`), inputs and files (`input`, `inputs`,
/// `input_filename`, `input_line_number`, `get_search_list`, `get_prog_origin`, `get_jq_origin`; jaq
/// defines only some of them, and module loading is off), logging to stderr (`debug`, `stderr` and
/// their natives `debug_empty`, `stderr_empty`) and stopping the process (`halt`, `halt_error`).
/// Using one is an "undefined filter" compile error when the chain is applied.
pub const BLOCKED_JQ_NAMES: &[&str] = &[
    "env",
    "now",
    "localtime",
    "strflocaltime",
    "input",
    "inputs",
    "input_filename",
    "input_line_number",
    "get_search_list",
    "get_prog_origin",
    "get_jq_origin",
    "debug",
    "debug_empty",
    "stderr",
    "stderr_empty",
    "halt",
    "halt_error",
];

/// Characters of a jq runtime error message kept.
const MAX_ERROR_CHARS: usize = 1000;

type Data = data::JustLut<Val>;

/// A compiled jq program.
pub(super) type Program = jaq_core::Filter<Data>;

thread_local! {
    static COMPILED: RefCell<Lru<Rc<Program>>> = RefCell::new(Lru::new(COMPILED_CACHE_CAPACITY));
}

/// Why an expression was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum CompileError {
    /// A lex or parse error.
    #[error("does not parse: {0}")]
    Parse(String),
    /// An undefined filter, variable or module.
    #[error("does not compile: {0}")]
    Compile(String),
}

/// Parses and compiles `expr` with the standard library less [`BLOCKED_JQ_NAMES`].
///
/// # Errors
/// [`CompileError`] with jaq's reasons and their line and column.
pub(super) fn compile(expr: &str) -> Result<Program, CompileError> {
    let allowed = |name: &str| !BLOCKED_JQ_NAMES.contains(&name);
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs()).filter(|d| allowed(d.name));
    let funs = jaq_core::funs::<Data>().chain(jaq_std::funs()).chain(jaq_json::funs()).filter(|f| allowed(f.0));
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(&arena, File { code: expr, path: () })
        .map_err(|errors| CompileError::Parse(load_errors(expr, errors)))?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| CompileError::Compile(compile_errors(expr, errors)))
}

/// Runs `expr` on `context`: one output is the value, zero or several make an array.
///
/// # Errors
/// A compile error, jaq's runtime error message, or an output over `max_output_bytes` or nested deeper
/// than [`MAX_OUTPUT_DEPTH`].
pub(super) fn evaluate(
    expr: &str,
    context: &serde_json::Value,
    max_output_bytes: usize,
) -> Result<serde_json::Value, String> {
    let program = cache::get_or_compile(&COMPILED, expr, || compile(expr).map(Rc::new))
        .map_err(|e| format!("jq expression {e}"))?;
    let input = Val::deserialize(context).map_err(|e| format!("context cannot be read by jq: {e}"))?;
    let ctx = Ctx::<Data>::new(&program.lut, Vars::new([]));
    let mut budget = Budget { remaining: max_output_bytes, max_output_bytes };
    let mut outputs = Vec::new();
    for output in program.id.run((ctx, input)) {
        let value = output.map_err(exception)?;
        if !outputs.is_empty() {
            budget.charge(1)?;
        }
        outputs.push(to_json(&value, &mut budget, 0)?);
    }
    Ok(if outputs.len() == 1 { outputs.pop().unwrap_or_default() } else { serde_json::Value::Array(outputs) })
}

/// The message of an exception that ended the run.
fn exception(e: Exn<'_, Val>) -> String {
    match e.get_err() {
        Ok(error) => {
            let message = match error.into_val() {
                Val::TStr(text) | Val::BStr(text) => String::from_utf8_lossy(&text).into_owned(),
                other => other.to_string(),
            };
            truncate(&message, MAX_ERROR_CHARS)
        }
        Err(_) => "jq expression stopped without an error (halt or break)".to_owned(),
    }
}

/// Bytes left for the output, counted as compact JSON (numbers at one byte: a lower bound, the exact
/// size is checked after conversion).
struct Budget {
    remaining: usize,
    max_output_bytes: usize,
}

impl Budget {
    fn charge(&mut self, bytes: usize) -> Result<(), String> {
        self.remaining = self.remaining.checked_sub(bytes).ok_or_else(|| output_too_large(self.max_output_bytes))?;
        Ok(())
    }
}

/// Converts a jaq value to JSON, charging `budget` as it goes. Byte strings become (lossy) UTF-8
/// strings; NaN becomes null and infinities the largest finite numbers, as jq prints them; integral
/// floats below 2^53 become integers, as jq prints them.
fn to_json(value: &Val, budget: &mut Budget, depth: usize) -> Result<serde_json::Value, String> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(format!("output nests deeper than {MAX_OUTPUT_DEPTH} levels"));
    }
    Ok(match value {
        Val::Null => {
            budget.charge(4)?;
            serde_json::Value::Null
        }
        Val::Bool(b) => {
            budget.charge(4)?;
            serde_json::Value::Bool(*b)
        }
        Val::Num(n) => {
            budget.charge(1)?;
            number(n)
        }
        Val::TStr(bytes) | Val::BStr(bytes) => {
            budget.charge(bytes.len().saturating_add(2))?;
            serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        Val::Arr(items) => {
            budget.charge(2)?;
            let mut array = Vec::with_capacity(items.len().min(1024));
            for (i, item) in items.iter().enumerate() {
                budget.charge(usize::from(i > 0))?;
                array.push(to_json(item, budget, depth + 1)?);
            }
            serde_json::Value::Array(array)
        }
        Val::Obj(entries) => {
            budget.charge(2)?;
            let mut object = serde_json::Map::new();
            for (i, (key, item)) in entries.iter().enumerate() {
                let key = match key {
                    Val::TStr(bytes) | Val::BStr(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    other => return Err(format!("output has an object key that is not a string: {other}")),
                };
                budget.charge(key.len().saturating_add(3 + usize::from(i > 0)))?;
                let item = to_json(item, budget, depth + 1)?;
                object.insert(key, item);
            }
            serde_json::Value::Object(object)
        }
    })
}

/// A jaq number as JSON.
fn number(n: &Num) -> serde_json::Value {
    match n {
        Num::Int(i) => i64::try_from(*i).map_or_else(|_| float(*i as f64), serde_json::Value::from),
        Num::BigInt(i) => decimal(&i.to_string()),
        Num::Float(f) => float(*f),
        Num::Dec(text) => decimal(text),
    }
}

/// A decimal text (a big integer or a number literal kept as written) as JSON.
fn decimal(text: &str) -> serde_json::Value {
    match text.parse::<serde_json::Number>() {
        Ok(n) if n.is_i64() || n.is_u64() => serde_json::Value::Number(n),
        _ => text.parse::<f64>().map_or(serde_json::Value::Null, float),
    }
}

/// A float as JSON, the way jq prints it.
fn float(f: f64) -> serde_json::Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.is_nan() {
        serde_json::Value::Null
    } else if f.is_infinite() {
        serde_json::Value::from(if f > 0.0 { f64::MAX } else { f64::MIN })
    } else if f.fract() == 0.0 && f.abs() < EXACT {
        serde_json::Value::from(f as i64)
    } else {
        serde_json::Value::from(f)
    }
}

/// `line L, column C` of `part` within `code` (1-based), when `part` is a slice of `code`.
fn location(code: &str, part: &str) -> Option<String> {
    let start = (part.as_ptr() as usize).checked_sub(code.as_ptr() as usize)?;
    let before = code.get(..start)?;
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some(format!("line {line}, column {column}"))
}

/// What was found at an error: the first characters of `part`, or the end of input.
fn found(part: &str) -> String {
    if part.is_empty() { "end of input".to_owned() } else { format!("{:?}", truncate(part, 20)) }
}

/// `what at line L, column C`.
fn at(code: &str, part: &str, what: impl fmt::Display) -> String {
    match location(code, part) {
        Some(location) => format!("{what} at {location}"),
        None => what.to_string(),
    }
}

fn load_errors(code: &str, errors: load::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (_file, error) in errors {
        match error {
            load::Error::Io(items) => {
                messages.extend(items.into_iter().map(|(path, e)| format!("cannot load module {path:?}: {e}")));
            }
            load::Error::Lex(items) => messages.extend(items.into_iter().map(|(expect, part)| {
                let what = match expect {
                    load::lex::Expect::Delim("\"") => "unclosed string".to_owned(),
                    load::lex::Expect::Delim(open) => format!("unclosed {open:?}"),
                    other => format!("expected {}", other.as_str()),
                };
                at(code, part, format!("{what}, found {}", found(part)))
            })),
            load::Error::Parse(items) => {
                messages.extend(items.into_iter().map(|(expect, part)| {
                    at(code, part, format!("expected {}, found {}", expect.as_str(), found(part)))
                }))
            }
        }
    }
    messages.join("; ")
}

fn compile_errors(code: &str, errors: jaq_core::compile::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (_file, items) in errors {
        for (name, undefined) in items {
            let mut what = match undefined {
                Undefined::Filter(arity) => format!("undefined filter {name}/{arity}"),
                other => format!("undefined {} {name}", other.as_str()),
            };
            let bare = name.trim_start_matches('$');
            if BLOCKED_JQ_NAMES.contains(&bare) || bare == "ENV" {
                what.push_str(" (host access is not available to transformations)");
            }
            messages.push(at(code, name, what));
        }
    }
    messages.join("; ")
}
