//! `legion-bench`: Legion's end-to-end benchmark.
//!
//! It drives a running control plane over gRPC (TLS with the dev CA), waits until the expected number
//! of executors is active, submits N tasks with many `SubmitTask` calls in flight on shared HTTP/2
//! channels, waits until PostgreSQL shows them all terminal, and reads their start and finish times
//! from PostgreSQL to compute throughput and latency. See `bench/README.md`.
//!
//! Modules: [`client`] (channels and credentials), [`nodes`] (waiting for executors), [`submit`] (the
//! submit driver), [`store`] (PostgreSQL reads), [`stats`] (percentiles), [`report`] (the figures, as a
//! table and a JSON line), [`run`] (one benchmark run end to end), [`certs`] (extra node certificates
//! signed by the dev CA, for a second executor), [`cpu`] (CPU time per process during the round),
//! [`chain`] (the `chain` scenario: the overhead of one step of a chain run), [`schedule`] (the
//! `schedule` scenario: how late the scheduler fires many schedules due in the same second).

pub mod chain;
pub mod client;
pub mod cpu;
pub mod nodes;
pub mod report;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod store;
pub mod submit;
