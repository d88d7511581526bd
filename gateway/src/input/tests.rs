use super::*;

fn detail(result: Result<impl std::fmt::Debug, Problem>) -> String {
    let problem = result.expect_err("must be refused");
    assert_eq!((problem.status, problem.code.as_str()), (400, "INVALID_ARGUMENT"), "{problem}");
    problem.detail
}

#[test]
fn a_full_body_parses_into_the_grpc_request() {
    let body = br#"{"function":"http.request.get","args":{"url":"http://x"},"chain":"c","priority":9,
        "max_attempts":3,"timeout_ms":5000,"delay_ms":10,"idempotency_key":"k","region":"eu"}"#;
    let request = SubmitTask::parse(body).expect("parses").into_request();
    assert_eq!(request.function, "http.request.get");
    assert_eq!(request.args.as_ref().map(legion_proto::value_to_json), Some(serde_json::json!({"url": "http://x"})));
    assert_eq!(request.chain.as_deref(), Some("c"));
    assert_eq!((request.priority, request.max_attempts, request.timeout_ms), (9, Some(3), Some(5000)));
    assert_eq!(request.delay_ms, 10);
    assert_eq!(request.idempotency_key.as_deref(), Some("k"));
    assert_eq!(request.region.as_deref(), Some("eu"));
}

#[test]
fn a_minimal_body_gets_defaults() {
    let request = SubmitTask::parse(br#"{"function":"core.util.noop"}"#).expect("parses").into_request();
    assert_eq!(request.args.as_ref().map(legion_proto::value_to_json), Some(serde_json::json!({})));
    assert_eq!((request.priority, request.max_attempts, request.timeout_ms, request.delay_ms), (0, None, None, 0));
    let request = SubmitTask::parse(br#"{"function":"core.util.noop","args":null,"chain":null}"#)
        .expect("nulls count as absent")
        .into_request();
    assert_eq!(request.args.as_ref().map(legion_proto::value_to_json), Some(serde_json::json!({})));
    assert_eq!(request.chain, None);
}

#[test]
fn a_wrongly_typed_field_is_named_with_the_reason() {
    let d = detail(SubmitTask::parse(br#"{"function":"core.util.echo","priority":"high"}"#));
    assert_eq!(d, r#"priority: invalid type: string "high", expected u32"#);
    let d = detail(SubmitTask::parse(br#"{"function":"core.util.echo","delay_ms":-5}"#));
    assert!(d.starts_with("delay_ms: invalid value: integer `-5`"), "{d}");
    let d = detail(SubmitTask::parse(br#"{"function":7}"#));
    assert!(d.starts_with("function: invalid type: integer `7`"), "{d}");
}

#[test]
fn unknown_fields_are_all_named() {
    let d = detail(SubmitTask::parse(br#"{"function":"a.b.c","prio":1,"retries":2}"#));
    assert!(d.starts_with("prio, retries: unknown fields;"), "{d}");
    assert!(d.contains("max_attempts"), "the accepted fields are listed: {d}");
    let d = detail(SubmitTask::parse(br#"{"function":"a.b.c","prio":1}"#));
    assert!(d.starts_with("prio: unknown field;"), "{d}");
}

#[test]
fn missing_function_is_named() {
    assert_eq!(detail(SubmitTask::parse(br#"{"args":{}}"#)), "function: required");
}

#[test]
fn non_json_and_non_object_bodies_are_refused() {
    let d = detail(SubmitTask::parse(b""));
    assert!(d.starts_with("body: not valid JSON"), "{d}");
    let d = detail(SubmitTask::parse(b"function=x"));
    assert!(d.starts_with("body: not valid JSON"), "{d}");
    let d = detail(SubmitTask::parse(br#"{"function":"a.b.c""#));
    assert!(d.contains("line 1"), "the position is given: {d}");
    assert_eq!(detail(SubmitTask::parse(b"[1]")), "body: must be a JSON object, not an array");
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn list_query_converts_every_parameter() {
    let root = "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e";
    let query = ListTasksQuery::from_pairs(pairs(&[
        ("status", "timed_out"),
        ("function", "core.util.echo"),
        ("chain", "c"),
        ("root_id", root),
        ("limit", "50"),
        ("page_token", "tok"),
    ]))
    .expect("parses");
    let request = query.into_request().expect("valid");
    assert_eq!(request.status, Some(v1::TaskStatus::TimedOut as i32));
    assert_eq!(request.function.as_deref(), Some("core.util.echo"));
    assert_eq!(request.chain.as_deref(), Some("c"));
    assert_eq!(request.root_id.as_deref(), Some(root));
    assert_eq!((request.page_size, request.page_token.as_str()), (50, "tok"));
}

#[test]
fn empty_query_values_count_as_absent() {
    let request = ListTasksQuery::from_pairs(pairs(&[("status", ""), ("function", ""), ("limit", "")]))
        .expect("parses")
        .into_request()
        .expect("valid");
    assert_eq!(request, v1::ListTasksRequest::default());
}

#[test]
fn bad_list_parameters_are_named() {
    let d = detail(ListTasksQuery::from_pairs(pairs(&[("status", "done")])).expect("parses").into_request());
    assert!(d.starts_with(r#"status: unknown task status "done"; expected one of pending,"#), "{d}");
    for limit in ["0", "1001", "ten", "-1"] {
        let d = detail(ListTasksQuery::from_pairs(pairs(&[("limit", limit)])).expect("parses").into_request());
        assert!(d.starts_with("limit: must be an integer from 1 to 1000"), "{d}");
    }
    let d = detail(ListTasksQuery::from_pairs(pairs(&[("root_id", "x")])).expect("parses").into_request());
    assert!(d.starts_with("root_id: must be a UUID"), "{d}");
    let d = detail(ListTasksQuery::from_pairs(pairs(&[("sort", "asc")])));
    assert!(d.starts_with("sort: unknown query parameter"), "{d}");
    let d = detail(ListTasksQuery::from_pairs(pairs(&[("limit", "1"), ("limit", "2")])));
    assert_eq!(d, "limit: given more than once");
}

#[test]
fn uuids_are_checked_and_canonicalized() {
    assert_eq!(
        parse_uuid("id", "0190F5C8-7E4A-7B3C-9D2E-1F0A2B3C4D5E").expect("valid"),
        "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5e"
    );
    for bad in ["", "42", "0190f5c87e4a7b3c9d2e1f0a2b3c4d5e", "0190f5c8-7e4a-7b3c-9d2e-1f0a2b3c4d5", "urn:uuid:x"] {
        assert!(detail(parse_uuid("id", bad)).starts_with("id: must be a UUID"), "{bad}");
    }
}

#[test]
fn json_content_types_are_recognized() {
    for ok in
        ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
    {
        assert!(is_json_content_type(Some(ok)), "{ok}");
    }
    for bad in
        [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/jsonx"), Some("")]
    {
        assert!(!is_json_content_type(bad), "{bad:?}");
    }
}

#[test]
fn args_deeper_than_protobuf_carries_are_refused_by_name() {
    let nest = |depth: usize| format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let ok = format!(r#"{{"function":"core.util.echo","args":{}}}"#, nest(32));
    SubmitTask::parse(ok.as_bytes()).expect("32 levels are carried");
    let deep = format!(r#"{{"function":"core.util.echo","args":{}}}"#, nest(33));
    let detail = detail(SubmitTask::parse(deep.as_bytes()));
    assert!(detail.starts_with("args: nested 33 levels deep"), "{detail}");
}

#[test]
fn security_bodies_parse_into_their_requests() {
    let request = CreateApiKey::parse(br#"{"name":"ci","policies":["ops","dev"]}"#).expect("parses").into_request();
    assert_eq!((request.name.as_str(), request.policies.len(), request.ttl_s), ("ci", 2, 0));
    let request = IssueToken::parse(br#"{"api_key":"lgn_x"}"#).expect("parses");
    assert!(!format!("{request:?}").contains("lgn_x"), "the key is never shown");
    let request = CapabilitiesBody::parse(br#"{"paths":["audit"]}"#).expect("parses").into_request();
    assert_eq!((request.paths.len(), request.policies.len()), (1, 0));
    let body = PolicyBody::parse(br#"{"rules":[{"path":"tasks/*","capabilities":["read"]}]}"#).expect("parses");
    let request = body.clone().into_request("ops".into()).expect("named by the path");
    assert_eq!((request.name.as_str(), request.rules[0].path.as_str()), ("ops", "tasks/*"));
    let named = PolicyBody { name: Some("ops".into()), ..body };
    assert!(named.clone().into_request("ops".into()).is_ok());
    assert!(detail(named.into_request("dev".into())).starts_with(r#"name: "ops" does not match"#));
}

#[test]
fn a_key_of_the_wrong_type_is_named_without_echoing_it() {
    let d = detail(IssueToken::parse(br#"{"api_key":["lgn_secret"]}"#));
    assert!(d.starts_with("api_key: invalid type: sequence"), "{d}");
    assert!(!d.contains("lgn_secret"), "{d}");
}

#[test]
fn audit_queries_convert_every_parameter() {
    let query = ListAuditQuery::from_pairs(pairs(&[
        ("principal", "api-key/1"),
        ("action", "authorize"),
        ("decision", "deny"),
        ("resource_prefix", "tasks/"),
        ("since", "2026-01-01T00:00:00Z"),
        ("until", "2026-01-01T01:00:00+01:00"),
        ("limit", "1000"),
        ("page_token", "t"),
    ]))
    .expect("parses");
    let request = query.into_request().expect("valid");
    assert_eq!((request.principal.as_str(), request.decision.as_str(), request.limit), ("api-key/1", "deny", 1000));
    assert_eq!(request.since, request.until, "offsets are honoured");
    assert_eq!(request.since.map(|t| t.seconds), Some(1_767_225_600));
    let empty = ListAuditQuery::from_pairs(pairs(&[("decision", ""), ("limit", "")])).expect("parses");
    assert_eq!(empty.into_request().expect("valid"), v1::ListAuditRequest::default());
    let keys = ListApiKeysQuery::from_pairs(pairs(&[("include_revoked", "true")])).expect("parses");
    assert!(keys.into_request().expect("valid").include_revoked);
}

#[test]
fn config_patches_must_be_objects() {
    let patch = config_patch(br#"{"max_attempts":5,"gone":null}"#).expect("parses");
    assert_eq!(patch.fields.len(), 2);
    assert_eq!(legion_proto::value_to_json(&patch.fields["gone"]), serde_json::Value::Null);
    for body in [&b"[]"[..], b"null", b"\"x\""] {
        assert!(detail(config_patch(body)).starts_with("body: must be a JSON object"));
    }
    let deep = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
    assert!(detail(config_patch(deep.as_bytes())).starts_with("body: nested 40 levels deep"));
}

#[test]
fn a_retry_policy_is_sent_and_its_unknown_members_are_named() {
    let body = br#"{"function":"core.util.fail","retry":{"initial_backoff_ms":100,"multiplier":1.5,
        "max_backoff_ms":2000,"jitter":0.1}}"#;
    let request = SubmitTask::parse(body).expect("parses").into_request();
    assert_eq!(
        request.retry,
        Some(v1::RetryPolicy {
            initial_backoff_ms: Some(100),
            multiplier: Some(1.5),
            max_backoff_ms: Some(2000),
            jitter: Some(0.1),
        })
    );
    let partial = SubmitTask::parse(br#"{"function":"a.b.c","retry":{"jitter":null,"multiplier":3}}"#);
    let request = partial.expect("absent and null members are left to the settings").into_request();
    assert_eq!(request.retry, Some(v1::RetryPolicy { multiplier: Some(3.0), ..v1::RetryPolicy::default() }));
    assert_eq!(SubmitTask::parse(br#"{"function":"a.b.c"}"#).expect("parses").into_request().retry, None);
    let d = detail(SubmitTask::parse(br#"{"function":"a.b.c","retry":{"backoff":5}}"#));
    assert!(d.starts_with("retry"), "{d}");
    assert!(d.contains("unknown field `backoff`"), "{d}");
    let d = detail(SubmitTask::parse(br#"{"function":"a.b.c","retry":{"initial_backoff_ms":-1}}"#));
    assert!(d.starts_with("retry.initial_backoff_ms: invalid value"), "{d}");
    let d = detail(SubmitTask::parse(br#"{"function":"a.b.c","retry":5}"#));
    assert!(d.starts_with("retry: invalid type"), "{d}");
}
