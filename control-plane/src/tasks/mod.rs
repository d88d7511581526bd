//! Tasks: statuses, submit validation, the group-commit submit writer, page tokens and watching.

pub mod page;
pub mod status;
pub mod submit;
pub mod validate;
pub mod watch;

pub use status::TaskStatus;
