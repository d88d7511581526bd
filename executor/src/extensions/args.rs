//! Reading a function's args: typed accessors whose errors name the arg and the reason, in the form
//! `args.<name>: <reason>` (e.g. `args.url: required string`), reported as `FAILURE_KIND_PERMANENT`
//! (invalid args never become valid: the task is not retried).
//!
//! Args are a JSON object; `null` (no args) reads as an empty object. An arg set to `null` counts as
//! absent.

use serde_json::{Map, Value};

use super::FunctionError;

/// The args as an object view.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    map: Option<&'a Map<String, Value>>,
}

fn invalid(name: &str, reason: &str) -> FunctionError {
    FunctionError::InvalidArgs(format!("args.{name}: {reason}"))
}

impl<'a> Args<'a> {
    /// Views `args`, which must be a JSON object or `null`.
    ///
    /// # Errors
    /// `args: must be an object` for any other JSON value.
    pub fn new(args: &'a Value) -> Result<Self, FunctionError> {
        match args {
            Value::Object(map) => Ok(Self { map: Some(map) }),
            Value::Null => Ok(Self { map: None }),
            _ => Err(FunctionError::InvalidArgs("args: must be an object".into())),
        }
    }

    /// The arg `name`, `None` when absent or `null`.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    /// A required string arg.
    ///
    /// # Errors
    /// `args.<name>: required string` when absent or not a string.
    pub fn required_str(&self, name: &str) -> Result<&'a str, FunctionError> {
        self.get(name).and_then(Value::as_str).ok_or_else(|| invalid(name, "required string"))
    }

    /// An optional string arg.
    ///
    /// # Errors
    /// `args.<name>: must be a string` when present and not a string.
    pub fn optional_str(&self, name: &str) -> Result<Option<&'a str>, FunctionError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| invalid(name, "must be a string")),
        }
    }

    /// A required non-negative integer arg (e.g. milliseconds).
    ///
    /// # Errors
    /// `args.<name>: required non-negative integer` when absent or not a non-negative integer.
    pub fn required_u64(&self, name: &str) -> Result<u64, FunctionError> {
        self.get(name).and_then(as_u64).ok_or_else(|| invalid(name, "required non-negative integer"))
    }

    /// An optional non-negative integer arg.
    ///
    /// # Errors
    /// `args.<name>: must be a non-negative integer` when present and not one.
    pub fn optional_u64(&self, name: &str) -> Result<Option<u64>, FunctionError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => as_u64(v).map(Some).ok_or_else(|| invalid(name, "must be a non-negative integer")),
        }
    }

    /// An optional boolean arg.
    ///
    /// # Errors
    /// `args.<name>: must be a boolean` when present and not a boolean.
    pub fn optional_bool(&self, name: &str) -> Result<Option<bool>, FunctionError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| invalid(name, "must be a boolean")),
        }
    }

    /// An optional object arg.
    ///
    /// # Errors
    /// `args.<name>: must be an object` when present and not an object.
    pub fn optional_object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, FunctionError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_object().map(Some).ok_or_else(|| invalid(name, "must be an object")),
        }
    }

    /// An optional object whose values are all strings, e.g. HTTP headers.
    ///
    /// # Errors
    /// `args.<name>: must be an object` or `args.<name>.<key>: must be a string`.
    pub fn optional_string_map(&self, name: &str) -> Result<Vec<(&'a str, &'a str)>, FunctionError> {
        let Some(map) = self.optional_object(name)? else { return Ok(Vec::new()) };
        map.iter()
            .map(|(k, v)| {
                v.as_str().map(|s| (k.as_str(), s)).ok_or_else(|| invalid(&format!("{name}.{k}"), "must be a string"))
            })
            .collect()
    }

    /// An optional array of integers within `range`, e.g. HTTP status codes.
    ///
    /// # Errors
    /// `args.<name>: <reason>` naming the allowed range.
    pub fn optional_u64_list(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<u64>, FunctionError> {
        let Some(value) = self.get(name) else { return Ok(Vec::new()) };
        let reason = format!("must be an array of integers from {} to {}", range.start(), range.end());
        let items = value.as_array().ok_or_else(|| invalid(name, &reason))?;
        items
            .iter()
            .map(|item| as_u64(item).filter(|n| range.contains(n)).ok_or_else(|| invalid(name, &reason)))
            .collect()
    }
}

/// A JSON number that is a non-negative integer (`5` or `5.0`), as `u64`.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        // Values that crossed google.protobuf.Value are doubles; accept integral ones.
        v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64).map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(e: FunctionError) -> String {
        match e {
            FunctionError::InvalidArgs(m) => m,
            other => panic!("expected invalid args, got {other:?}"),
        }
    }

    #[test]
    fn args_must_be_an_object_or_null() {
        assert!(Args::new(&json!({})).is_ok());
        let none = Args::new(&Value::Null).expect("null is no args");
        assert_eq!(none.get("x"), None);
        assert_eq!(message(Args::new(&json!([1])).expect_err("array")), "args: must be an object");
        assert_eq!(message(Args::new(&json!("x")).expect_err("string")), "args: must be an object");
    }

    #[test]
    fn required_strings_name_the_arg() {
        let v = json!({"url": "http://x", "n": 1, "nil": null});
        let a = Args::new(&v).expect("object");
        assert_eq!(a.required_str("url").expect("url"), "http://x");
        assert_eq!(message(a.required_str("missing").expect_err("missing")), "args.missing: required string");
        assert_eq!(message(a.required_str("n").expect_err("number")), "args.n: required string");
        assert_eq!(message(a.required_str("nil").expect_err("null")), "args.nil: required string");
        assert_eq!(a.optional_str("nil").expect("null is absent"), None);
        assert_eq!(message(a.optional_str("n").expect_err("number")), "args.n: must be a string");
    }

    #[test]
    fn integers_accept_integral_doubles_only() {
        let v = json!({"a": 5, "b": 5.0, "c": 5.5, "d": -1, "e": "5"});
        let a = Args::new(&v).expect("object");
        assert_eq!(a.required_u64("a").expect("a"), 5);
        assert_eq!(a.required_u64("b").expect("b"), 5);
        for bad in ["c", "d", "e", "missing"] {
            assert_eq!(
                message(a.required_u64(bad).expect_err(bad)),
                format!("args.{bad}: required non-negative integer")
            );
        }
        assert_eq!(a.optional_u64("missing").expect("absent"), None);
        assert_eq!(message(a.optional_u64("d").expect_err("d")), "args.d: must be a non-negative integer");
    }

    #[test]
    fn booleans_are_strict() {
        let v = json!({"t": true, "f": false, "s": "true", "n": 1});
        let a = Args::new(&v).expect("object");
        assert_eq!(a.optional_bool("t").expect("t"), Some(true));
        assert_eq!(a.optional_bool("f").expect("f"), Some(false));
        assert_eq!(a.optional_bool("missing").expect("absent"), None);
        for bad in ["s", "n"] {
            assert_eq!(message(a.optional_bool(bad).expect_err(bad)), format!("args.{bad}: must be a boolean"));
        }
    }

    #[test]
    fn string_maps_name_the_bad_key() {
        let v = json!({"headers": {"a": "1", "b": 2}, "flat": "x"});
        let a = Args::new(&v).expect("object");
        assert_eq!(message(a.optional_string_map("headers").expect_err("b")), "args.headers.b: must be a string");
        assert_eq!(message(a.optional_string_map("flat").expect_err("flat")), "args.flat: must be an object");
        assert!(a.optional_string_map("missing").expect("absent").is_empty());
    }

    #[test]
    fn integer_lists_check_the_range() {
        let v = json!({"ok": [404, 500.0], "low": [99], "str": ["500"], "flat": 500});
        let a = Args::new(&v).expect("object");
        assert_eq!(a.optional_u64_list("ok", 100..=599).expect("ok"), vec![404, 500]);
        for bad in ["low", "str", "flat"] {
            assert_eq!(
                message(a.optional_u64_list(bad, 100..=599).expect_err(bad)),
                format!("args.{bad}: must be an array of integers from 100 to 599")
            );
        }
    }
}
