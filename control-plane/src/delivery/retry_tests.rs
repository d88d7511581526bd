use super::*;

fn settings() -> RetrySettings {
    RetrySettings::default()
}

fn policy(initial: u64, multiplier: f64, max: u64, jitter: f64) -> RetryPolicy {
    RetryPolicy { initial_backoff_ms: initial, multiplier, max_backoff_ms: max, jitter }
}

fn request(initial: Option<u64>, multiplier: Option<f64>, max: Option<u64>, jitter: Option<f64>) -> v1::RetryPolicy {
    v1::RetryPolicy { initial_backoff_ms: initial, multiplier, max_backoff_ms: max, jitter }
}

#[test]
fn an_unset_policy_takes_the_settings() {
    assert_eq!(resolve(None, &settings()), Ok(policy(1000, 2.0, 300_000, 0.2)));
    assert_eq!(resolve(Some(&v1::RetryPolicy::default()), &settings()), Ok(policy(1000, 2.0, 300_000, 0.2)));
}

#[test]
fn set_fields_override_the_settings() {
    let given = request(Some(50), None, Some(400), Some(0.0));
    assert_eq!(resolve(Some(&given), &settings()), Ok(policy(50, 2.0, 400, 0.0)));
    let given = request(None, Some(10.0), None, Some(1.0));
    assert_eq!(resolve(Some(&given), &settings()), Ok(policy(1000, 10.0, 300_000, 1.0)));
    // The bounds themselves are accepted.
    let given = request(Some(0), Some(1.0), Some(MAX_BACKOFF_CEILING_MS), Some(0.0));
    assert_eq!(resolve(Some(&given), &settings()), Ok(policy(0, 1.0, MAX_BACKOFF_CEILING_MS, 0.0)));
    let given = request(Some(MAX_BACKOFF_CEILING_MS), None, Some(MAX_BACKOFF_CEILING_MS), None);
    assert!(resolve(Some(&given), &settings()).is_ok());
}

#[test]
fn each_field_out_of_range_is_named() {
    let cases = [
        (request(None, None, Some(MAX_BACKOFF_CEILING_MS + 1), None), "retry.max_backoff_ms", "at most 86400000"),
        (request(None, Some(0.5), None, None), "retry.multiplier", "1.0 to 10.0"),
        (request(None, Some(10.5), None, None), "retry.multiplier", "1.0 to 10.0"),
        (request(None, Some(f64::NAN), None, None), "retry.multiplier", "1.0 to 10.0"),
        (request(None, Some(f64::INFINITY), None, None), "retry.multiplier", "1.0 to 10.0"),
        (request(None, None, None, Some(-0.1)), "retry.jitter", "0.0 to 1.0"),
        (request(None, None, None, Some(1.01)), "retry.jitter", "0.0 to 1.0"),
        (request(None, None, None, Some(f64::NAN)), "retry.jitter", "0.0 to 1.0"),
        (request(None, None, None, Some(f64::NEG_INFINITY)), "retry.jitter", "0.0 to 1.0"),
        (request(Some(500), None, Some(499), None), "retry.initial_backoff_ms", "at most retry.max_backoff_ms (499)"),
        // Against the settings' max (300000).
        (request(Some(300_001), None, None, None), "retry.initial_backoff_ms", "at most retry.max_backoff_ms (300000)"),
        // Against the settings' initial (1000).
        (request(None, None, Some(999), None), "retry.max_backoff_ms", "at least retry.initial_backoff_ms (1000)"),
    ];
    for (given, field, reason) in cases {
        let err = resolve(Some(&given), &settings()).expect_err("must be refused");
        assert_eq!(err.field, field, "{given:?}");
        assert!(err.reason.contains(reason), "{given:?}: {}", err.reason);
        assert!(err.to_string().starts_with(&format!("{field}: ")));
    }
}

#[test]
fn check_needs_no_settings() {
    assert_eq!(check(&RetryOverrides::default()), Ok(()));
    assert_eq!(check(&RetryOverrides { initial_backoff_ms: Some(300_001), ..RetryOverrides::default() }), Ok(()));
    let both = RetryOverrides { initial_backoff_ms: Some(2), max_backoff_ms: Some(1), ..RetryOverrides::default() };
    assert_eq!(check(&both).expect_err("initial > max").field, "retry.initial_backoff_ms");
    let nan = RetryOverrides { multiplier: Some(f64::NAN), ..RetryOverrides::default() };
    assert_eq!(check(&nan).expect_err("nan").field, "retry.multiplier");
}

#[test]
fn merge_repairs_what_changed_settings_broke() {
    let stored = RetryOverrides { initial_backoff_ms: Some(5000), ..RetryOverrides::default() };
    let lowered = RetrySettings { initial_backoff_ms: 10, max_backoff_ms: 2000, ..settings() };
    assert_eq!(merge(&stored, &lowered), policy(2000, 2.0, 2000, 0.2));
    assert_eq!(merge(&RetryOverrides::default(), &settings()), RetryPolicy::from(&settings()));
    let all = RetryOverrides {
        initial_backoff_ms: Some(1),
        multiplier: Some(3.0),
        max_backoff_ms: Some(9),
        jitter: Some(0.5),
    };
    assert_eq!(merge(&all, &settings()), policy(1, 3.0, 9, 0.5));
}

#[test]
fn overrides_round_trip_through_proto_and_json() {
    let given = request(Some(7), None, None, Some(0.25));
    let overrides = RetryOverrides::from_proto(Some(&given));
    assert_eq!(overrides.to_proto(), Some(given));
    assert_eq!(RetryOverrides::from_proto(None).to_proto(), None);
    assert!(RetryOverrides::default().is_empty());
    let json = serde_json::to_value(overrides).expect("json");
    assert_eq!(json, serde_json::json!({"initial_backoff_ms": 7, "jitter": 0.25}));
    assert_eq!(serde_json::from_value::<RetryOverrides>(json).expect("back"), overrides);
    assert_eq!(
        serde_json::from_value::<RetryOverrides>(serde_json::json!({})).expect("empty"),
        RetryOverrides::default()
    );
    assert!(serde_json::from_value::<RetryOverrides>(serde_json::json!({"initial": 1})).is_err());
    let full = policy(1, 2.0, 3, 0.5);
    let json = serde_json::to_value(full).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"initial_backoff_ms": 1, "multiplier": 2.0, "max_backoff_ms": 3, "jitter": 0.5})
    );
    assert_eq!(serde_json::from_value::<RetryPolicy>(json).expect("back"), full);
    assert_eq!(full.to_proto(), request(Some(1), Some(2.0), Some(3), Some(0.5)));
}

#[test]
fn the_wait_grows_exponentially_up_to_the_maximum() {
    let p = policy(1000, 2.0, 10_000, 0.0);
    let waits: Vec<u64> = (1..=6).map(|n| wait(&p, n, 0.5).as_millis() as u64).collect();
    assert_eq!(waits, vec![1000, 2000, 4000, 8000, 10_000, 10_000]);
    // Failure 0 is treated as the first.
    assert_eq!(wait(&p, 0, 0.0), Duration::from_millis(1000));
    // A multiplier of 1 is a constant wait.
    let constant = policy(250, 1.0, 10_000, 0.0);
    assert!((1..=20).all(|n| wait(&constant, n, 0.9) == Duration::from_millis(250)));
    // A fractional multiplier.
    let p = policy(100, 1.5, 10_000, 0.0);
    assert_eq!(wait(&p, 3, 0.0), Duration::from_millis(225));
}

#[test]
fn jitter_takes_a_random_fraction_off() {
    let p = policy(1000, 2.0, 300_000, 0.2);
    assert_eq!(wait(&p, 1, 0.0), Duration::from_millis(1000));
    assert_eq!(wait(&p, 1, 0.5), Duration::from_millis(900));
    assert_eq!(wait(&p, 2, 0.999_999), Duration::from_millis(1600));
    // Full jitter reaches down to 0.
    let full = policy(1000, 2.0, 300_000, 1.0);
    assert_eq!(wait(&full, 1, 0.5), Duration::from_millis(500));
    assert!(wait(&full, 1, 0.9999) <= Duration::from_millis(1));
    // Draws outside [0, 1] are clamped; non-finite draws count as 0.
    assert_eq!(wait(&full, 1, -3.0), Duration::from_millis(1000));
    assert_eq!(wait(&full, 1, 7.0), Duration::ZERO);
    assert_eq!(wait(&full, 1, f64::NAN), Duration::from_millis(1000));
}

#[test]
fn the_wait_saturates() {
    let p = policy(MAX_BACKOFF_CEILING_MS, 10.0, MAX_BACKOFF_CEILING_MS, 0.0);
    assert_eq!(wait(&p, u32::MAX, 0.0), Duration::from_millis(MAX_BACKOFF_CEILING_MS));
    let p = policy(1, 10.0, 5000, 0.0);
    assert_eq!(wait(&p, 400, 0.0), Duration::from_millis(5000));
    assert_eq!(wait(&p, u32::MAX, 0.0), Duration::from_millis(5000));
    // An initial wait of 0 retries at once, whatever the growth.
    let p = policy(0, 10.0, 5000, 0.5);
    assert_eq!(wait(&p, 1, 0.3), Duration::ZERO);
    assert_eq!(wait(&p, u32::MAX, 0.3), Duration::ZERO);
    // Stored policies are checked, but a corrupt one still yields a bounded wait.
    let odd = policy(100, f64::NAN, 1000, f64::INFINITY);
    assert_eq!(wait(&odd, 5, 0.5), Duration::from_millis(100));
    let never_above_max = policy(5000, 2.0, 1000, 0.0);
    assert_eq!(wait(&never_above_max, 1, 0.0), Duration::from_millis(1000));
}

#[test]
fn huge_and_odd_numbers_are_quoted_short() {
    let reason =
        |m: f64| check(&RetryOverrides { multiplier: Some(m), ..RetryOverrides::default() }).expect_err("out").reason;
    assert_eq!(reason(1e308), "must be a number from 1.0 to 10.0, got 1e308");
    assert_eq!(reason(f64::NAN), "must be a number from 1.0 to 10.0, got NaN");
    assert_eq!(reason(11.0), "must be a number from 1.0 to 10.0, got 11.0");
    let jitter = check(&RetryOverrides { jitter: Some(f64::INFINITY), ..RetryOverrides::default() }).expect_err("out");
    assert_eq!(jitter.reason, "must be a number from 0.0 to 1.0, got inf");
}
