//! Tasks: submit validation, idempotent submits, the group-commit submit writer, list pages and
//! watching. The task status is [`legion_common::TaskStatus`].

pub mod idempotency;
pub mod page;
pub mod submit;
pub mod validate;
pub mod watch;
