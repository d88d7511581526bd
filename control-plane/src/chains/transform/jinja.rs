//! The `jinja` engine: minijinja with auto-escaping off, chainable undefined values and fuel.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use super::cache::{self, Lru};
use super::{COMPILED_CACHE_CAPACITY, MAX_OUTPUT_DEPTH, output_too_large, truncate};

/// Instructions one render may execute (minijinja fuel); a template that loops past it fails with
/// "out of fuel". A million is far beyond any template that builds args, and stops within a second.
pub const JINJA_FUEL: u64 = 1_000_000;

/// The name the template is registered under; minijinja errors show it as `(in template:LINE)`.
const TEMPLATE_NAME: &str = "template";

/// Characters of a rendered text quoted when it is not JSON.
const QUOTED_OUTPUT_CHARS: usize = 200;

thread_local! {
    static COMPILED: RefCell<Lru<Rc<Environment<'static>>>> = RefCell::new(Lru::new(COMPILED_CACHE_CAPACITY));
}

/// An environment holding `template` alone, compiled.
///
/// # Errors
/// The minijinja syntax error, with its line.
pub(super) fn compile(template: &str) -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(JINJA_FUEL));
    env.add_template_owned(TEMPLATE_NAME, template.to_owned())?;
    Ok(env)
}

/// Renders `template` on `context` and parses the text as JSON. The text may be at most twice
/// `max_output_bytes` (plus 4 KiB) long, room for the whitespace of a readable template; the value is
/// checked against `max_output_bytes` by the caller.
///
/// # Errors
/// A compile or render error, a text over its cap, or a text that is not JSON (quoting its start).
pub(super) fn evaluate(
    template: &str,
    context: &serde_json::Value,
    max_output_bytes: usize,
) -> Result<serde_json::Value, String> {
    let env = cache::get_or_compile(&COMPILED, template, || compile(template).map(Rc::new))
        .map_err(|e| format!("template does not compile: {e}"))?;
    let compiled = env.get_template(TEMPLATE_NAME).map_err(|e| format!("template does not compile: {e}"))?;
    let mut out = Capped { text: Vec::new(), limit: max_output_bytes.saturating_mul(2).saturating_add(4096) };
    if let Err(e) = compiled.render_captured_to(to_value(context), &mut out) {
        if out.text.len() > out.limit {
            return Err(output_too_large(max_output_bytes));
        }
        return Err(format!("template error: {e}"));
    }
    let text = String::from_utf8_lossy(&out.text);
    let value = serde_json::from_str(&text).map_err(|e| {
        format!("rendered text is not JSON ({e}): {}", truncate_chars(text.trim(), QUOTED_OUTPUT_CHARS))
    })?;
    if nesting(&value) > MAX_OUTPUT_DEPTH {
        return Err(format!("output nests deeper than {MAX_OUTPUT_DEPTH} levels"));
    }
    Ok(value)
}

/// Levels of arrays and objects in `value` (0 for a scalar); values parsed by serde_json have at most
/// 128, so recursion is bounded.
fn nesting(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// The first `max` characters of `text`, with `…` when cut.
fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => truncate(text, end),
        None => text.to_owned(),
    }
}

/// A JSON value as a minijinja value: objects become maps with string keys, null becomes `none`.
fn to_value(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => items.iter().map(to_value).collect(),
        serde_json::Value::Object(map) => {
            Value::from(map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect::<BTreeMap<String, Value>>())
        }
    }
}

/// Collects the rendered text, failing once it passes `limit` bytes (the byte that passes it is kept,
/// so the caller can tell this failure from a template error).
struct Capped {
    text: Vec<u8>,
    limit: usize,
}

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.text.len().saturating_add(buf.len()) > self.limit {
            let room = self.limit.saturating_sub(self.text.len()).saturating_add(1).min(buf.len());
            self.text.extend_from_slice(&buf[..room]);
            return Err(io::Error::other("rendered text too large"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
