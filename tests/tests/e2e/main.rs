//! Legion's end-to-end tests: the real binaries against the machine's PostgreSQL and RabbitMQ. Build
//! the binaries first: `cargo build --workspace --bins && cargo nextest run --workspace`.
//!
//! Each test starts its own world ([`legion_tests::TestEnv`]: database, vhost, certificates, control
//! plane with the bootstrap admin key [`legion_tests::ADMIN_KEY`], which every harness client sends by
//! default) and cleans it up, so the tests run in parallel; those that stop RabbitMQ or PostgreSQL
//! (`broker_outage`, `service_restarts`) take the exclusive service lock.

mod auth;
mod broker_outage;
mod chains;
mod cli;
mod executor_crash;
mod failures;
mod faults;
mod mtls;
mod schedules;
mod security;
mod service_restarts;
mod settings;
mod tasks;
mod validation;

use std::time::Duration;

use legion_proto::v1::Task;
use legion_tests::status::from_wire;
use legion_tests::{ExecutorOptions, TaskStatusExt, TestEnv};
use serde_json::Value;

/// Generous bound for anything that should take a few seconds on a loaded 2-core machine.
pub const LONG: Duration = Duration::from_secs(60);

/// A control plane plus one executor (default options).
pub async fn env_with_executor() -> (TestEnv, legion_tests::env::Executor) {
    let env = TestEnv::start().await.expect("control plane starts");
    let executor = env.start_executor(&ExecutorOptions::default()).await.expect("executor starts");
    (env, executor)
}

/// The task's result as JSON (`null` when unset).
pub fn result_json(task: &Task) -> Value {
    task.result.as_ref().map_or(Value::Null, legion_proto::value_to_json)
}

/// `status (error)` of a task, for assertion messages.
pub fn describe(task: &Task) -> String {
    format!("{} (error: {:?})", from_wire(task.status).rest_name(), task.error)
}
