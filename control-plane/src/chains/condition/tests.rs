//! Evaluation of [`super::Condition`]: every operator, nil, type mismatches, numbers, fact paths, groups and reasons.

use serde_json::{Value, json};

use super::{Condition, Evaluation, MAX_QUOTED_CHARS};

const FIELD: &str = "relationships[2].conditions";

fn parse(rule: &Value) -> Condition {
    Condition::parse(rule, FIELD).expect("valid rule")
}

fn leaf(fact: &str, operator: &str, value: Value) -> Value {
    if value.is_null() {
        json!({"fact": fact, "operator": operator})
    } else {
        json!({"fact": fact, "operator": operator, "value": value})
    }
}

/// Evaluates `results.x <operator> value` with `results.x` set to `fact` (`null` is nil).
fn check(fact: Value, operator: &str, value: Value) -> Evaluation {
    parse(&leaf("results.x", operator, value)).evaluate(&json!({"results": {"x": fact}}))
}

fn holds(fact: Value, operator: &str, value: Value) -> bool {
    check(fact, operator, value).satisfied
}

fn context() -> Value {
    json!({
        "results": {
            "status": 200,
            "body": "hello world",
            "items": [{"name": "a"}, {"name": "b", "tags": ["x", "y"]}],
            "headers": {"content-type": "application/json", "0": "zero"},
            "none": null,
        },
        "args": {"url": "https://example.com/x"},
        "task": {"id": "t1", "attempt": 1},
    })
}

#[test]
fn equal() {
    assert!(holds(json!(200), "equal", json!(200)));
    assert!(holds(json!("ok"), "equal", json!("ok")));
    assert!(holds(json!(true), "equal", json!(true)));
    assert!(holds(json!({"a": [1, 2]}), "equal", json!({"a": [1, 2]})));
    assert!(!holds(json!(201), "equal", json!(200)));
    assert!(!holds(json!("ok"), "equal", json!("OK")));
    assert!(!holds(json!({"a": 1}), "equal", json!({"a": 1, "b": 2})));
    assert!(!holds(json!([1, 2]), "equal", json!([2, 1])));
}

#[test]
fn numbers_compare_as_numbers() {
    assert!(holds(json!(200), "equal", json!(200.0)));
    assert!(holds(json!(200.0), "equal", json!(200)));
    assert!(holds(json!(-5), "equal", json!(-5.0)));
    assert!(holds(json!([1, {"a": 2}]), "equal", json!([1.0, {"a": 2.0}])));
    assert!(holds(json!(u64::MAX), "equal", json!(u64::MAX)));
    assert!(!holds(json!(u64::MAX), "equal", json!(-1)));
    assert!(holds(json!(u64::MAX), "greater_than", json!(i64::MAX)));
    assert!(holds(json!(i64::MIN), "less_than", json!(0)));
    // Integers compare exactly, beyond f64 precision.
    assert!(!holds(json!(9_007_199_254_740_993_u64), "equal", json!(9_007_199_254_740_992_u64)));
    assert!(holds(json!(9_007_199_254_740_993_u64), "greater_than", json!(9_007_199_254_740_992_u64)));
    assert!(holds(json!(2.5), "greater_than", json!(2)));
    assert!(holds(json!(2), "less_than", json!(2.5)));
    assert!(holds(json!(2), "in_set", json!([1.0, 2.0])));
}

#[test]
fn not_equal() {
    assert!(holds(json!(201), "not_equal", json!(200)));
    assert!(!holds(json!(200.0), "not_equal", json!(200)));
    // A fact of another type is not equal.
    assert!(holds(json!("200"), "not_equal", json!(200)));
    assert!(holds(json!([200]), "not_equal", json!(200)));
    let evaluation = parse(&leaf("results.status", "not_equal", json!(200))).evaluate(&context());
    assert_eq!(
        evaluation,
        Evaluation { satisfied: false, reason: "results.status (200) not_equal 200 is false".to_owned() }
    );
}

#[test]
fn ordering_operators() {
    assert!(holds(json!(5), "greater_than", json!(3)));
    assert!(!holds(json!(3), "greater_than", json!(3)));
    assert!(holds(json!(3), "less_than", json!(5)));
    assert!(!holds(json!(5), "less_than", json!(5)));
    assert!(holds(json!(3), "greater_or_equal", json!(3)));
    assert!(!holds(json!(2), "greater_or_equal", json!(3)));
    assert!(holds(json!(3), "less_or_equal", json!(3.0)));
    assert!(!holds(json!(4), "less_or_equal", json!(3)));
    // Strings by Unicode scalar: "B" (U+0042) is before "a" (U+0061), "é" after "z".
    assert!(holds(json!("b"), "greater_than", json!("a")));
    assert!(holds(json!("B"), "less_than", json!("a")));
    assert!(holds(json!("é"), "greater_than", json!("z")));
    assert!(holds(json!("abc"), "greater_or_equal", json!("abc")));
}

#[test]
fn ordering_type_mismatch_is_false() {
    for operator in ["greater_than", "less_than", "greater_or_equal", "less_or_equal"] {
        assert!(!holds(json!("10"), operator, json!(9)), "{operator}");
        assert!(!holds(json!(10), operator, json!("9")), "{operator}");
        assert!(!holds(json!(true), operator, json!(0)), "{operator}");
        assert!(!holds(json!([1]), operator, json!("1")), "{operator}");
    }
    assert_eq!(
        check(json!("10"), "greater_than", json!(9)).reason,
        "results.x (\"10\") greater_than 9 is false: a string does not compare with a number (only two numbers or \
         two strings do)"
    );
}

#[test]
fn between() {
    assert!(holds(json!(5), "between", json!([1, 10])));
    assert!(holds(json!(1), "between", json!([1, 10])));
    assert!(holds(json!(10), "between", json!([1, 10])));
    assert!(holds(json!(1.5), "between", json!([1, 2])));
    assert!(holds(json!(3), "between", json!([3, 3])));
    assert!(!holds(json!(11), "between", json!([1, 10])));
    assert!(!holds(json!(0.5), "between", json!([1, 10])));
    assert!(holds(json!("m"), "between", json!(["a", "z"])));
    assert!(!holds(json!("zz"), "between", json!(["a", "z"])));
    assert!(!holds(json!("5"), "between", json!([1, 10])));
    assert!(!holds(json!(5), "between", json!(["a", "z"])));
}

#[test]
fn contains() {
    assert!(holds(json!("hello world"), "contains", json!("lo w")));
    assert!(!holds(json!("hello world"), "contains", json!("bye")));
    assert!(!holds(json!("1 2 3"), "contains", json!(1)));
    assert!(holds(json!([1, 2.0, "a"]), "contains", json!(2)));
    assert!(holds(json!([{"a": 1.0}]), "contains", json!({"a": 1})));
    assert!(!holds(json!(["a", "b"]), "contains", json!("c")));
    assert!(holds(json!({"k": 1}), "contains", json!("k")));
    assert!(!holds(json!({"k": 1}), "contains", json!("v")));
    assert!(!holds(json!(123), "contains", json!(1)));
    assert!(!holds(json!(true), "contains", json!(true)));
    assert_eq!(
        check(json!(123), "contains", json!(1)).reason,
        "results.x (123) contains 1 is false: contains needs a string, an array or an object, not a number"
    );
}

#[test]
fn starts_with_and_ends_with() {
    assert!(holds(json!("https://x"), "starts_with", json!("https://")));
    assert!(!holds(json!("http://x"), "starts_with", json!("https://")));
    assert!(holds(json!("report.csv"), "ends_with", json!(".csv")));
    assert!(!holds(json!("report.csv"), "ends_with", json!(".json")));
    assert!(!holds(json!(123), "starts_with", json!("1")));
    assert!(!holds(json!(123), "ends_with", json!("3")));
}

#[test]
fn matches() {
    assert!(holds(json!("order-1234"), "matches", json!(r"\d+")));
    assert!(holds(json!("ORDER"), "matches", json!("(?i)^order$")));
    assert!(!holds(json!("order-1234"), "matches", json!(r"^\d+$")));
    assert!(!holds(json!(1234), "matches", json!(r"\d+")));
    assert_eq!(
        check(json!(1234), "matches", json!(r"\d+")).reason,
        r#"results.x (1234) matches "\\d+" is false: the fact must be a string, not a number"#
    );
}

#[test]
fn in_set_and_not_in_set() {
    assert!(holds(json!(2), "in_set", json!([1, 2, 3])));
    assert!(holds(json!("a"), "in_set", json!(["a", "b"])));
    assert!(!holds(json!(4), "in_set", json!([1, 2, 3])));
    assert!(!holds(json!("1"), "in_set", json!([1])));
    assert!(!holds(json!(1), "in_set", json!([])));
    assert!(holds(json!(4), "not_in_set", json!([1, 2, 3])));
    assert!(holds(json!("1"), "not_in_set", json!([1])));
    assert!(holds(json!(1), "not_in_set", json!([])));
    assert!(!holds(json!(2.0), "not_in_set", json!([1, 2])));
}

#[test]
fn size_equal() {
    assert!(holds(json!("héllo"), "size_equal", json!(5)));
    assert!(holds(json!([1, 2]), "size_equal", json!(2)));
    assert!(holds(json!({"a": 1}), "size_equal", json!(1)));
    assert!(holds(json!(""), "size_equal", json!(0)));
    assert!(holds(json!([1, 2]), "size_equal", json!(2.0)));
    assert!(!holds(json!([1, 2]), "size_equal", json!(3)));
    assert!(!holds(json!(5), "size_equal", json!(1)));
    assert!(!holds(json!(true), "size_equal", json!(1)));
}

#[test]
fn nil_and_not_nil() {
    let ctx = context();
    let evaluate = |fact: &str, operator: &str| parse(&leaf(fact, operator, Value::Null)).evaluate(&ctx).satisfied;
    for fact in ["results.none", "results.missing", "results.items.9", "results.status.code", "results.items.x"] {
        assert!(evaluate(fact, "nil"), "{fact}");
        assert!(!evaluate(fact, "not_nil"), "{fact}");
    }
    for fact in ["results.status", "results.items", "task.attempt"] {
        assert!(!evaluate(fact, "nil"), "{fact}");
        assert!(evaluate(fact, "not_nil"), "{fact}");
    }
    assert!(holds(json!(false), "not_nil", Value::Null));
    assert!(holds(json!(0), "not_nil", Value::Null));
    assert!(holds(json!(""), "not_nil", Value::Null));
    assert_eq!(check(json!(0), "nil", Value::Null).reason, "results.x (0) nil is false");
    assert_eq!(check(Value::Null, "not_nil", Value::Null).reason, "results.x is nil");
}

#[test]
fn is_true_and_is_false() {
    assert!(holds(json!(true), "is_true", Value::Null));
    assert!(!holds(json!(false), "is_true", Value::Null));
    assert!(!holds(json!("true"), "is_true", Value::Null));
    assert!(!holds(json!(1), "is_true", Value::Null));
    assert!(!holds(Value::Null, "is_true", Value::Null));
    assert!(holds(json!(false), "is_false", Value::Null));
    assert!(!holds(json!(true), "is_false", Value::Null));
    assert!(!holds(json!(0), "is_false", Value::Null));
    assert!(!holds(json!(""), "is_false", Value::Null));
    assert!(!holds(Value::Null, "is_false", Value::Null));
}

#[test]
fn type_tests() {
    assert!(holds(json!("x"), "is_string", Value::Null));
    assert!(holds(json!(""), "is_string", Value::Null));
    assert!(!holds(json!(1), "is_string", Value::Null));
    assert!(!holds(Value::Null, "is_string", Value::Null));
    assert!(holds(json!([]), "is_array", Value::Null));
    assert!(!holds(json!({}), "is_array", Value::Null));
    assert!(!holds(json!("[]"), "is_array", Value::Null));
    assert!(holds(json!(3), "is_integer", Value::Null));
    assert!(holds(json!(3.0), "is_integer", Value::Null));
    assert!(holds(json!(-2), "is_integer", Value::Null));
    assert!(holds(json!(u64::MAX), "is_integer", Value::Null));
    assert!(!holds(json!(3.5), "is_integer", Value::Null));
    assert!(!holds(json!("3"), "is_integer", Value::Null));
    assert!(!holds(Value::Null, "is_integer", Value::Null));
}

#[test]
fn empty_and_not_empty() {
    for fact in [json!(""), json!([]), json!({}), Value::Null] {
        assert!(holds(fact.clone(), "empty", Value::Null), "{fact}");
        assert!(!holds(fact.clone(), "not_empty", Value::Null), "{fact}");
    }
    assert!(parse(&leaf("results.missing", "empty", Value::Null)).evaluate(&context()).satisfied);
    for fact in [json!(" "), json!([null]), json!({"a": null})] {
        assert!(!holds(fact.clone(), "empty", Value::Null), "{fact}");
        assert!(holds(fact.clone(), "not_empty", Value::Null), "{fact}");
    }
    // Scalars are neither empty nor non-empty.
    for fact in [json!(0), json!(false), json!(1.5)] {
        assert!(!holds(fact.clone(), "empty", Value::Null), "{fact}");
        assert!(!holds(fact.clone(), "not_empty", Value::Null), "{fact}");
    }
}

#[test]
fn nil_never_satisfies_a_two_sided_operator() {
    let cases = [
        ("equal", json!(200)),
        ("not_equal", json!(200)),
        ("greater_than", json!(1)),
        ("less_than", json!(1)),
        ("greater_or_equal", json!(1)),
        ("less_or_equal", json!(1)),
        ("between", json!([0, 10])),
        ("contains", json!("a")),
        ("starts_with", json!("a")),
        ("ends_with", json!("a")),
        ("matches", json!(".*")),
        ("in_set", json!([1, 2])),
        ("not_in_set", json!([1, 2])),
        ("size_equal", json!(0)),
    ];
    for (operator, value) in cases {
        let condition = parse(&leaf("results.x", operator, value));
        for context in [json!({"results": {"x": null}}), json!({"results": {}}), json!({}), json!(null), json!(7)] {
            let evaluation = condition.evaluate(&context);
            assert_eq!(
                evaluation,
                Evaluation { satisfied: false, reason: "results.x is nil".to_owned() },
                "{operator} {context}"
            );
        }
    }
}

#[test]
fn dotted_facts_into_objects_and_arrays() {
    let ctx = context();
    let equal = |fact: &str, value: Value| parse(&leaf(fact, "equal", value)).evaluate(&ctx).satisfied;
    assert!(equal("results.status", json!(200)));
    assert!(equal("results.items.1.name", json!("b")));
    assert!(equal("results.items.0.name", json!("a")));
    assert!(equal("results.items.1.tags.1", json!("y")));
    assert!(equal("results.headers.content-type", json!("application/json")));
    assert!(equal("results.headers.0", json!("zero")));
    assert!(equal("args.url", json!("https://example.com/x")));
    assert!(equal("task.attempt", json!(1)));
    assert!(equal("results.items", json!([{"name": "a"}, {"name": "b", "tags": ["x", "y"]}])));
    let nil = |fact: &str| parse(&leaf(fact, "nil", Value::Null)).evaluate(&ctx).satisfied;
    assert!(nil("results.items.2.name"));
    assert!(nil("results.items.-1"));
    assert!(nil("results.items.+1"));
    assert!(nil("results.items.99999999999999999999999"));
    assert!(nil("results.body.length"));
    assert!(nil("results.none.deeper"));
    assert!(nil("results.nothing"));
}

#[test]
fn all_and_any_nest() {
    let ctx = context();
    let ok = leaf("results.status", "equal", json!(200));
    let bad = leaf("results.status", "equal", json!(500));
    let missing = leaf("results.missing", "equal", json!(1));
    let evaluate = |rule: Value| parse(&rule).evaluate(&ctx);
    assert!(evaluate(json!({"all": [ok, ok]})).satisfied);
    assert!(evaluate(json!({"any": [bad, ok]})).satisfied);
    assert!(evaluate(json!({"all": [ok, {"any": [bad, {"all": [ok, {"any": [missing, ok]}]}]}]})).satisfied);
    assert_eq!(evaluate(json!({"all": [ok, bad, missing]})).reason, "results.status (200) equal 500 is false");
    assert_eq!(evaluate(json!({"all": [ok, missing, bad]})).reason, "results.missing is nil");
    assert_eq!(
        evaluate(json!({"any": [bad, missing]})).reason,
        "none of 2 rules of any holds: results.status (200) equal 500 is false"
    );
    assert_eq!(
        evaluate(json!({"any": [missing]})).reason,
        "the only rule of any does not hold: results.missing is nil"
    );
    assert_eq!(
        evaluate(json!({"all": [ok, {"any": [missing, bad]}]})).reason,
        "none of 2 rules of any holds: results.missing is nil"
    );
    assert_eq!(evaluate(json!({"all": [ok]})), Evaluation { satisfied: true, reason: String::new() });
}

#[test]
fn reasons_quote_long_values_briefly() {
    let long = "x".repeat(10_000);
    let reason = check(json!(long), "equal", json!("y")).reason;
    let quoted = format!("\"{}…", "x".repeat(MAX_QUOTED_CHARS - 1));
    assert_eq!(reason, format!("results.x ({quoted}) equal \"y\" is false"), "{reason}");
}

#[test]
fn reasons_quote_long_values_of_multibyte_chars() {
    let fact = json!(vec!["é"; 1000]);
    let reason = check(fact, "size_equal", json!(1)).reason;
    assert!(reason.starts_with("results.x ([\"é\",\"é\""), "{reason}");
    assert!(reason.ends_with("…) size_equal 1 is false"), "{reason}");
    assert!(reason.chars().count() < 2 * MAX_QUOTED_CHARS, "{reason}");
}

#[test]
fn contains_explains_a_non_string_needle() {
    assert_eq!(
        check(json!({"1": true}), "contains", json!(1)).reason,
        "results.x ({\"1\":true}) contains 1 is false: an object contains keys, which are strings"
    );
    assert_eq!(
        check(json!("123"), "contains", json!(1)).reason,
        "results.x (\"123\") contains 1 is false: a string contains only strings"
    );
}
