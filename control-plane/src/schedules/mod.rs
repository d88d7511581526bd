//! Schedules (DESIGN.md section 4): a function fired on a cron expression in an IANA time zone, or
//! every `interval_ms`. [`slots`] (in `legion_common`, shared with the CLI's preview) computes the
//! instants a schedule fires at, the same code for firing and for previews; [`tick`] decides what one
//! tick does with one schedule; the leader's scheduler loop applies it.

pub use legion_common::slots;
pub mod tick;
