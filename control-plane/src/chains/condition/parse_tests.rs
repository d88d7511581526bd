//! Parse errors of [`super::Condition::parse`]: each names the exact sub-path.

use serde_json::{Value, json};

use super::{Condition, MAX_DEPTH, MAX_LEAVES, ONE_SIDED_OPERATORS, OPERATORS};

const FIELD: &str = "relationships[2].conditions";

fn parse(rule: &Value) -> Condition {
    Condition::parse(rule, FIELD).expect("valid rule")
}

/// The error message (`field: reason`) for an invalid rule.
fn parse_error(rule: &Value) -> String {
    Condition::parse(rule, FIELD).expect_err("invalid rule").to_string()
}

fn leaf(fact: &str, operator: &str, value: Value) -> Value {
    if value.is_null() {
        json!({"fact": fact, "operator": operator})
    } else {
        json!({"fact": fact, "operator": operator, "value": value})
    }
}

#[test]
fn a_rule_must_be_an_object() {
    assert!(parse_error(&json!([1])).starts_with("relationships[2].conditions: a rule must be an object"));
    assert!(
        parse_error(&json!({"all": [1]})).starts_with("relationships[2].conditions.all[0]: a rule must be an object")
    );
    assert!(parse_error(&json!("results.x")).ends_with("not a string"));
}

#[test]
fn a_rule_has_exactly_one_of_all_any_fact() {
    let ok = leaf("results.x", "nil", Value::Null);
    assert_eq!(
        parse_error(&json!({"all": [ok], "any": [ok]})),
        "relationships[2].conditions: a rule has either all or any, not both"
    );
    assert_eq!(
        parse_error(&json!({"all": [{"any": [ok], "fact": "results.x", "operator": "nil"}]})),
        "relationships[2].conditions.all[0]: a rule is either a group (any) or a leaf (fact), not both"
    );
    assert_eq!(parse_error(&json!({})), "relationships[2].conditions: a rule needs all, any or fact");
    assert_eq!(
        parse_error(&json!({"any": [{"rule": 1}]})),
        "relationships[2].conditions.any[0]: a rule needs all, any or fact"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let ok = leaf("results.x", "nil", Value::Null);
    assert_eq!(
        parse_error(&json!({"all": [ok], "name": "x"})),
        "relationships[2].conditions.name: unknown key (a group has only all)"
    );
    assert_eq!(
        parse_error(&json!({"any": [{"fact": "results.x", "operator": "equal", "value": 1, "note": "x"}]})),
        "relationships[2].conditions.any[0].note: unknown key (a leaf has fact, operator and value)"
    );
}

#[test]
fn groups_need_a_non_empty_array() {
    assert_eq!(
        parse_error(&json!({"all": {"fact": "results.x"}})),
        "relationships[2].conditions.all: must be an array of rules, not an object"
    );
    assert_eq!(parse_error(&json!({"any": []})), "relationships[2].conditions.any: must hold at least one rule");
    assert_eq!(
        parse_error(&json!({"all": [{"any": []}]})),
        "relationships[2].conditions.all[0].any: must hold at least one rule"
    );
}

#[test]
fn facts_are_required_dotted_paths() {
    let ok = leaf("results.x", "nil", Value::Null);
    assert_eq!(
        parse_error(&json!({"all": [ok, {"operator": "nil"}]})),
        "relationships[2].conditions.all[1].fact: required"
    );
    assert_eq!(
        parse_error(&json!({"fact": 5, "operator": "nil"})),
        "relationships[2].conditions.fact: must be a dotted path such as results.status, not a number"
    );
    for fact in ["", "results..x", "results.", ".results", "."] {
        let error = parse_error(&json!({"any": [{"fact": fact, "operator": "nil"}]}));
        assert!(
            error.starts_with("relationships[2].conditions.any[0].fact: must be dot-separated non-empty segments"),
            "{fact}: {error}"
        );
    }
}

#[test]
fn operators_are_required_and_known() {
    assert_eq!(
        parse_error(&json!({"all": [{"fact": "results.x", "value": 1}]})),
        "relationships[2].conditions.all[0].operator: required"
    );
    assert_eq!(
        parse_error(&json!({"fact": "results.x", "operator": ["equal"], "value": 1})),
        "relationships[2].conditions.operator: must be a string, not an array"
    );
    let ok = leaf("results.x", "nil", Value::Null);
    let rule = json!({"all": [{"any": [ok, {"fact": "results.x", "operator": "equals", "value": 1}]}]});
    assert_eq!(
        parse_error(&rule),
        "relationships[2].conditions.all[0].any[1].operator: unknown operator \"equals\" (expected one of: equal, \
         not_equal, greater_than, less_than, greater_or_equal, less_or_equal, between, contains, starts_with, \
         ends_with, matches, in_set, not_in_set, size_equal, nil, not_nil, is_true, is_false, is_string, is_array, \
         is_integer, empty, not_empty)"
    );
}

#[test]
fn two_sided_operators_need_a_value() {
    for operator in OPERATORS.iter().filter(|o| !ONE_SIDED_OPERATORS.contains(o)) {
        assert_eq!(
            parse_error(&json!({"all": [{"fact": "results.x", "operator": operator}]})),
            "relationships[2].conditions.all[0].value: required",
            "{operator}"
        );
        let error = parse_error(&json!({"all": [{"fact": "results.x", "operator": operator, "value": null}]}));
        assert!(error.starts_with("relationships[2].conditions.all[0].value: must not be null"), "{error}");
    }
}

#[test]
fn one_sided_operators_take_no_value() {
    for operator in ONE_SIDED_OPERATORS {
        assert_eq!(
            parse_error(&json!({"any": [{"fact": "results.x", "operator": operator, "value": true}]})),
            format!(
                "relationships[2].conditions.any[0].value: {operator} takes no value (remove it or set it to null)"
            )
        );
        parse(&json!({"fact": "results.x", "operator": operator, "value": null}));
        parse(&json!({"fact": "results.x", "operator": operator}));
    }
}

#[test]
fn between_needs_two_ordered_bounds_of_one_type() {
    let error = |value: Value| parse_error(&json!({"all": [leaf("results.x", "between", value)]}));
    for value in [json!(5), json!([1]), json!([1, 2, 3]), json!([1, "z"]), json!([true, false]), json!([[1], [2]])] {
        let message = error(value.clone());
        assert!(
            message.starts_with(
                "relationships[2].conditions.all[0].value: between needs an array of two values [low, high]"
            ),
            "{value}: {message}"
        );
    }
    assert_eq!(error(json!([5, 1])), "relationships[2].conditions.all[0].value: between needs low <= high, not [5,1]");
    assert!(error(json!(["z", "a"])).contains("between needs low <= high"));
    for value in [json!([1, 1]), json!([1, 2.5]), json!(["a", "b"])] {
        parse(&leaf("results.x", "between", value));
    }
}

#[test]
fn in_set_and_not_in_set_need_an_array() {
    for operator in ["in_set", "not_in_set"] {
        assert_eq!(
            parse_error(&json!({"any": [leaf("results.x", operator, json!("a,b"))]})),
            format!("relationships[2].conditions.any[0].value: {operator} needs an array of values, not a string")
        );
    }
}

#[test]
fn size_equal_needs_a_non_negative_integer() {
    for value in [json!(-1), json!(1.5), json!("2"), json!([2])] {
        let message = parse_error(&json!({"all": [leaf("results.x", "size_equal", value.clone())]}));
        assert!(
            message.starts_with("relationships[2].conditions.all[0].value: size_equal needs a non-negative integer"),
            "{value}: {message}"
        );
    }
}

#[test]
fn matches_needs_a_valid_bounded_regex() {
    let error = |value: Value| parse_error(&json!({"any": [leaf("results.x", "matches", value)]}));
    assert_eq!(error(json!(5)), "relationships[2].conditions.any[0].value: matches needs a regex string, not a number");
    assert!(error(json!("(unclosed")).starts_with("relationships[2].conditions.any[0].value: invalid regex: "));
    // Compiles to far more than the size limit: refused, not built.
    let message = error(json!(r"(\w{100}){1000}"));
    assert!(message.starts_with("relationships[2].conditions.any[0].value: invalid regex: "), "{message}");
}

#[test]
fn starts_with_and_ends_with_need_a_string() {
    for operator in ["starts_with", "ends_with"] {
        assert_eq!(
            parse_error(&json!({"all": [leaf("results.x", operator, json!(1))]})),
            format!("relationships[2].conditions.all[0].value: {operator} needs a string, not a number")
        );
    }
}

/// `levels` groups nested in one another around one leaf.
fn nested(levels: usize) -> Value {
    (0..levels).fold(leaf("results.x", "nil", Value::Null), |rule, _| json!({"all": [rule]}))
}

#[test]
fn nesting_is_bounded() {
    assert!(parse(&nested(MAX_DEPTH)).evaluate(&json!({})).satisfied);
    let path = format!("{FIELD}{}", ".all[0]".repeat(MAX_DEPTH));
    assert_eq!(parse_error(&nested(MAX_DEPTH + 1)), format!("{path}: groups nest deeper than {MAX_DEPTH} levels"));
}

#[test]
fn leaves_are_bounded() {
    let rules = |count: usize| json!({"any": vec![leaf("results.x", "nil", Value::Null); count]});
    assert!(parse(&rules(MAX_LEAVES)).evaluate(&json!({})).satisfied);
    assert_eq!(
        parse_error(&rules(MAX_LEAVES + 1)),
        format!("{FIELD}.any[{MAX_LEAVES}]: a condition has at most {MAX_LEAVES} leaf rules")
    );
}

#[test]
fn an_empty_field_prefix_gives_relative_paths() {
    let error = Condition::parse(&json!({"all": [{"fact": "results.x"}]}), "").expect_err("invalid rule");
    assert_eq!(error.field, "all[0].operator");
    assert_eq!(error.reason, "required");
}

#[test]
fn facts_start_at_the_context_and_orderings_need_a_comparable_value() {
    let error = parse_error(&json!({"fact": "status", "operator": "equal", "value": 200}));
    assert!(error.starts_with(&format!("{FIELD}.fact: ")), "{error}");
    assert!(error.contains("must start with results, args or task"), "{error}");
    for value in [json!(true), json!([1]), json!({"a": 1})] {
        let error = parse_error(&json!({"fact": "results.n", "operator": "greater_than", "value": value}));
        assert!(error.starts_with(&format!("{FIELD}.value: greater_than compares numbers or strings")), "{error}");
    }
}
