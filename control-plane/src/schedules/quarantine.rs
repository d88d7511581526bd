//! Which schedules' `jinja`/`jq` transformations a scheduler round evaluates, and in what order, so that
//! transformations that run long cannot make healthy schedules late (`docs/schedules.md`,
//! "Slow transformations").
//!
//! The leader remembers, per schedule, how its last evaluation went:
//! - **trusted**: it finished within its time (with an output or an error of its own). Evaluated
//!   first in each round;
//! - **unknown**: not evaluated by this process yet (a new schedule, or a new leader). Evaluated next;
//! - **quarantined**: its last evaluation ran past `control_plane.transform_timeout_ms`, or was still
//!   running, long, when the round's `control_plane.transform_budget_ms` ran out. Its slots fail at
//!   once, without evaluation, until the quarantine ends: [`FIRST_BACKOFF`] after the first time,
//!   doubling each time it runs long again, at most [`MAX_BACKOFF`]. Then it is on **probation**:
//!   evaluated last in its round, at most as many per round as the sandbox has processes (the others
//!   wait for a later round, their slots still failing at once). An evaluation that finishes in time
//!   makes it trusted again.
//!
//! The memory is the process's own: a new leader learns again, at the cost of one round of at most
//! `transform_budget_ms`. Schedules not seen for [`FORGET_AFTER`] are forgotten (deleted schedules).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::plan::rfc3339;

/// The first quarantine of a schedule.
pub const FIRST_BACKOFF: Duration = Duration::seconds(10);

/// The longest quarantine: doubling stops here.
pub const MAX_BACKOFF: Duration = Duration::minutes(5);

/// A schedule not seen by a round for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::hours(1);

/// How often forgotten schedules are looked for.
const SWEEP_EVERY: Duration = Duration::minutes(10);

/// The order in which a round evaluates transformations: lower first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Its last evaluation finished in time.
    Trusted,
    /// Not evaluated by this process yet.
    Unknown,
    /// Its quarantine ended: evaluated again, last.
    Probation,
}

/// Whether a round evaluates a schedule's transformation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Evaluate it, in this class's turn.
    Evaluate(Class),
    /// Fail the slot at once with this reason (the schedule is quarantined).
    Refuse(String),
}

#[derive(Debug, Clone)]
enum Standing {
    Trusted {
        /// The back-off of its last quarantine, and when it came out of it in good standing: a schedule
        /// that runs long again within [`MAX_BACKOFF`] of that resumes the doubling (a transformation
        /// that loops on some slots only cannot keep its back-off short).
        after: Option<(Duration, DateTime<Utc>)>,
    },
    Quarantined {
        /// When its slots may be evaluated again (database clock).
        until: DateTime<Utc>,
        /// How long this quarantine lasts.
        backoff: Duration,
        /// Why, for the reasons: "its last evaluation ran past …".
        cause: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    standing: Standing,
    /// When a round last looked at it.
    seen: DateTime<Utc>,
}

/// The leader's memory of how schedules' evaluations went. All instants are the database's clock.
#[derive(Debug, Default)]
pub struct Quarantine {
    entries: HashMap<Uuid, Entry>,
    swept: Option<DateTime<Utc>>,
}

impl Quarantine {
    /// Whether the round at `now` evaluates schedule `id`'s transformation. `probes` is how many
    /// schedules whose quarantine ended this round may still evaluate; admitting one takes one.
    pub fn admit(&mut self, id: Uuid, now: DateTime<Utc>, probes: &mut usize) -> Admission {
        self.sweep(now);
        let Some(entry) = self.entries.get_mut(&id) else { return Admission::Evaluate(Class::Unknown) };
        entry.seen = now;
        match &entry.standing {
            Standing::Trusted { .. } => Admission::Evaluate(Class::Trusted),
            Standing::Quarantined { until, backoff, cause } if now < *until => Admission::Refuse(format!(
                "transformation not evaluated: quarantined until {} because {cause} (back-off {} s, doubling up \
                 to {} s while its evaluations keep running long)",
                rfc3339(*until),
                backoff.num_seconds(),
                MAX_BACKOFF.num_seconds()
            )),
            Standing::Quarantined { .. } if *probes > 0 => {
                *probes -= 1;
                Admission::Evaluate(Class::Probation)
            }
            Standing::Quarantined { until, cause, .. } => Admission::Refuse(format!(
                "transformation not evaluated: quarantined because {cause}; the quarantine ended at {}, and it is \
                 evaluated again in a later round (other quarantined schedules are evaluated first)",
                rfc3339(*until)
            )),
        }
    }

    /// Schedule `id`'s evaluation finished in time at `now`: it is trusted (remembering a quarantine it
    /// just came out of).
    pub fn finished(&mut self, id: Uuid, now: DateTime<Utc>) {
        let after = match self.entries.get(&id).map(|e| &e.standing) {
            Some(Standing::Quarantined { backoff, .. }) => Some((*backoff, now)),
            Some(Standing::Trusted { after }) => *after,
            None => None,
        };
        self.entries.insert(id, Entry { standing: Standing::Trusted { after }, seen: now });
    }

    /// Schedule `id`'s evaluation ran long (`cause`, e.g. "its last evaluation ran past …") at `now`:
    /// it is quarantined, for [`FIRST_BACKOFF`] or twice its previous quarantine (at most
    /// [`MAX_BACKOFF`]) when that one ended less than [`MAX_BACKOFF`] ago. Returns until when, and for
    /// how long.
    pub fn ran_long(&mut self, id: Uuid, now: DateTime<Utc>, cause: String) -> (DateTime<Utc>, Duration) {
        let backoff = match self.entries.get(&id).map(|e| &e.standing) {
            Some(Standing::Quarantined { backoff, .. }) => (*backoff * 2).min(MAX_BACKOFF),
            Some(Standing::Trusted { after: Some((backoff, since)) })
                if now.signed_duration_since(*since) < MAX_BACKOFF =>
            {
                (*backoff * 2).min(MAX_BACKOFF)
            }
            _ => FIRST_BACKOFF,
        };
        let until = now + backoff;
        self.entries.insert(id, Entry { standing: Standing::Quarantined { until, backoff, cause }, seen: now });
        (until, backoff)
    }

    /// How many schedules it remembers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it remembers no schedule.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets the schedules not seen for [`FORGET_AFTER`], at most every [`SWEEP_EVERY`].
    fn sweep(&mut self, now: DateTime<Utc>) {
        if self.swept.is_some_and(|at| now.signed_duration_since(at) < SWEEP_EVERY) {
            return;
        }
        self.entries.retain(|_, e| now.signed_duration_since(e.seen) < FORGET_AFTER);
        self.swept = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
    }

    #[test]
    fn unknown_schedules_come_after_trusted_ones() {
        let mut q = Quarantine::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let now = at("2026-06-01T00:00:00Z");
        let mut probes = 1;
        assert_eq!(q.admit(a, now, &mut probes), Admission::Evaluate(Class::Unknown));
        q.finished(a, now);
        assert_eq!(q.admit(a, now, &mut probes), Admission::Evaluate(Class::Trusted));
        assert_eq!(q.admit(b, now, &mut probes), Admission::Evaluate(Class::Unknown));
        assert!(Class::Trusted < Class::Unknown && Class::Unknown < Class::Probation);
        assert_eq!(probes, 1, "no probe was taken");
    }

    #[test]
    fn a_schedule_that_runs_long_is_quarantined_with_a_doubling_back_off() {
        let mut q = Quarantine::default();
        let id = Uuid::now_v7();
        let now = at("2026-06-01T00:00:00Z");
        let cause = "its last evaluation ran past control_plane.transform_timeout_ms (1000 ms)";
        assert_eq!(q.ran_long(id, now, cause.into()), (at("2026-06-01T00:00:10Z"), FIRST_BACKOFF));
        let mut probes = 1;
        let Admission::Refuse(reason) = q.admit(id, at("2026-06-01T00:00:09Z"), &mut probes) else {
            panic!("quarantined")
        };
        assert_eq!(
            reason,
            "transformation not evaluated: quarantined until 2026-06-01T00:00:10Z because its last evaluation ran \
             past control_plane.transform_timeout_ms (1000 ms) (back-off 10 s, doubling up to 300 s while its \
             evaluations keep running long)"
        );
        // Once it ends: evaluated again, last, one probe per free place.
        let later = at("2026-06-01T00:00:10Z");
        assert_eq!(q.admit(id, later, &mut probes), Admission::Evaluate(Class::Probation));
        assert_eq!(probes, 0);
        let Admission::Refuse(reason) = q.admit(id, later, &mut probes) else { panic!("no probe left") };
        assert!(reason.contains("the quarantine ended at 2026-06-01T00:00:10Z"), "{reason}");
        // Running long again doubles the back-off, up to five minutes.
        let mut backoffs = Vec::new();
        for _ in 0..7 {
            backoffs.push(q.ran_long(id, later, cause.into()).1.num_seconds());
        }
        assert_eq!(backoffs, [20, 40, 80, 160, 300, 300, 300]);
        // Finishing in time trusts it again. Running long again soon after resumes the doubling (a
        // transformation that loops on some slots only cannot keep its back-off short); long after, a
        // quarantine starts over.
        q.finished(id, later);
        assert_eq!(q.admit(id, later, &mut 0), Admission::Evaluate(Class::Trusted));
        let soon = at("2026-06-01T00:01:00Z");
        q.finished(id, soon);
        assert_eq!(q.ran_long(id, soon, cause.into()).1, MAX_BACKOFF);
        let other = Uuid::now_v7();
        assert_eq!(q.ran_long(other, later, cause.into()).1, FIRST_BACKOFF);
        q.finished(other, at("2026-06-01T00:00:20Z"));
        assert_eq!(q.ran_long(other, at("2026-06-01T00:00:40Z"), cause.into()).1, FIRST_BACKOFF * 2);
        q.finished(other, at("2026-06-01T00:01:00Z"));
        assert_eq!(q.ran_long(other, at("2026-06-01T00:10:00Z"), cause.into()).1, FIRST_BACKOFF);
    }

    #[test]
    fn schedules_not_seen_for_an_hour_are_forgotten() {
        let mut q = Quarantine::default();
        let (old, fresh) = (Uuid::now_v7(), Uuid::now_v7());
        let start = at("2026-06-01T00:00:00Z");
        q.finished(old, start);
        q.admit(fresh, start, &mut 0);
        q.finished(fresh, start + Duration::minutes(50));
        assert_eq!(q.len(), 2);
        q.admit(fresh, start + Duration::minutes(61), &mut 0);
        assert_eq!(q.len(), 1, "the schedule last seen 61 minutes ago is forgotten");
        assert_eq!(q.admit(old, start + Duration::minutes(62), &mut 0), Admission::Evaluate(Class::Unknown));
        assert!(!q.is_empty());
    }
}
