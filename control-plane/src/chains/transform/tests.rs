use serde_json::{Value, json};

use super::*;

const FIELD: &str = "relationships[1].transformation";
const MAX_BYTES: usize = 65_536;
const MAX_OUTPUT: usize = 1 << 20;

fn context() -> Value {
    json!({
        "results": {"status": 200, "items": [{"id": 1}, {"id": 2}], "body": {"name": "ada"}},
        "args": {"url": "https://example.test/a"},
        "task": {"id": "0190c7e2-0000-7000-8000-000000000001", "function": "http.request.get"},
    })
}

fn parse(document: Value) -> Result<Transformation, String> {
    Transformation::parse(&document, FIELD, MAX_BYTES).map_err(|e| e.to_string())
}

fn eval(document: Value) -> Result<Value, String> {
    parse(document).expect("parses").evaluate(&context(), MAX_OUTPUT)
}

fn jq(expr: &str) -> Result<Value, String> {
    eval(json!({"engine": "jq", "expr": expr}))
}

fn jinja(template: &str) -> Result<Value, String> {
    eval(json!({"engine": "jinja", "template": template}))
}

#[test]
fn jinja_renders_json_from_the_context() {
    let template = r#"{"status": {{ results.status }}, "url": "{{ args.url }}", "parent": "{{ task.id }}",
        "body": {{ results.body | tojson }}, "missing": "{{ results.nope.deeper }}"}"#;
    assert_eq!(
        jinja(template).expect("renders"),
        json!({
            "status": 200,
            "url": "https://example.test/a",
            "parent": "0190c7e2-0000-7000-8000-000000000001",
            "body": {"name": "ada"},
            "missing": "",
        })
    );
}

#[test]
fn jinja_does_not_escape_html() {
    assert_eq!(jinja(r#"{"s": "{{ '<a & b>' }}"}"#).expect("renders"), json!({"s": "<a & b>"}));
}

#[test]
fn jinja_output_that_is_not_json_is_an_error_quoting_it() {
    let err = jinja("status is {{ results.status }}").expect_err("not JSON");
    assert!(err.starts_with("rendered text is not JSON ("), "{err}");
    assert!(err.ends_with("status is 200"), "{err}");
    let long = jinja(&"x".repeat(1000)).expect_err("not JSON");
    assert!(long.ends_with(&format!("{}…", "x".repeat(200))), "{long}");
}

#[test]
fn jinja_syntax_error_is_refused_at_parse_with_the_field() {
    let err = parse(json!({"engine": "jinja", "template": "{\n\"a\": {{ results.status "})).expect_err("syntax");
    assert!(err.starts_with(&format!("{FIELD}.template: does not compile: syntax error")), "{err}");
    assert!(err.contains("template:2"), "names the line: {err}");
}

#[test]
fn jinja_fuel_stops_a_runaway_template() {
    let template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let err = jinja(template).expect_err("out of fuel");
    assert!(err.contains("fuel"), "{err}");
}

#[test]
fn jq_builds_args_from_the_context() {
    assert_eq!(
        jq("{status: .results.status, url: .args.url, parent: .task.id}").expect("runs"),
        json!({"status": 200, "url": "https://example.test/a", "parent": "0190c7e2-0000-7000-8000-000000000001"})
    );
}

#[test]
fn jq_several_or_zero_outputs_make_an_array() {
    assert_eq!(jq(".results.items[]").expect("runs"), json!([{"id": 1}, {"id": 2}]));
    assert_eq!(jq(".results.items").expect("runs"), json!([{"id": 1}, {"id": 2}]));
    assert_eq!(jq("empty").expect("runs"), json!([]));
    assert_eq!(jq("1, 2").expect("runs"), json!([1, 2]));
}

#[test]
fn jq_numbers_print_as_jq_prints_them() {
    assert_eq!(
        jq("[.results.status / 2, 1 / 3, 1e1000, nan, 10000000000000000000000]").expect("runs"),
        json!([100, 1.0 / 3.0, f64::MAX, null, 1e22])
    );
}

#[test]
fn jq_parse_error_is_refused_at_parse_with_the_field() {
    let err = parse(json!({"engine": "jq", "expr": "{status: .results.status"})).expect_err("parse");
    assert!(err.starts_with(&format!("{FIELD}.expr: does not parse: ")), "{err}");
    assert!(err.contains(r#"unclosed "{", found end of input at line 1, column 25"#), "{err}");
    let err = parse(json!({"engine": "jq", "expr": ".a |\n | .b"})).expect_err("parse");
    assert!(err.contains("line 2, column 2"), "{err}");
    let err = parse(json!({"engine": "jq", "expr": "nosuchfilter(1)"})).expect_err("undefined");
    assert_eq!(err, format!("{FIELD}.expr: does not compile: undefined filter nosuchfilter/1 at line 1, column 1"));
}

#[test]
fn jq_runtime_error_is_jaqs_message() {
    assert_eq!(jq(r#"error("no items")"#).expect_err("error"), "no items");
    let err = jq(".results.status | .[0]").expect_err("error");
    assert!(err.contains("cannot index 200"), "{err}");
}

#[test]
fn jq_host_access_is_refused_at_parse() {
    for expr in [
        "env",
        "$ENV",
        "$ENV.HOME",
        "input",
        "inputs",
        "now",
        "debug",
        "stderr",
        "halt",
        "halt_error(1)",
        "localtime",
        "input_filename",
        "env.PATH",
        r#"include "x"; ."#,
    ] {
        let err = parse(json!({"engine": "jq", "expr": expr})).expect_err(expr);
        assert!(err.starts_with(&format!("{FIELD}.expr: does not")), "{expr}: {err}");
    }
    let err = parse(json!({"engine": "jq", "expr": "$ENV.PATH"})).expect_err("ENV");
    assert!(err.contains("undefined variable $ENV"), "{err}");
    assert!(err.contains("host access"), "{err}");
}

#[test]
fn jq_standard_library_is_usable() {
    assert_eq!(
        jq(r#"[.results.items[] | {id, name: ("n" + (.id | tostring))}] | map(select(.id > 1)) | .[0]
            | .tag = (.name | test("^n") | tostring) | .when = (0 | todate)"#)
        .expect("runs"),
        json!({"id": 2, "name": "n2", "tag": "true", "when": "1970-01-01T00:00:00Z"})
    );
}

#[test]
fn jq_exponential_value_fails_on_the_output_budget() {
    let err = jq("reduce range(0; 60) as $i (.; [., .])").expect_err("too large");
    assert!(err.contains("control_plane.transform_max_output_bytes"), "{err}");
    let err = jq("range(1e12)").expect_err("too many outputs");
    assert!(err.contains("control_plane.transform_max_output_bytes"), "{err}");
}

#[test]
fn jq_deep_output_is_refused() {
    let err = jq("reduce range(0; 200) as $i (null; [.])").expect_err("too deep");
    assert_eq!(err, format!("output nests deeper than {MAX_OUTPUT_DEPTH} levels"));
}

#[test]
fn jinja_deep_output_is_refused() {
    let template = format!("{}{}", "[".repeat(120), "]".repeat(120));
    let err = jinja(&template).expect_err("too deep");
    assert_eq!(err, format!("output nests deeper than {MAX_OUTPUT_DEPTH} levels"));
}

#[test]
fn static_is_the_value() {
    assert_eq!(eval(json!({"engine": "static", "value": {"a": [1, 2]}})).expect("value"), json!({"a": [1, 2]}));
    assert_eq!(
        eval(json!({"engine": "static", "value": [{"a": 1}, {"a": 2}]})).expect("value").as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn document_shape_errors_name_the_field() {
    let cases = [
        (json!("jq"), format!("{FIELD}: must be an object")),
        (json!({"expr": "."}), format!("{FIELD}.engine: required")),
        (
            json!({"engine": "lua", "code": "x"}),
            format!(r#"{FIELD}.engine: unknown engine "lua" (expected jinja, jq or static)"#),
        ),
        (json!({"engine": 1}), format!("{FIELD}.engine: must be a string (jinja, jq or static)")),
        (json!({"engine": "jq"}), format!("{FIELD}.expr: required")),
        (json!({"engine": "jinja"}), format!("{FIELD}.template: required")),
        (json!({"engine": "static"}), format!("{FIELD}.value: required")),
        (json!({"engine": "jq", "expr": ".", "x": 1}), format!(r#"{FIELD}: unknown field "x""#)),
        (json!({"engine": "jq", "template": "."}), format!(r#"{FIELD}: unknown field "template""#)),
        (json!({"engine": "jq", "expr": 1}), format!("{FIELD}.expr: must be a string")),
    ];
    for (document, want) in cases {
        assert_eq!(parse(document.clone()).expect_err("refused"), want, "{document}");
    }
}

#[test]
fn document_size_is_capped() {
    let template = format!(r#"{{"a": "{}"}}"#, "x".repeat(70_000 - 9));
    let err = parse(json!({"engine": "jinja", "template": template})).expect_err("too large");
    assert_eq!(err, format!("{FIELD}.template: 70000 bytes exceeds limits.max_transformation_bytes (65536)"));
    let err = parse(json!({"engine": "jq", "expr": " ".repeat(65_537)})).expect_err("too large");
    assert_eq!(err, format!("{FIELD}.expr: 65537 bytes exceeds limits.max_transformation_bytes (65536)"));
    let err = parse(json!({"engine": "static", "value": "x".repeat(65_535)})).expect_err("too large");
    assert_eq!(err, format!("{FIELD}.value: 65537 bytes exceeds limits.max_transformation_bytes (65536)"));
    assert!(parse(json!({"engine": "static", "value": "x".repeat(65_534)})).is_ok());
}

#[test]
fn output_size_is_capped() {
    let small = 100;
    let ctx = context();
    let big_static = parse(json!({"engine": "static", "value": "x".repeat(200)})).expect("parses");
    let err = big_static.evaluate(&ctx, small).expect_err("too large");
    assert_eq!(err, "output exceeds control_plane.transform_max_output_bytes (100 bytes)");
    let big_jq = parse(json!({"engine": "jq", "expr": r#""x" * 200"#})).expect("parses");
    assert_eq!(big_jq.evaluate(&ctx, small).expect_err("too large"), err);
    let big_jinja = parse(json!({"engine": "jinja", "template": r#""{{ "x" * 200 }}""#})).expect("parses");
    assert_eq!(big_jinja.evaluate(&ctx, small).expect_err("too large"), err);
    let huge_jinja =
        parse(json!({"engine": "jinja", "template": "{% for i in range(10000) %} {% endfor %}1"})).expect("parses");
    assert_eq!(huge_jinja.evaluate(&ctx, small).expect_err("too large"), err);
    assert_eq!(big_jq.evaluate(&ctx, 202).expect("fits"), json!("x".repeat(200)));
}

#[test]
fn serde_shape_round_trips() {
    let t = parse(json!({"engine": "jq", "expr": ".args"})).expect("parses");
    let text = serde_json::to_value(&t).expect("serializes");
    assert_eq!(text, json!({"engine": "jq", "expr": ".args"}));
    assert_eq!(serde_json::from_value::<Transformation>(text).expect("deserializes"), t);
    assert_eq!(t.engine(), "jq");
    assert!(t.needs_sandbox());
    assert!(!parse(json!({"engine": "static", "value": 1})).expect("parses").needs_sandbox());
}

#[test]
fn compiled_programs_are_cached_and_bounded() {
    let mut lru = cache::Lru::new(2);
    lru.insert("a".into(), 1);
    lru.insert("b".into(), 2);
    assert_eq!(lru.get("a"), Some(1));
    lru.insert("c".into(), 3);
    assert_eq!(lru.len(), 2);
    assert_eq!(lru.get("b"), None, "the least recently used entry is evicted");
    assert_eq!(lru.get("a"), Some(1));
    assert_eq!(lru.get("c"), Some(3));
    // The same document twice: the second evaluation uses the compiled program.
    for _ in 0..2 {
        assert_eq!(jq(".results.status").expect("runs"), json!(200));
    }
}
