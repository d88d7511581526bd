//! Idempotent submits: a second `SubmitTask` with the `idempotency_key` of an existing task returns that
//! task (`created = false`) only if it asks for the same thing. A key reused with another function,
//! args, priority, max_attempts, timeout_ms, chain, region or retry policy (each field the second submit
//! sets) is a caller's mistake, refused with
//! `ALREADY_EXISTS` rather than answered with a task that is not what was asked for. `delay_ms` is not
//! compared: it is relative to the moment of each call.

use crate::delivery::retry::{RetryOverrides, RetryPolicy};
use crate::store::{NewTask, Task};

/// Whether `existing`, found by the key of `new`, was submitted with the same parameters.
pub fn same_parameters(new: &NewTask, existing: &Task) -> bool {
    new.function == existing.function
        && same_json(&new.args, &existing.args)
        && new.priority == existing.priority
        && new.max_attempts == existing.max_attempts
        && new.timeout_ms == existing.timeout_ms
        // The chain by name: a resubmit after the chain changed still names the same run.
        && new.chain == existing.chain
        && new.region == existing.region
        && same_retry(&new.retry, existing.retry.as_ref())
}

/// Whether every retry field the new submit sets equals the stored policy's. Unset fields are not
/// compared (they take the settings, which may have changed since). A task stored without a policy
/// matches only a submit that sets none.
#[allow(clippy::float_cmp)]
fn same_retry(new: &RetryOverrides, existing: Option<&RetryPolicy>) -> bool {
    let Some(stored) = existing else { return new.is_empty() };
    new.initial_backoff_ms.is_none_or(|v| v == stored.initial_backoff_ms)
        && new.multiplier.is_none_or(|v| v == stored.multiplier)
        && new.max_backoff_ms.is_none_or(|v| v == stored.max_backoff_ms)
        && new.jitter.is_none_or(|v| v == stored.jitter)
}

/// JSON equality as PostgreSQL's `jsonb` sees it: object keys in any order, and numbers equal by value
/// (`1` and `1.0` are the same number, as the stored copy may spell it either way).
#[allow(clippy::float_cmp)]
pub fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| x == y),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(key, value)| y.get(key).is_some_and(|other| same_json(value, other)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn new_task() -> NewTask {
        NewTask {
            id: uuid::Uuid::now_v7(),
            function: "core.util.echo".into(),
            args: json!({"a": 1, "b": [1.5, "x"]}),
            args_json: String::new(),
            priority: 3,
            max_attempts: 2,
            timeout_ms: 1000,
            delay_ms: 0,
            idempotency_key: Some("k".into()),
            region: Some("eu-west".into()),
            routing_key: "core.util.echo.eu-west".into(),
            payload: Vec::new(),
            owner: String::new(),
            chain: None,
            chain_version: None,
            retry: Default::default(),
        }
    }

    fn stored(new: &NewTask) -> Task {
        Task {
            id: uuid::Uuid::now_v7(),
            function: new.function.clone(),
            status: legion_common::TaskStatus::Queued,
            // Stored as jsonb: keys come back in another order and whole numbers may carry a fraction.
            args: json!({"b": [1.5, "x"], "a": 1.0}),
            result: None,
            error: None,
            attempt: 0,
            failures: 0,
            max_attempts: new.max_attempts,
            dispatch: 1,
            redeliveries: 0,
            priority: new.priority,
            timeout_ms: new.timeout_ms,
            chain: None,
            root_id: None,
            parent_id: None,
            relationship_id: None,
            depth: 0,
            chain_version: None,
            fanout_index: None,
            node: None,
            region: new.region.clone(),
            idempotency_key: new.idempotency_key.clone(),
            owner: String::new(),
            not_before: None,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            retry: Some(RetryPolicy {
                initial_backoff_ms: 1000,
                multiplier: 2.0,
                max_backoff_ms: 300_000,
                jitter: 0.2,
            }),
            replays: 0,
        }
    }

    #[test]
    fn the_same_submit_matches_its_stored_task() {
        let new = new_task();
        assert!(same_parameters(&new, &stored(&new)));
        // The delay is relative to each call and is not compared.
        assert!(same_parameters(&NewTask { delay_ms: 500, ..new.clone() }, &stored(&new)));
        // Retry fields the submit sets are compared with the stored policy; unset ones are not.
        let same_retry =
            RetryOverrides { initial_backoff_ms: Some(1000), jitter: Some(0.2), ..RetryOverrides::default() };
        assert!(same_parameters(&NewTask { retry: same_retry, ..new.clone() }, &stored(&new)));
    }

    #[test]
    fn every_compared_parameter_makes_a_difference() {
        let new = new_task();
        let existing = stored(&new);
        let others = [
            NewTask { function: "core.util.noop".into(), ..new.clone() },
            NewTask { args: json!({"a": 2, "b": [1.5, "x"]}), ..new.clone() },
            NewTask { args: json!({"a": 1, "b": [1.5, "x"], "c": null}), ..new.clone() },
            NewTask { args: json!({"a": 1, "b": ["x", 1.5]}), ..new.clone() },
            NewTask { priority: 4, ..new.clone() },
            NewTask { max_attempts: 3, ..new.clone() },
            NewTask { timeout_ms: 999, ..new.clone() },
            NewTask { region: None, ..new.clone() },
            NewTask { region: Some("us-east".into()), ..new.clone() },
            NewTask {
                retry: RetryOverrides { initial_backoff_ms: Some(5), ..RetryOverrides::default() },
                ..new.clone()
            },
            NewTask { retry: RetryOverrides { jitter: Some(0.0), ..RetryOverrides::default() }, ..new.clone() },
        ];
        for other in &others {
            assert!(!same_parameters(other, &existing), "{other:?}");
        }
        assert!(!same_parameters(&new, &Task { chain: Some("nightly".into()), ..existing.clone() }));
        let chained = NewTask { chain: Some("nightly".into()), chain_version: Some(7), ..new };
        assert!(!same_parameters(&chained, &existing));
        // Another version of the same chain is the same submit.
        assert!(same_parameters(&chained, &Task { chain: Some("nightly".into()), chain_version: Some(3), ..existing }));
    }

    #[test]
    fn json_numbers_compare_by_value() {
        assert!(same_json(&json!(1), &json!(1.0)));
        assert!(same_json(&json!(-3), &json!(-3.0)));
        assert!(same_json(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!same_json(&json!(1), &json!(1.5)));
        assert!(!same_json(&json!(1), &json!("1")));
        assert!(!same_json(&json!({"a": 1}), &json!({"b": 1})));
    }
}
