use chrono::{DateTime, Utc};

use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
}

fn slots(expression: &str, timezone: &str, after: &str, count: usize) -> Vec<String> {
    let cadence = Cadence::cron(expression, Some(timezone)).expect("valid");
    cadence.next_slots(at(after), count).iter().map(|t| t.to_rfc3339()).collect()
}

#[test]
fn new_york_spring_forward_fires_a_missing_time_once_after_the_gap() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
    assert_eq!(
        slots("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", 3),
        ["2026-03-07T07:30:00+00:00", "2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00"]
    );
}

#[test]
fn new_york_fall_back_fires_a_repeated_time_once() {
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice, the job fires at the first.
    assert_eq!(
        slots("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
    );
}

#[test]
fn new_york_fall_back_fires_an_hourly_job_at_both_instants() {
    assert_eq!(
        slots("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3),
        ["2026-11-01T05:00:00+00:00", "2026-11-01T06:00:00+00:00", "2026-11-01T07:00:00+00:00"]
    );
}

#[test]
fn berlin_spring_forward_and_fall_back() {
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST.
    assert_eq!(
        slots("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3),
        ["2026-03-28T01:30:00+00:00", "2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]
    );
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and fires once.
    assert_eq!(
        slots("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
    );
    // An hourly job fires at both 02:00 instants.
    assert_eq!(
        slots("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 3),
        ["2026-10-25T00:00:00+00:00", "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00"]
    );
}

#[test]
fn fall_back_fires_lists_and_ranges_once_per_repeated_time() {
    // New York 2026-11-01: 01:30 happens at 05:30Z (EDT) and 06:30Z (EST); only the first fires.
    assert_eq!(
        slots("30 1,5 * * *", "America/New_York", "2026-11-01T04:00:00Z", 3),
        ["2026-11-01T05:30:00+00:00", "2026-11-01T10:30:00+00:00", "2026-11-02T06:30:00+00:00"]
    );
    assert_eq!(
        slots("0,30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z", 3),
        ["2026-11-01T05:00:00+00:00", "2026-11-01T05:30:00+00:00", "2026-11-02T06:00:00+00:00"]
    );
    // Berlin 2026-10-25: 02:00-02:59 happens twice (CEST then CET); 30 2,3 fires 02:30 once, then 03:30.
    assert_eq!(
        slots("30 2,3 * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 3),
        ["2026-10-25T00:30:00+00:00", "2026-10-25T02:30:00+00:00", "2026-10-26T01:30:00+00:00"]
    );
    assert_eq!(
        slots("30 1-2 * * *", "Europe/Berlin", "2026-10-24T22:00:00Z", 3),
        ["2026-10-24T23:30:00+00:00", "2026-10-25T00:30:00+00:00", "2026-10-26T00:30:00+00:00"]
    );
    // Six fields: the seconds field counts as a time field.
    assert_eq!(
        slots("15 30 1 * * *", "America/New_York", "2026-11-01T04:00:00Z", 2),
        ["2026-11-01T05:30:15+00:00", "2026-11-02T06:30:15+00:00"]
    );
    // A step or wildcard keeps firing at each instant.
    assert_eq!(
        slots("30 */1 * * *", "America/New_York", "2026-11-01T05:00:00Z", 2),
        ["2026-11-01T05:30:00+00:00", "2026-11-01T06:30:00+00:00"]
    );
    assert_eq!(
        slots("* 1 * * *", "America/New_York", "2026-11-01T05:58:30Z", 3),
        ["2026-11-01T05:59:00+00:00", "2026-11-01T06:00:00+00:00", "2026-11-01T06:01:00+00:00"]
    );
}

#[test]
fn spring_forward_fires_lists_ranges_and_steps_once_after_the_gap() {
    // New York 2026-03-08: 02:00-02:59 EST does not exist (07:00Z is 03:00 EDT).
    assert_eq!(
        slots("30 2,3 * * *", "America/New_York", "2026-03-08T05:00:00Z", 3),
        ["2026-03-08T07:00:00+00:00", "2026-03-08T07:30:00+00:00", "2026-03-09T06:30:00+00:00"]
    );
    assert_eq!(
        slots("*/20 2 * * *", "America/New_York", "2026-03-08T05:00:00Z", 2),
        ["2026-03-08T07:00:00+00:00", "2026-03-09T06:00:00+00:00"]
    );
    // Berlin 2026-03-29: 02:00-02:59 CET does not exist (01:00Z is 03:00 CEST).
    assert_eq!(
        slots("30 2,3 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", 3),
        ["2026-03-29T01:00:00+00:00", "2026-03-29T01:30:00+00:00", "2026-03-30T00:30:00+00:00"]
    );
    // An expression that names no time in the gap is unaffected, and hourly jobs skip the missing hour.
    assert_eq!(
        slots("0 * * * *", "America/New_York", "2026-03-08T06:30:00Z", 2),
        ["2026-03-08T07:00:00+00:00", "2026-03-08T08:00:00+00:00"]
    );
    assert_eq!(slots("30 4 * * *", "America/New_York", "2026-03-08T05:00:00Z", 1), ["2026-03-08T08:30:00+00:00"]);
}

#[test]
fn february_29th_fires_only_in_leap_years() {
    assert_eq!(
        slots("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]
    );
}

#[test]
fn six_fields_have_seconds_and_utc_is_the_default() {
    let cadence = Cadence::cron("*/15 * * * * *", None).expect("valid");
    let next: Vec<String> = cadence.next_slots(at("2026-01-01T00:00:00Z"), 3).iter().map(|t| t.to_rfc3339()).collect();
    assert_eq!(next, ["2026-01-01T00:00:15+00:00", "2026-01-01T00:00:30+00:00", "2026-01-01T00:00:45+00:00"]);
}

#[test]
fn bad_expressions_and_zones_are_named() {
    for (expression, timezone, field) in [
        ("* * * *", None, "cron"),
        ("0 0 0 * * * 2030", None, "cron"),
        ("61 * * * *", None, "cron"),
        ("not cron at all x", None, "cron"),
        ("0 * * * *", Some("Mars/Olympus_Mons"), "timezone"),
    ] {
        let error = Cadence::cron(expression, timezone).expect_err(expression);
        assert_eq!(error.field, field, "{expression}: {error}");
    }
    assert!(Cadence::cron(&"* ".repeat(200), None).is_err());
}

#[test]
fn intervals_count_from_their_anchor() {
    let anchor = at("2026-05-01T00:00:00Z");
    let cadence = Cadence::interval(1500, anchor).expect("valid");
    assert_eq!(cadence.next_after(at("2026-04-30T00:00:00Z")), Some(anchor));
    assert_eq!(cadence.next_after(anchor), Some(at("2026-05-01T00:00:01.500Z")));
    assert_eq!(cadence.next_after(at("2026-05-01T00:00:03.700Z")), Some(at("2026-05-01T00:00:04.500Z")));
    assert_eq!(cadence.next_slots(anchor, 2), [at("2026-05-01T00:00:01.500Z"), at("2026-05-01T00:00:03Z")]);
    for bad in [0, 999, MAX_INTERVAL_MS + 1] {
        assert_eq!(Cadence::interval(bad, anchor).expect_err("out of range").field, "interval_ms");
    }
}

#[test]
fn slots_end_with_the_year_9999() {
    let anchor = at("9999-06-01T00:00:00Z");
    let yearly = Cadence::interval(MAX_INTERVAL_MS, anchor).expect("valid");
    assert_eq!(yearly.next_slots(at("9999-01-01T00:00:00Z"), 3), [anchor]);
}
