use chrono::{DateTime, Duration, Utc};

use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
}

fn every_second() -> Cadence {
    Cadence::interval(1000, at("2026-06-01T00:00:00Z")).expect("valid")
}

fn state<'a>(cadence: &'a Cadence, cursor: Option<&str>) -> State<'a> {
    State {
        cadence,
        cursor: cursor.map(at),
        created_at: at("2026-06-01T00:00:00Z"),
        misfire: Misfire::FireOnce,
        allow_overlap: false,
        previous_running: false,
    }
}

const GRACE: Duration = Duration::milliseconds(1500);

#[test]
fn an_on_time_slot_fires_once_and_moves_the_cursor() {
    let cadence = every_second();
    let s = state(&cadence, Some("2026-06-01T00:00:04Z"));
    let t = tick(&s, at("2026-06-01T00:00:05.200Z"), GRACE);
    assert_eq!(
        t,
        Tick { fire: Some(at("2026-06-01T00:00:05Z")), cursor: Some(at("2026-06-01T00:00:05Z")), ..Tick::default() }
    );
    // The same tick again, with the cursor moved: nothing is due.
    let s = state(&cadence, Some("2026-06-01T00:00:05Z"));
    assert_eq!(tick(&s, at("2026-06-01T00:00:05.900Z"), GRACE), Tick::default());
}

#[test]
fn the_first_slot_is_the_creation_instant() {
    let cadence = every_second();
    let t = tick(&state(&cadence, None), at("2026-06-01T00:00:00.100Z"), GRACE);
    assert_eq!(t.fire, Some(at("2026-06-01T00:00:00Z")));
}

#[test]
fn after_downtime_fire_once_fires_one_catch_up_and_skip_fires_none() {
    let cadence = every_second();
    // Ten slots passed while no leader ticked; the newest is 3.5 s old, past the grace.
    let now = at("2026-06-01T00:00:13.500Z");
    let once = tick(&state(&cadence, Some("2026-06-01T00:00:00Z")), now, GRACE);
    assert_eq!(once.fire, Some(at("2026-06-01T00:00:13Z")));
    assert_eq!((once.missed, once.cursor), (12, Some(at("2026-06-01T00:00:13Z"))));
    let skip = tick(
        &State { misfire: Misfire::Skip, ..state(&cadence, Some("2026-06-01T00:00:00Z")) },
        now,
        Duration::milliseconds(400),
    );
    assert_eq!(skip.fire, None);
    assert_eq!(skip.passed, Some((at("2026-06-01T00:00:13Z"), Passed::Missed)));
    assert_eq!(skip.cursor, Some(at("2026-06-01T00:00:13Z")));
    // With skip, a slot that is on time still fires.
    let on_time = tick(&State { misfire: Misfire::Skip, ..state(&cadence, Some("2026-06-01T00:00:12Z")) }, now, GRACE);
    assert_eq!(on_time.fire, Some(at("2026-06-01T00:00:13Z")));
}

#[test]
fn a_running_previous_task_blocks_an_interval_schedule_unless_overlap_is_allowed() {
    let cadence = every_second();
    let now = at("2026-06-01T00:00:05.100Z");
    let busy = State { previous_running: true, ..state(&cadence, Some("2026-06-01T00:00:04Z")) };
    let t = tick(&busy, now, GRACE);
    assert_eq!((t.fire, t.passed), (None, Some((at("2026-06-01T00:00:05Z"), Passed::Overlap))));
    assert_eq!(t.cursor, Some(at("2026-06-01T00:00:05Z")), "the passed slot is not considered again");
    let overlapping = State { allow_overlap: true, ..busy };
    assert_eq!(tick(&overlapping, now, GRACE).fire, Some(at("2026-06-01T00:00:05Z")));
    // Cron schedules fire whatever their previous task does.
    let cron = Cadence::cron("* * * * * *", None).expect("valid");
    let busy_cron = State { previous_running: true, ..state(&cron, Some("2026-06-01T00:00:04Z")) };
    assert_eq!(tick(&busy_cron, now, GRACE).fire, Some(at("2026-06-01T00:00:05Z")));
}

#[test]
fn a_year_of_downtime_is_not_walked_slot_by_slot() {
    let cadence = every_second();
    let now = at("2027-06-01T00:00:00.500Z");
    let t = tick(&state(&cadence, Some("2026-06-01T00:00:00Z")), now, GRACE);
    assert_eq!(t.fire, Some(at("2027-06-01T00:00:00Z")));
    assert_eq!(t.missed, MAX_COUNTED);
    let minutely = Cadence::cron("* * * * *", None).expect("valid");
    let t = tick(&state(&minutely, Some("2026-06-01T00:00:00Z")), at("2026-07-01T00:00:30Z"), GRACE);
    assert_eq!(t.fire, Some(at("2026-07-01T00:00:00Z")));
}

#[test]
fn misfire_policies_parse() {
    assert_eq!(Misfire::parse("fire_once"), Ok(Misfire::FireOnce));
    assert_eq!(Misfire::parse("skip"), Ok(Misfire::Skip));
    assert!(Misfire::parse("catch_up").is_err());
    assert_eq!(Misfire::default().as_str(), "fire_once");
}
