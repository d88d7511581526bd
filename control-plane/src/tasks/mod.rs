//! Tasks: statuses, submit validation, idempotent submits, the group-commit submit writer, list pages
//! and watching.

pub mod idempotency;
pub mod page;
pub mod status;
pub mod submit;
pub mod validate;
pub mod watch;

pub use status::TaskStatus;
