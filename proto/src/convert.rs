//! Conversions between protobuf well-known types and their Rust counterparts.
//!
//! JSON ↔ `google.protobuf.Value` follows the protobuf JSON mapping: numbers are doubles. A double with
//! no fractional part that fits in an `i64` comes back as a JSON integer, so `200` stays `200`.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value};

/// Converts a JSON value into a `google.protobuf.Value`.
pub fn json_to_value(json: &serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(items) => {
            Kind::ListValue(ListValue { values: items.iter().map(json_to_value).collect() })
        }
        serde_json::Value::Object(map) => {
            Kind::StructValue(Struct { fields: map.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() })
        }
    };
    Value { kind: Some(kind) }
}

/// Converts a `google.protobuf.Value` into JSON. An unset kind is JSON `null`; a non-finite number is
/// `null`, as JSON cannot carry it.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(list)) => serde_json::Value::Array(list.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => {
            serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
        }
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn number_to_json(n: f64) -> serde_json::Value {
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    if n.fract() == 0.0 && n >= i64::MIN as f64 && n < i64::MAX as f64 {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// Converts a UTC time into a protobuf `Timestamp`.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// Converts a protobuf `Timestamp` into a UTC time; `None` when it is out of chrono's range.
pub fn timestamp_to_chrono(ts: &Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_through_value() {
        let json = serde_json::json!({
            "status": 200, "ratio": 0.5, "neg": -3, "ok": true, "none": null,
            "list": [1, "two", {"three": 3}], "nested": {"a": {"b": []}}
        });
        assert_eq!(value_to_json(&json_to_value(&json)), json);
    }

    #[test]
    fn non_finite_numbers_become_null() {
        let v = Value { kind: Some(Kind::NumberValue(f64::NAN)) };
        assert_eq!(value_to_json(&v), serde_json::Value::Null);
    }

    #[test]
    fn timestamps_round_trip() {
        let now = chrono::Utc::now();
        assert_eq!(timestamp_to_chrono(&timestamp(now)), Some(now));
    }
}
