//! Schedules (DESIGN.md section 4, `docs/schedules.md`): a function fired on a cron expression in an
//! IANA time zone, or every `interval_ms`.
//!
//! - [`slots`] (in `legion_common`, shared with the CLI's preview) computes the instants a schedule
//!   fires at, the same code for firing and for previews;
//! - [`tick`] decides what one tick does with one schedule's slots (pure);
//! - [`plan`] turns a due schedule into a decision and checks a fire (pure);
//! - [`build`] checks a batch's fires (catalog, chains, the creator's key and policies) and builds
//!   their tasks;
//! - [`evaluate`] evaluates a round's transformations in the scheduler's own sandbox pool under one
//!   budget, in the order [`quarantine`] keeps so that slow transformations cannot make others late;
//! - [`scheduler`] is the loop that applies them while this replica leads, writing through
//!   [`crate::store::schedules::ScheduleStore::record_ticks`];
//! - [`history`] bounds the fire history (`control_plane.schedule_history`), on the leader.
//!
//! Of the control plane's background loops, only [`scheduler`] must act on one replica at a time (it
//! holds the scheduler lease of [`crate::leader`], and every write is fenced by the lease's epoch). The
//! outbox publisher, the promoter of delayed tasks and the lease sweeper ([`crate::dispatch`]) run on
//! every replica: they claim their rows with `FOR UPDATE SKIP LOCKED`, and their set-based updates
//! re-check each row's state, so replicas share the work without acting twice on a row.

pub mod build;
pub mod evaluate;
pub mod history;
pub mod plan;
pub mod quarantine;
pub mod scheduler;
pub use legion_common::slots;
pub mod tick;
pub mod validate;
