//! Schedules against real PostgreSQL and RabbitMQ: the store (create, read, list and fire history in
//! pages, pause and resume, delete, the scheduler's reads, the control-plane replicas), the scheduler's
//! fenced write (`record_ticks`: a stale lease or epoch writes nothing, a slot is written once even by
//! two writers, a schedule changed meanwhile is left alone), and the scheduler loop inside the whole
//! control plane (`run_with`, with a real leader election): one fire per slot, overlap, misfire after
//! downtime, transformations, slots that fail while the schedule keeps running, creators no longer
//! authorized (the schedule is paused and audited), looping transformations (quarantined, while healthy
//! schedules and chains keep firing), and the bounded fire history.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

#[path = "schedules/authorization_tests.rs"]
mod authorization_tests;
#[path = "schedules/common.rs"]
mod common;
#[path = "schedules/fairness_tests.rs"]
mod fairness_tests;
#[path = "schedules/history_tests.rs"]
mod history_tests;
#[path = "schedules/loop_tests.rs"]
mod loop_tests;
#[path = "schedules/store_tests.rs"]
mod store_tests;
#[path = "schedules/tick_tests.rs"]
mod tick_tests;
