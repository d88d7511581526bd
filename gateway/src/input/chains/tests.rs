use serde_json::json;

use super::*;

fn detail(result: Result<impl std::fmt::Debug, Problem>) -> String {
    let problem = result.expect_err("must be refused");
    assert_eq!((problem.status, problem.code.as_str()), (400, "INVALID_ARGUMENT"), "{problem}");
    problem.detail
}

fn parse(body: &serde_json::Value) -> Result<ChainBody, Problem> {
    ChainBody::parse(body.to_string().as_bytes())
}

#[test]
fn a_full_body_becomes_the_grpc_request() {
    let body = json!({
        "name": "nightly",
        "description": "reports",
        "max_depth": 5,
        "relationships": [{
            "trigger": "http.request.get",
            "action": "log.entry.write",
            "conditions": {"all": [{"fact": "results.status", "operator": "equal", "value": 200}]},
            "transformation": {"engine": "static", "value": {"n": [1, 2.5, null]}},
            "delay_ms": 18_446_744_073_709_551_615_u64,
            "active": false,
            "priority": 9,
            "max_attempts": 3,
            "timeout_ms": 4_294_967_295_u32
        }]
    });
    let request = parse(&body).expect("parses").into_request();
    let chain = request.chain.expect("chain");
    assert_eq!((chain.name.as_str(), chain.description.as_str(), chain.max_depth), ("nightly", "reports", Some(5)));
    assert_eq!((chain.version, chain.created_at, chain.updated_by.as_str()), (0, None, ""), "output-only fields unset");
    let r = &chain.relationships[0];
    assert_eq!((r.id.as_str(), r.trigger.as_str(), r.action.as_str()), ("", "http.request.get", "log.entry.write"));
    assert_eq!(
        r.conditions.as_ref().map(legion_proto::value_to_json),
        Some(body["relationships"][0]["conditions"].clone())
    );
    assert_eq!(
        r.transformation.as_ref().map(legion_proto::value_to_json),
        Some(json!({"engine": "static", "value": {"n": [1, 2.5, null]}}))
    );
    assert_eq!(
        (r.delay_ms, r.active, r.priority, r.max_attempts, r.timeout_ms),
        (u64::MAX, Some(false), Some(9), Some(3), Some(u32::MAX))
    );
}

#[test]
fn a_minimal_body_leaves_the_defaults_to_the_control_plane() {
    let request =
        parse(&json!({"name": "c", "relationships": [{"trigger": "a.b.c", "action": "d.e.f", "conditions": null}]}))
            .expect("parses")
            .into_request();
    let chain = request.chain.expect("chain");
    assert_eq!((chain.description.as_str(), chain.max_depth), ("", None));
    let r = &chain.relationships[0];
    assert_eq!((r.conditions.as_ref(), r.transformation.as_ref()), (None, None), "null is absent");
    assert_eq!((r.delay_ms, r.active, r.priority, r.max_attempts, r.timeout_ms), (0, None, None, None, None));
    let empty = parse(&json!({"name": "c", "relationships": []})).expect("no relationships is a valid chain");
    assert!(empty.relationships.is_empty());
}

#[test]
fn unknown_fields_are_named_by_path() {
    let d = detail(parse(&json!({"name": "c", "relationships": [], "version": 3, "owner": "x"})));
    assert!(d.starts_with("owner, version: unknown fields; accepted fields are name, description"), "{d}");
    let d = detail(parse(&json!({"name": "c", "relationships": [
        {"trigger": "a.b.c", "action": "d.e.f"},
        {"trigger": "a.b.c", "action": "d.e.f", "id": "x", "when": {}}
    ]})));
    assert!(
        d.starts_with("relationships[1].id, relationships[1].when: unknown fields; accepted fields are trigger,"),
        "{d}"
    );
    let d =
        detail(parse(&json!({"name": "c", "relationships": [{"trigger": "a.b.c", "action": "d.e.f", "delay": 5}]})));
    assert!(d.starts_with("relationships[0].delay: unknown field;"), "{d}");
}

#[test]
fn missing_and_wrongly_typed_fields_are_named() {
    assert_eq!(detail(parse(&json!({"relationships": []}))), "name: required");
    assert_eq!(detail(parse(&json!({"name": "c"}))), "relationships: required");
    assert_eq!(detail(parse(&json!({"name": "c", "relationships": null}))), "relationships: required");
    let d = detail(parse(&json!({"name": "c", "relationships": [{"action": "d.e.f"}]})));
    assert_eq!(d, "relationships[0]: missing field `trigger`");
    let d = detail(parse(&json!({"name": "c", "relationships": {"trigger": "a"}})));
    assert!(d.starts_with("relationships: invalid type: map, expected a sequence"), "{d}");
    let d = detail(parse(&json!({"name": "c", "relationships": ["a.b.c"]})));
    assert_eq!(d, "relationships[0]: must be a JSON object, not a string");
    let d = detail(parse(&json!({"name": 7, "relationships": []})));
    assert!(d.starts_with("name: invalid type: integer `7`"), "{d}");
    let d = detail(parse(&json!({"name": "c", "relationships": [{"trigger": "a", "action": "b", "active": "yes"}]})));
    assert!(d.starts_with(r#"relationships[0].active: invalid type: string "yes", expected a boolean"#), "{d}");
    let d = detail(parse(&json!({"name": "c", "relationships": [{"trigger": "a", "action": "b", "priority": "9"}]})));
    assert!(d.starts_with("relationships[0].priority: invalid type: string"), "{d}");
}

/// Numbers must fit their protobuf type: refused by name, never truncated or wrapped.
#[test]
fn out_of_range_numbers_are_refused_by_name() {
    let relationship = |field: &str, value: serde_json::Value| {
        let mut r = json!({"trigger": "a.b.c", "action": "d.e.f"});
        r[field] = value;
        json!({"name": "c", "relationships": [{"trigger": "x.y.z", "action": "d.e.f"}, r]})
    };
    for (field, value, reason) in [
        ("timeout_ms", json!(4_294_967_296_u64), "invalid value: integer `4294967296`, expected u32"),
        ("max_attempts", json!(-1), "invalid value: integer `-1`, expected u32"),
        ("priority", json!(1.5), "invalid type: floating point `1.5`, expected u32"),
        ("priority", json!(10_000_000_000_u64), "invalid value: integer `10000000000`, expected u32"),
        ("delay_ms", json!(-5), "invalid value: integer `-5`, expected u64"),
        ("delay_ms", json!(1e20), "invalid type: floating point"),
    ] {
        let d = detail(parse(&relationship(field, value)));
        assert!(d.starts_with(&format!("relationships[1].{field}: {reason}")), "{field}: {d}");
    }
    let d = detail(ChainBody::parse(br#"{"name":"c","relationships":[],"max_depth":99999999999999999999}"#));
    assert!(d.starts_with("max_depth: invalid type: floating point"), "{d}");
    let d = detail(parse(&json!({"name": "c", "relationships": [], "max_depth": 4_294_967_296_u64})));
    assert!(d.starts_with("max_depth: invalid value: integer `4294967296`, expected u32"), "{d}");
}

#[test]
fn rules_deeper_than_protobuf_carries_are_refused_by_name() {
    let nest = |depth: usize| {
        let mut value = json!(1);
        for _ in 0..depth {
            value = json!({"all": value});
        }
        value
    };
    let body = |conditions: serde_json::Value| json!({"name": "c", "relationships": [{"trigger": "a.b.c", "action": "d.e.f", "conditions": conditions}]});
    parse(&body(nest(32))).expect("32 levels are carried");
    let d = detail(parse(&body(nest(33))));
    assert!(d.starts_with("relationships[0].conditions: nested 33 levels deep"), "{d}");
    let deep =
        json!({"name": "c", "relationships": [{"trigger": "a.b.c", "action": "d.e.f", "transformation": nest(40)}]});
    assert!(detail(parse(&deep)).starts_with("relationships[0].transformation: nested 40 levels deep"));
}

#[test]
fn non_object_documents_are_refused() {
    assert!(detail(ChainBody::parse(b"{")).starts_with("body: not valid JSON"));
    assert_eq!(detail(ChainBody::parse(b"[]")), "body: must be a JSON object, not an array");
    assert_eq!(detail(ChainBody::from_value(&serde_json::Value::Null)), "body: must be a JSON object, not null");
}

#[test]
fn list_queries_convert_and_check_the_limit() {
    let pairs = |items: &[(&str, &str)]| items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let request = ListChainsQuery::from_pairs(pairs(&[("limit", "1000"), ("page_token", "t")]))
        .expect("parses")
        .into_request()
        .expect("valid");
    assert_eq!((request.page_size, request.page_token.as_str()), (1000, "t"));
    let request = ListChainsQuery::from_pairs(pairs(&[("limit", "")])).expect("parses").into_request().expect("valid");
    assert_eq!(request, v1::ListChainsRequest::default());
    for limit in ["0", "1001", "x", "-1", "4294967296"] {
        let d = detail(ListChainsQuery::from_pairs(pairs(&[("limit", limit)])).expect("parses").into_request());
        assert!(d.starts_with("limit: must be an integer from 1 to 1000"), "{d}");
    }
    assert!(detail(ListChainsQuery::from_pairs(pairs(&[("name", "x")]))).starts_with("name: unknown query parameter"));
    assert_eq!(
        detail(ListChainsQuery::from_pairs(pairs(&[("page_token", "a"), ("page_token", "b")]))),
        "page_token: given more than once"
    );
}
