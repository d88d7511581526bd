//! The `core` extension, runner `util`: functions for testing pipelines and chains.
//!
//! - `core.util.echo`: the result is the args, unchanged (any JSON).
//! - `core.util.sleep`: args `{"ms": u64}`; sleeps `ms` milliseconds and returns `{"slept_ms": ms}`. It
//!   stops early with an error when the attempt is cancelled. A sleep that would outlast the attempt's
//!   `timeout_ms` is capped by it: it waits until the deadline, where the pool ends the attempt as a
//!   timeout.
//! - `core.util.fail`: always fails; the message is args `message` (string), default
//!   `core.util.fail called`.
//! - `core.util.noop`: does nothing; the result is always the empty object `{}` (not `null`, so that a
//!   finished task's result is distinguishable from no result).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::args::Args;
use super::{Context, Extension, Function, FunctionError, FunctionSpec, RunnerSpec, VERSION};

/// Default message of `core.util.fail`.
pub const DEFAULT_FAIL_MESSAGE: &str = "core.util.fail called";

/// The `core` extension.
pub fn extension() -> Extension {
    Extension {
        name: "core",
        version: VERSION,
        runners: vec![RunnerSpec {
            name: "util",
            functions: vec![
                FunctionSpec { name: "echo", description: "returns its args as the result", function: Arc::new(Echo) },
                FunctionSpec {
                    name: "sleep",
                    description: "sleeps args.ms milliseconds (capped by the timeout), returns {\"slept_ms\": ms}",
                    function: Arc::new(Sleep),
                },
                FunctionSpec {
                    name: "fail",
                    description: "always fails with args.message (default \"core.util.fail called\")",
                    function: Arc::new(Fail),
                },
                FunctionSpec { name: "noop", description: "does nothing, returns {}", function: Arc::new(Noop) },
            ],
        }],
    }
}

/// `core.util.echo`.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

#[async_trait]
impl Function for Echo {
    async fn call(&self, args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        Ok(args)
    }
}

/// `core.util.sleep`.
#[derive(Debug, Clone, Copy)]
pub struct Sleep;

#[async_trait]
impl Function for Sleep {
    async fn call(&self, args: Value, ctx: Context) -> Result<Value, FunctionError> {
        let ms = Args::new(&args)?.required_u64("ms")?;
        let started = tokio::time::Instant::now();
        let wanted = Duration::from_millis(ms);
        if wanted > ctx.remaining() {
            // Capped by the timeout: the pool ends the attempt at the deadline.
            ctx.cancel.cancelled().await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(wanted) => return Ok(json!({ "slept_ms": ms })),
                () = ctx.cancel.cancelled() => {}
            }
        }
        Err(FunctionError::Failed(format!("sleep cancelled after {} ms", started.elapsed().as_millis())))
    }
}

/// `core.util.fail`.
#[derive(Debug, Clone, Copy)]
pub struct Fail;

#[async_trait]
impl Function for Fail {
    async fn call(&self, args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        let message = Args::new(&args)?.optional_str("message")?.unwrap_or(DEFAULT_FAIL_MESSAGE);
        Err(FunctionError::Failed(message.to_owned()))
    }
}

/// `core.util.noop`.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

#[async_trait]
impl Function for Noop {
    async fn call(&self, _args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn ctx(timeout_ms: u64) -> Context {
        Context::new(Uuid::now_v7(), 1, Duration::from_millis(timeout_ms))
    }

    #[tokio::test]
    async fn echo_returns_its_args() {
        for args in [json!({"a": [1, {"b": null}]}), json!("text"), Value::Null] {
            assert_eq!(Echo.call(args.clone(), ctx(1000)).await, Ok(args));
        }
    }

    #[tokio::test]
    async fn sleep_sleeps_and_reports_it() {
        let started = tokio::time::Instant::now();
        assert_eq!(Sleep.call(json!({"ms": 50}), ctx(1000)).await, Ok(json!({"slept_ms": 50})));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(Sleep.call(json!({"ms": 0}), ctx(1000)).await, Ok(json!({"slept_ms": 0})));
    }

    #[tokio::test]
    async fn sleep_stops_early_when_cancelled() {
        let c = ctx(60_000);
        let cancel = c.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let started = tokio::time::Instant::now();
        let err = Sleep.call(json!({"ms": 10_000}), c).await.expect_err("cancelled");
        assert!(started.elapsed() < Duration::from_secs(5));
        let FunctionError::Failed(message) = err else { panic!("expected a failure") };
        assert!(message.starts_with("sleep cancelled after 1"), "{message}");
    }

    #[tokio::test]
    async fn sleep_longer_than_the_timeout_waits_for_the_deadline() {
        let c = ctx(200);
        let call = Sleep.call(json!({"ms": 150}), c);
        // 150 ms fit in the 200 ms timeout; 10 s do not and wait for the pool's timeout.
        assert_eq!(call.await, Ok(json!({"slept_ms": 150})));
        let call = Sleep.call(json!({"ms": 10_000}), ctx(200));
        let outcome = tokio::time::timeout(Duration::from_millis(300), call).await;
        assert!(outcome.is_err(), "the sleep must not finish before the pool's timeout");
    }

    #[tokio::test]
    async fn sleep_validates_ms() {
        for args in [json!({}), json!({"ms": -1}), json!({"ms": "5"}), json!({"ms": 1.5}), Value::Null] {
            assert_eq!(
                Sleep.call(args, ctx(1000)).await,
                Err(FunctionError::InvalidArgs("args.ms: required non-negative integer".into()))
            );
        }
    }

    #[tokio::test]
    async fn fail_always_fails_with_its_message() {
        assert_eq!(Fail.call(Value::Null, ctx(1000)).await, Err(FunctionError::Failed(DEFAULT_FAIL_MESSAGE.into())));
        assert_eq!(Fail.call(json!({"message": "boom"}), ctx(1000)).await, Err(FunctionError::Failed("boom".into())));
        assert_eq!(
            Fail.call(json!({"message": 3}), ctx(1000)).await,
            Err(FunctionError::InvalidArgs("args.message: must be a string".into()))
        );
    }

    #[tokio::test]
    async fn noop_returns_an_empty_object() {
        assert_eq!(Noop.call(json!({"ignored": true}), ctx(1000)).await, Ok(json!({})));
    }
}
