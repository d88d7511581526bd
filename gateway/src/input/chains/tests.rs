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
    let d = detail(parse(&json!({"name": "c", "relationships": [], "version": 3, "owner": "x", "etag": 1})));
    assert_eq!(
        d,
        "etag, owner: unknown fields; accepted fields are name, description, max_depth, relationships, and the \
         output-only version, created_at, updated_at, updated_by (ignored)"
    );
    let d = detail(parse(&json!({"name": "c", "relationships": [
        {"trigger": "a.b.c", "action": "d.e.f"},
        {"trigger": "a.b.c", "action": "d.e.f", "id": "x", "when": {}, "version": 1}
    ]})));
    assert_eq!(
        d,
        "relationships[1].version, relationships[1].when: unknown fields; accepted fields are trigger, action, \
         conditions, transformation, delay_ms, active, priority, max_attempts, timeout_ms, retry, and the \
         output-only id (ignored)"
    );
    let d =
        detail(parse(&json!({"name": "c", "relationships": [{"trigger": "a.b.c", "action": "d.e.f", "delay": 5}]})));
    assert!(d.starts_with("relationships[0].delay: unknown field;"), "{d}");
    // The output-only members belong to their level only.
    let d = detail(parse(&json!({"name": "c", "id": "x", "relationships": []})));
    assert!(d.starts_with("id: unknown field;"), "{d}");
}

/// Regression: `legion chain show X > f.json && legion chain apply f.json` failed with
/// `created_at, updated_at, updated_by, version: unknown fields`.
#[test]
fn output_only_members_are_accepted_whatever_their_value_and_not_sent() {
    let plain = json!({"name": "c", "max_depth": 2, "relationships": [{"trigger": "a.b.c", "action": "d.e.f"}]});
    let expected = parse(&plain).expect("parses");
    for (version, at, by, id) in [
        (json!(7), json!("2026-01-01T00:00:00Z"), json!("api-key/k1"), json!("0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e")),
        (json!(null), json!(null), json!(null), json!(null)),
        (json!("x"), json!(5), json!({"a": [1]}), json!([true])),
    ] {
        let mut exported = plain.clone();
        exported["version"] = version;
        exported["created_at"] = at.clone();
        exported["updated_at"] = at;
        exported["updated_by"] = by;
        exported["relationships"][0]["id"] = id;
        let body = parse(&exported).expect("output-only members are ignored");
        assert_eq!(body, expected, "{exported}");
        assert_eq!(body.into_request(), expected.clone().into_request(), "{exported}");
    }
    let chain = parse(&json!({"name": "c", "version": 9, "updated_by": "jwt/x", "relationships": [
        {"id": "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e", "trigger": "a.b.c", "action": "d.e.f"}
    ]}))
    .expect("parses")
    .into_request()
    .chain
    .expect("chain");
    assert_eq!((chain.version, chain.updated_by.as_str(), chain.relationships[0].id.as_str()), (0, "", ""), "not sent");
    // The required members stay required, and the others keep their types.
    assert_eq!(detail(parse(&json!({"version": 1, "relationships": []}))), "name: required");
    let d = detail(parse(&json!({"name": "c", "version": 1, "relationships": [{"id": "x", "action": "d.e.f"}]})));
    assert_eq!(d, "relationships[0]: missing field `trigger`");
}

/// What the control plane makes of a request: ids, version, times and author assigned.
fn stored(request: v1::ApplyChainRequest) -> v1::Chain {
    let mut chain = request.chain.expect("chain");
    for (i, r) in chain.relationships.iter_mut().enumerate() {
        r.id = format!("0190f5c8-7e4a-7b3c-9d2e-00000000000{i}");
    }
    chain.version = 3;
    chain.created_at = Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 });
    chain.updated_at = Some(prost_types::Timestamp { seconds: 1_767_225_660, nanos: 500_000_000 });
    chain.updated_by = "api-key/k1".into();
    chain
}

/// The JSON of the chain view (`GET /api/v1/chains/{name}`, `legion chain show`) parses back into the
/// body that defined the chain, and so into the same request.
#[test]
fn the_view_of_a_chain_parses_back_into_its_body() {
    let full = json!({
        "name": "nightly",
        "description": "reports",
        "max_depth": 5,
        "relationships": [
            {
                "trigger": "http.request.get",
                "action": "log.entry.write",
                "conditions": {"all": [{"fact": "results.status", "operator": "equal", "value": 200}]},
                "transformation": {"engine": "jq", "expr": "{message: .results.body}"},
                "delay_ms": 250,
                "active": false,
                "priority": 9,
                "max_attempts": 3,
                "timeout_ms": 5000
            },
            {
                "trigger": "log.entry.write",
                "action": "core.util.noop",
                "conditions": null,
                "transformation": null,
                "delay_ms": 0,
                "active": null,
                "priority": null,
                "max_attempts": null,
                "timeout_ms": null
            }
        ]
    });
    let minimal = json!({"name": "c", "relationships": [{"trigger": "a.b.c", "action": "d.e.f"}]});
    for original in [full, minimal] {
        let body = parse(&original).expect("parses");
        let view = crate::view::Chain::from(&stored(body.clone().into_request()));
        let exported = serde_json::to_string_pretty(&view).expect("serializes");
        for member in ["\"version\"", "\"created_at\"", "\"updated_at\"", "\"updated_by\"", "\"id\""] {
            assert!(exported.contains(member), "{exported}");
        }
        let again = ChainBody::parse(exported.as_bytes()).expect("the view applies again");
        assert_eq!(again.clone().into_request(), body.clone().into_request(), "{exported}");
        if original["name"] == "nightly" {
            assert_eq!(again, body, "every member given: the very same body");
        }
    }
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

#[test]
fn a_relationship_carries_its_retry_policy_and_an_exported_chain_applies_again() {
    let chain = parse(&json!({"name": "c", "relationships": [
        {"trigger": "a.b.c", "action": "d.e.f", "retry": {"initial_backoff_ms": 10, "jitter": 0.5}},
        {"trigger": "a.b.c", "action": "d.e.f", "retry": null}
    ]}))
    .expect("parses");
    let request = chain.into_request();
    let relationships = request.chain.expect("chain").relationships;
    assert_eq!(
        relationships[0].retry,
        Some(v1::RetryPolicy { initial_backoff_ms: Some(10), jitter: Some(0.5), ..v1::RetryPolicy::default() })
    );
    assert_eq!(relationships[1].retry, None);
    let d = detail(parse(&json!({"name": "c", "relationships": [
        {"trigger": "a.b.c", "action": "d.e.f", "retry": {"tries": 3}}
    ]})));
    assert!(d.starts_with("relationships[0].retry"), "{d}");
    assert!(d.contains("unknown field `tries`"), "{d}");
}
