//! Schedules (DESIGN.md section 4): a function fired on a cron expression in an IANA time zone, or
//! every `interval_ms`. [`slots`] computes the instants a schedule fires at (pure, no I/O), the same
//! code for firing and for previews.

pub mod slots;
pub mod tick;
