//! Harness for Legion's end-to-end tests: each test starts the real binaries (`legion-control-plane`,
//! `legion-executor`, `legion-gateway`, `legion`) against the machine's real PostgreSQL and RabbitMQ.
//!
//! Every test gets its own PostgreSQL database (`legion_e2e_<uuid>`), its own RabbitMQ vhost
//! (`legion-e2e-<uuid>`), its own development certificates, free TCP ports and a settings file per
//! process, so tests run in parallel and leave nothing behind. Everything is torn down when the
//! [`TestEnv`] drops, also when the test panics; a failing test prints the tail of every process log
//! and keeps its working directory for inspection.
//!
//! Tests that stop a shared service hold the exclusive side of a file lock ([`lock::ServiceLock`]);
//! every other test holds the shared side for its whole duration.
//!
//! Every control plane the harness starts gets `auth.bootstrap_admin_key` = [`ADMIN_KEY`], and every
//! client the harness hands out (gRPC, REST, the CLI) sends that key unless told otherwise
//! ([`auth::Auth`]), so tests that are not about security need not think about credentials.
//!
//! The binaries are looked up next to the test executable (the cargo target dir); build them first
//! with `cargo build --workspace --bins`.

pub mod auth;
pub mod certs;
pub mod chains;
pub mod cli;
pub mod db;
pub mod env;
pub mod grpc;
pub mod ledger;
pub mod lock;
pub mod nodes;
pub mod outage;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod rabbit;
mod ready;
pub mod replicas;
pub mod rest;
pub mod schedules;
pub mod settings;
pub mod status;
pub mod supervisor;
pub mod tasks;
pub mod wait;

pub use auth::{ADMIN_KEY, Auth};
pub use env::{ExecutorOptions, TestEnv};
pub use status::TaskStatusExt;

/// Installs rustls' ring provider once per test process; every harness entry point calls it.
pub fn init() {
    legion_common::install_crypto_provider();
}
