//! Getting tasks to the broker and back on track: the outbox publisher, the promoter of due scheduled
//! tasks and the lease sweeper of silent nodes. Each is a loop that owns a shutdown token.

pub mod backoff;
pub mod lease;
pub mod message;
pub mod promoter;
pub mod publisher;
