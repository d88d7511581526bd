//! Helpers of [`super`] on JSON values: fact lookup, sizes, numeric comparison and equality, and
//! short quotes for reasons.

use std::cmp::Ordering;
use std::io;

use serde_json::{Number, Value};

use super::{MAX_QUOTED_CHARS, Segment};

/// The value at `path`, or `None` for nil (a missing key, an index out of range or not decimal, a
/// scalar on the way, or `null`).
pub(super) fn resolve<'a>(context: &'a Value, path: &[Segment]) -> Option<&'a Value> {
    let mut current = context;
    for segment in path {
        current = match current {
            Value::Object(object) => object.get(&segment.key)?,
            Value::Array(items) => items.get(segment.index?)?,
            _ => return None,
        };
    }
    (!current.is_null()).then_some(current)
}

/// A non-negative integral number as a size: `3` and `3.0`, not `-1` or `3.5`.
pub(super) fn as_size(number: &Number) -> Option<u64> {
    number.as_u64().or_else(|| {
        let float = number.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked just above
        Some(float as u64)
    })
}

/// Length of a string in chars, or of an array or object in elements; `None` for other values.
pub(super) fn size(value: &Value) -> Option<u64> {
    let size = match value {
        Value::String(text) => text.chars().count(),
        Value::Array(items) => items.len(),
        Value::Object(object) => object.len(),
        _ => return None,
    };
    u64::try_from(size).ok()
}

/// A number without fractional part, whether written `3` or `3.0`.
pub(super) fn is_integer(number: &Number) -> bool {
    number.is_i64() || number.is_u64() || number.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// Two integers (i64 or u64) exactly, else both as f64.
pub(super) fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    fn integer(n: &Number) -> Option<i128> {
        n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from))
    }
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// The order of two numbers or two strings (by Unicode scalar, which is UTF-8 byte order); `None`
/// for any other pairing.
pub(super) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => compare_numbers(a, b),
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => None,
    }
}

/// JSON equality, except that numbers compare as numbers, at any depth: `[200]` equals `[200.0]`.
pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => compare_numbers(a, b) == Some(Ordering::Equal),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| json_eq(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(key, a)| b.get(key).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

/// The JSON type of a value with its article, for messages.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compact JSON of `value`, cut to [`MAX_QUOTED_CHARS`]; never serializes much more of a large
/// value than it shows.
pub(super) fn quote(value: &Value) -> String {
    let mut out = Capped { bytes: Vec::new(), room: MAX_QUOTED_CHARS * 4 + 4 };
    let complete = serde_json::to_writer(&mut out, value).is_ok();
    let text = match std::str::from_utf8(&out.bytes) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&out.bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    cut(text, complete)
}

/// `text` cut to [`MAX_QUOTED_CHARS`] chars, with `…` when it was cut here or before (`complete`
/// false).
pub(super) fn cut(text: &str, complete: bool) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None if complete => text.to_owned(),
        None => format!("{text}…"),
    }
}

/// A writer that takes at most `room` bytes, then fails, which stops the serializer.
struct Capped {
    bytes: Vec<u8>,
    room: usize,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let left = self.room.saturating_sub(self.bytes.len());
        if left == 0 {
            return Err(io::Error::other("quote is long enough"));
        }
        let taken = left.min(data.len());
        self.bytes.extend_from_slice(&data[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
