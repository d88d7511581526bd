//! The `fault` extension, runner `process` and `result`: functions that break their executor on
//! purpose, for end-to-end fault tests. Compiled only with the cargo feature `fault-injection` and
//! loaded only by the `legion-executor-faults` binary, never by `legion-executor`.
//!
//! - `fault.process.abort`: calls [`std::process::abort`]: the whole executor process dies at once,
//!   as a poison message would make it (its message is redelivered; the control plane dead-letters
//!   the task past `transport.delivery_limit`).
//! - `fault.process.hang`: blocks its worker thread forever ([`std::thread::sleep`] in a loop),
//!   without yielding or honouring cancellation: an executor hung by a task. The pool still ends the
//!   attempt at its timeout, but the thread stays blocked.
//! - `fault.result.oversize`: returns a JSON string whose encoding is exactly args `bytes` long
//!   (non-negative integer, at least 2; default `limits.max_result_bytes + 1`), so that the default
//!   exceeds the result limit by one byte.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::args::Args;
use super::{Context, Extension, Function, FunctionError, FunctionSpec, RunnerSpec, VERSION};

/// The `fault` extension; `max_result_bytes` is `limits.max_result_bytes`.
pub fn extension(max_result_bytes: usize) -> Extension {
    Extension {
        name: "fault",
        version: VERSION,
        runners: vec![
            RunnerSpec {
                name: "process",
                functions: vec![
                    FunctionSpec {
                        name: "abort",
                        description: "aborts the executor process (fault injection)",
                        function: Arc::new(Abort),
                    },
                    FunctionSpec {
                        name: "hang",
                        description: "blocks its thread forever, ignoring cancellation (fault injection)",
                        function: Arc::new(Hang),
                    },
                ],
            },
            RunnerSpec {
                name: "result",
                functions: vec![FunctionSpec {
                    name: "oversize",
                    description: "returns a result of args.bytes bytes (default limits.max_result_bytes + 1)",
                    function: Arc::new(Oversize { default_bytes: max_result_bytes.saturating_add(1) }),
                }],
            },
        ],
    }
}

/// `fault.process.abort`.
#[derive(Debug, Clone, Copy)]
pub struct Abort;

#[async_trait]
impl Function for Abort {
    async fn call(&self, _args: Value, ctx: Context) -> Result<Value, FunctionError> {
        tracing::error!(task_id = %ctx.task_id, attempt = ctx.attempt, "fault.process.abort: aborting the executor process");
        std::process::abort()
    }
}

/// `fault.process.hang`.
#[derive(Debug, Clone, Copy)]
pub struct Hang;

#[async_trait]
impl Function for Hang {
    async fn call(&self, _args: Value, ctx: Context) -> Result<Value, FunctionError> {
        tracing::error!(task_id = %ctx.task_id, attempt = ctx.attempt, "fault.process.hang: blocking this thread forever");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// `fault.result.oversize`.
#[derive(Debug, Clone, Copy)]
pub struct Oversize {
    default_bytes: usize,
}

#[async_trait]
impl Function for Oversize {
    async fn call(&self, args: Value, _ctx: Context) -> Result<Value, FunctionError> {
        let bytes = match Args::new(&args)?.optional_u64("bytes")? {
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n >= 2)
                .ok_or_else(|| FunctionError::InvalidArgs("args.bytes: must be at least 2".into()))?,
            None => self.default_bytes.max(2),
        };
        // A JSON string of n ASCII letters encodes as n + 2 bytes (its quotes).
        Ok(Value::String("x".repeat(bytes - 2)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::extensions::Registry;
    use crate::pool::{Job, Outcome, Pool};

    fn ctx() -> Context {
        Context::new(Uuid::now_v7(), 1, Duration::from_secs(10))
    }

    #[tokio::test]
    async fn oversize_results_have_the_asked_size() {
        let f = Oversize { default_bytes: 1025 };
        let value = f.call(json!({"bytes": 100}), ctx()).await.expect("result");
        assert_eq!(serde_json::to_vec(&value).expect("encode").len(), 100);
        let value = f.call(Value::Null, ctx()).await.expect("default");
        assert_eq!(serde_json::to_vec(&value).expect("encode").len(), 1025);
        assert_eq!(
            f.call(json!({"bytes": 1}), ctx()).await,
            Err(FunctionError::InvalidArgs("args.bytes: must be at least 2".into()))
        );
    }

    #[tokio::test]
    async fn the_default_oversize_result_fails_the_attempt_by_one_byte() {
        let pool = Pool::new(1, 1024);
        let registry = Registry::from_extensions(vec![extension(1024)]);
        let job = Job {
            task_id: Uuid::now_v7(),
            attempt: 1,
            function: registry.get("fault.result.oversize").expect("loaded"),
            args: json!({}),
            timeout: Duration::from_secs(10),
        };
        let done = pool.run(job).await;
        assert_eq!(
            done.outcome,
            Outcome::failure(
                legion_proto::v1::FailureKind::Error,
                "result of 1025 bytes exceeds the limit of 1024 bytes (limits.max_result_bytes)"
            )
        );
    }

    #[test]
    fn the_extension_lists_its_three_functions() {
        let registry = Registry::from_extensions(vec![extension(10)]);
        assert_eq!(
            registry.function_names(),
            vec!["fault.process.abort", "fault.process.hang", "fault.result.oversize"]
        );
    }
}
