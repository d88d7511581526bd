//! Chains through the whole control plane (`run_with`) against real PostgreSQL and RabbitMQ, with the
//! executor protocol driven by hand: relationships fire in the transaction of the parent's completion,
//! exactly once, with conditions, transformations (in the sandbox processes), skips and failures
//! recorded on the child, runs pinned to their chain version, and the chain API's validation and
//! authorization.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use legion_proto::v1;
use legion_proto::v1::chain_service_client::ChainServiceClient;
use legion_proto::{json_to_value, value_to_json};
use serde_json::{Value, json};
use support::eventually;
use support::stack::{Credential, Stack, core_manifest};
use tonic::Code;

fn relationship(trigger: &str, action: &str) -> v1::Relationship {
    v1::Relationship { trigger: trigger.into(), action: action.into(), ..v1::Relationship::default() }
}

fn chain(name: &str, relationships: Vec<v1::Relationship>) -> v1::Chain {
    v1::Chain { name: name.into(), relationships, ..v1::Chain::default() }
}

async fn chains(stack: &Stack) -> ChainServiceClient<support::stack::AuthChannel> {
    ChainServiceClient::new(stack.admin_channel().await)
}

async fn apply(stack: &Stack, chain: v1::Chain) -> Result<v1::ApplyChainResponse, tonic::Status> {
    chains(stack).await.apply_chain(v1::ApplyChainRequest { chain: Some(chain) }).await.map(tonic::Response::into_inner)
}

async fn submit(stack: &Stack, function: &str, args: Value, chain: Option<&str>) -> Result<v1::Task, tonic::Status> {
    let request = v1::SubmitTaskRequest {
        function: function.into(),
        args: Some(json_to_value(&args)),
        chain: chain.map(str::to_owned),
        ..v1::SubmitTaskRequest::default()
    };
    let response = stack.tasks().await.submit_task(request).await?.into_inner();
    Ok(response.task.unwrap())
}

async fn get(stack: &Stack, id: &str) -> v1::Task {
    stack.tasks().await.get_task(v1::GetTaskRequest { id: id.into() }).await.expect("get").into_inner()
}

async fn run_tree(stack: &Stack, root: &str) -> Vec<v1::Task> {
    let request =
        v1::ListTasksRequest { root_id: Some(root.into()), page_size: 1000, ..v1::ListTasksRequest::default() };
    let mut tasks = stack.tasks().await.list_tasks(request).await.expect("list").into_inner().tasks;
    tasks.reverse();
    tasks
}

/// Starts dispatch 1 of `task` as the test executor, then completes it with `result`; returns whether
/// the completion was accepted.
async fn run(stack: &Stack, task: &str, result: &Value) -> bool {
    support::tasks::run_queued(stack, task, result).await
}

async fn complete(stack: &Stack, task: &str, attempt: u32, result: &Value) -> bool {
    let acks = stack
        .executor()
        .await
        .complete_task(v1::CompleteTaskRequest {
            items: vec![v1::Completion {
                task_id: task.into(),
                attempt,
                outcome: Some(v1::completion::Outcome::ResultJson(serde_json::to_vec(result).unwrap())),
                duration_ms: 3,
            }],
        })
        .await
        .expect("complete")
        .into_inner();
    acks.acks[0].accepted
}

async fn registered(stack: &Stack) {
    let manifest = core_manifest(&["echo", "noop", "fail", "sleep"]);
    stack.executor().await.register_node(manifest).await.expect("register");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationships_fire_once_with_conditions_and_transformations() {
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let mut big = relationship("core.util.echo", "core.util.noop");
    big.conditions =
        Some(json_to_value(&json!({"all": [{"fact": "results.n", "operator": "greater_than", "value": 3}]})));
    big.transformation = Some(json_to_value(&json!({"engine": "jq", "expr": "{m: (.results.n * 2), from: .task.id}"})));
    let mut small = relationship("core.util.echo", "core.util.fail");
    small.conditions = Some(json_to_value(&json!({"fact": "results.n", "operator": "less_than", "value": 3})));
    let mut templated = relationship("core.util.echo", "core.util.sleep");
    templated.transformation = Some(json_to_value(
        &json!({"engine": "jinja", "template": "{\"ms\": {{ results.n }}, \"url\": {{ args.url | tojson }}}"}),
    ));
    let mut broken = relationship("core.util.echo", "core.util.noop");
    broken.transformation = Some(json_to_value(&json!({"engine": "jq", "expr": ".results.n | error(\"boom\")"})));
    let applied = apply(&stack, chain("pipeline", vec![big, small, templated, broken])).await.expect("apply");
    assert!(applied.created && applied.changed);

    let root =
        submit(&stack, "core.util.echo", json!({"url": "http://x.test/"}), Some("pipeline")).await.expect("submit");
    assert_eq!(root.chain.as_deref(), Some("pipeline"));
    assert_eq!(root.root_id.as_deref(), Some(root.id.as_str()), "a chain's root is its own root");
    assert_eq!(root.chain_version, Some(applied.chain.as_ref().unwrap().version));

    assert!(run(&stack, &root.id, &json!({"n": 5})).await);
    // A second completion (a retried CompleteTask) is stale and fires nothing more.
    assert!(!complete(&stack, &root.id, 1, &json!({"n": 5})).await);

    let tree = run_tree(&stack, &root.id).await;
    assert_eq!(tree.len(), 5, "root and one child per relationship: {tree:#?}");
    let children: Vec<&v1::Task> = tree.iter().filter(|t| t.id != root.id).collect();
    for child in &children {
        assert_eq!(child.parent_id.as_deref(), Some(root.id.as_str()));
        assert_eq!(child.root_id.as_deref(), Some(root.id.as_str()));
        assert_eq!(child.chain.as_deref(), Some("pipeline"));
        assert_eq!(child.depth, 1);
        assert!(child.relationship_id.is_some());
    }
    let by_function = |f: &str| children.iter().filter(|t| t.function == f).copied().collect::<Vec<_>>();
    let noops = by_function("core.util.noop");
    assert_eq!(noops.len(), 2);
    let doubled = noops.iter().find(|t| t.status() != v1::TaskStatus::Failed).expect("the jq child");
    assert_eq!(value_to_json(doubled.args.as_ref().unwrap()), json!({"m": 10, "from": root.id}));
    let failed = noops.iter().find(|t| t.status() == v1::TaskStatus::Failed).expect("the failing transformation");
    assert!(failed.error.as_deref().unwrap().starts_with("transformation failed: "), "{failed:?}");
    assert!(failed.error.as_deref().unwrap().contains("boom"), "{failed:?}");
    let skipped = by_function("core.util.fail");
    assert_eq!(skipped[0].status(), v1::TaskStatus::Skipped);
    assert!(skipped[0].error.as_deref().unwrap().starts_with("conditions not met: "), "{:?}", skipped[0]);
    let sleep = by_function("core.util.sleep");
    assert_eq!(value_to_json(sleep[0].args.as_ref().unwrap()), json!({"ms": 5, "url": "http://x.test/"}));
    // The parent is untouched by its children's failures.
    assert_eq!(get(&stack, &root.id).await.status(), v1::TaskStatus::Succeeded);

    // The runnable children were dispatched; the skipped and failed ones ended at once.
    eventually("the runnable children to be queued", Duration::from_secs(10), || async {
        let tree = run_tree(&stack, &root.id).await;
        let queued = tree.iter().filter(|t| t.status() == v1::TaskStatus::Queued).count();
        (queued == 2).then_some(())
    })
    .await;
    // Exactly one child per (parent, relationship): the database holds no repeat.
    let pool = stack.pool().await;
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks WHERE parent_id = $1::uuid")
        .bind(&root.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 4);
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_pinned_to_their_version_and_deleted_chains_stop() {
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let first = apply(&stack, chain("pinned", vec![relationship("core.util.echo", "core.util.noop")])).await.unwrap();
    let version = first.chain.unwrap().version;
    // Applying the same document again changes nothing.
    let again = apply(&stack, chain("pinned", vec![relationship("core.util.echo", "core.util.noop")])).await.unwrap();
    assert!(!again.created && !again.changed);
    assert_eq!(again.chain.unwrap().version, version);

    let old_run = submit(&stack, "core.util.echo", json!({}), Some("pinned")).await.unwrap();
    let changed = apply(&stack, chain("pinned", vec![relationship("core.util.echo", "core.util.fail")])).await.unwrap();
    assert!(changed.changed && !changed.created);
    assert!(changed.chain.unwrap().version > version);
    let new_run = submit(&stack, "core.util.echo", json!({}), Some("pinned")).await.unwrap();

    assert!(run(&stack, &old_run.id, &json!({"a": 1})).await);
    assert!(run(&stack, &new_run.id, &json!({"a": 1})).await);
    let old_child = run_tree(&stack, &old_run.id).await;
    assert_eq!(old_child[1].function, "core.util.noop", "the run started before the change keeps its version");
    assert_eq!(value_to_json(old_child[1].args.as_ref().unwrap()), json!({"a": 1}), "the result is passed on");
    let new_child = run_tree(&stack, &new_run.id).await;
    assert_eq!(new_child[1].function, "core.util.fail");

    // A run whose chain is deleted creates nothing more.
    let orphan = submit(&stack, "core.util.echo", json!({}), Some("pinned")).await.unwrap();
    chains(&stack).await.delete_chain(v1::DeleteChainRequest { name: "pinned".into() }).await.expect("delete");
    assert!(run(&stack, &orphan.id, &json!({})).await);
    assert_eq!(run_tree(&stack, &orphan.id).await.len(), 1);
    let gone = chains(&stack).await.get_chain(v1::GetChainRequest { name: "pinned".into() }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_api_validates_authorizes_and_audits() {
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let mut bad_operator = relationship("core.util.echo", "core.util.noop");
    bad_operator.conditions =
        Some(json_to_value(&json!({"all": [{"fact": "results.status", "operator": "equals", "value": 200}]})));
    let cases = [
        (
            chain("x", vec![relationship("core.util.echo", "core.util.nope")]),
            "relationships[0].action: unknown function",
        ),
        (
            chain("x", vec![relationship("core.util.echo", "core.util.noop"), bad_operator]),
            "relationships[1].conditions.all[0].operator: unknown operator",
        ),
        (chain("x", vec![relationship("core.util.echo", "core.util.echo")]), "relationships[0].action: closes a cycle"),
        (chain("Bad Name", vec![relationship("core.util.echo", "core.util.noop")]), "name: "),
    ];
    for (document, prefix) in cases {
        let status = apply(&stack, document).await.expect_err(prefix);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(prefix), "{:?} should start with {prefix:?}", status.message());
    }
    let mut capped = chain("loop", vec![relationship("core.util.echo", "core.util.echo")]);
    capped.max_depth = Some(3);
    apply(&stack, capped).await.expect("a capped loop is accepted");

    // Submits: an unknown chain, and a function that triggers nothing in it.
    let unknown = submit(&stack, "core.util.echo", json!({}), Some("missing")).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (Code::InvalidArgument, "chain: unknown chain \"missing\""));
    let idle = submit(&stack, "core.util.noop", json!({}), Some("loop")).await.unwrap_err();
    assert!(idle.message().starts_with("chain: no active relationship"), "{idle:?}");

    // A loop runs to its cap: depth 3 is the last created, depth 4 is skipped with the reason.
    let root = submit(&stack, "core.util.echo", json!({"i": 0}), Some("loop")).await.unwrap();
    let mut current = root.id.clone();
    for depth in 1..=3 {
        assert!(run(&stack, &current, &json!({"i": depth})).await);
        let tree = run_tree(&stack, &root.id).await;
        let child = tree.iter().find(|t| t.parent_id.as_deref() == Some(current.as_str())).expect("child").clone();
        assert_eq!(child.depth, depth);
        current = child.id;
    }
    assert!(run(&stack, &current, &json!({})).await);
    let tree = run_tree(&stack, &root.id).await;
    let last = tree.iter().find(|t| t.parent_id.as_deref() == Some(current.as_str())).expect("capped child");
    assert_eq!((last.status(), last.depth), (v1::TaskStatus::Skipped, 4));
    assert!(last.error.as_deref().unwrap().contains("exceeds the run's depth cap 3"), "{last:?}");

    // A key that may apply chains but not run core.util.noop cannot make a chain run it.
    let mut policies = legion_proto::v1::policy_service_client::PolicyServiceClient::new(stack.admin_channel().await);
    let rule = |path: &str, capabilities: &[&str]| v1::PolicyRule {
        path: path.into(),
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
    };
    let rules = vec![
        rule("chains/*", &["create", "read", "update", "execute"]),
        rule("runners/core/util/echo", &["execute"]),
        rule("tasks/*", &["create", "read", "list"]),
    ];
    policies.put_policy(v1::PutPolicyRequest { name: "chain-author".into(), rules }).await.expect("policy");
    let mut auth = legion_proto::v1::auth_service_client::AuthServiceClient::new(stack.admin_channel().await);
    let key = auth
        .create_api_key(v1::CreateApiKeyRequest {
            name: "author".into(),
            policies: vec!["chain-author".into()],
            ttl_s: 0,
        })
        .await
        .expect("key")
        .into_inner()
        .key;
    let mut limited = ChainServiceClient::new(stack.channel_as(Credential::api_key(&key).unwrap()).await);
    let denied = limited
        .apply_chain(v1::ApplyChainRequest {
            chain: Some(chain("sneaky", vec![relationship("core.util.echo", "core.util.noop")])),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    limited
        .apply_chain(v1::ApplyChainRequest {
            chain: Some(chain(
                "echoes",
                vec![relationship("core.util.echo", "core.util.echo")]
                    .into_iter()
                    .map(|mut r| {
                        r.active = Some(false);
                        r
                    })
                    .collect(),
            )),
        })
        .await
        .expect("a chain of functions the author may run");
    // Nor start a run of a chain whose actions it may not run.
    let mut tasks = legion_proto::v1::task_service_client::TaskServiceClient::new(
        stack.channel_as(Credential::api_key(&key).unwrap()).await,
    );
    apply(&stack, chain("admins-only", vec![relationship("core.util.echo", "core.util.noop")])).await.unwrap();
    let refused = tasks
        .submit_task(v1::SubmitTaskRequest {
            function: "core.util.echo".into(),
            chain: Some("admins-only".into()),
            ..v1::SubmitTaskRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Changes are in the audit trail.
    let pool = stack.pool().await;
    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT action, resource FROM audit_log WHERE action LIKE 'chain.%' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(actions.contains(&("chain.apply".into(), "chains/loop".into())), "{actions:?}");
    assert!(actions.contains(&("chain.apply".into(), "chains/echoes".into())), "{actions:?}");
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_numbers_survive_the_database() {
    // A jq 1/0 gives the largest double; PostgreSQL stores it as a 309-digit numeric, which must read
    // back (it used to make every read of the task, and every completion batch holding it, fail).
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let mut rel = relationship("core.util.echo", "core.util.noop");
    rel.transformation =
        Some(json_to_value(&json!({"engine": "jq", "expr": "{a: (1/0), b: -1.7976931348623157e308, c: 5e-324}"})));
    apply(&stack, chain("extremes", vec![rel])).await.expect("apply");
    let root =
        submit(&stack, "core.util.echo", json!({"n": 1.797_693_134_862_315_7e308}), Some("extremes")).await.unwrap();
    assert!(run(&stack, &root.id, &json!({"n": 1.797_693_134_862_315_7e308})).await);
    let tree = run_tree(&stack, &root.id).await;
    assert_eq!(tree.len(), 2, "{tree:#?}");
    assert_eq!(value_to_json(tree[0].args.as_ref().unwrap()), json!({"n": f64::MAX}));
    assert_eq!(value_to_json(tree[1].args.as_ref().unwrap()), json!({"a": f64::MAX, "b": -f64::MAX, "c": 5e-324}));
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_budgets_and_caps_bound_what_one_submit_costs() {
    let stack = Stack::start(true, |s| {
        s.limits.max_run_tasks = 6;
        // Two workers, 300 ms each: five slow evaluations need 900 ms, more than the budget.
        s.control_plane.transform_timeout_ms = 300;
        s.control_plane.transform_budget_ms = 700;
    })
    .await;
    registered(&stack).await;
    // Fan-out 3 per level: the root and 3 children fit (4), the next level's first group of 3 does not.
    let mut spread = relationship("core.util.echo", "core.util.echo");
    spread.transformation = Some(json_to_value(&json!({"engine": "static", "value": [{"i": 1}, {"i": 2}, {"i": 3}]})));
    let mut capped = chain("spread", vec![spread]);
    capped.max_depth = Some(5);
    apply(&stack, capped).await.expect("apply");
    let root = submit(&stack, "core.util.echo", json!({}), Some("spread")).await.unwrap();
    assert!(run(&stack, &root.id, &json!({})).await);
    let children: Vec<v1::Task> = run_tree(&stack, &root.id).await.into_iter().filter(|t| t.depth == 1).collect();
    assert_eq!(children.len(), 3);
    assert!(run(&stack, &children[0].id, &json!({})).await);
    let tree = run_tree(&stack, &root.id).await;
    let grandchildren: Vec<&v1::Task> = tree.iter().filter(|t| t.depth == 2).collect();
    assert_eq!(grandchildren.len(), 1, "{tree:#?}");
    assert_eq!(grandchildren[0].status(), v1::TaskStatus::Failed);
    assert_eq!(
        grandchildren[0].error.as_deref(),
        Some("the run has 4 tasks; 3 more would pass limits.max_run_tasks (6)")
    );

    // Slow transformations: each is stopped by its timeout, all of them by the completion's budget;
    // the completion returns and the parent succeeds.
    let slow: Vec<v1::Relationship> = (0..5)
        .map(|_| {
            let mut r = relationship("core.util.noop", "core.util.sleep");
            r.transformation = Some(json_to_value(&json!({"engine": "jq", "expr": "last(repeat(1))"})));
            r
        })
        .collect();
    apply(&stack, chain("slow", slow)).await.expect("apply");
    let root = submit(&stack, "core.util.noop", json!({}), Some("slow")).await.unwrap();
    let started = std::time::Instant::now();
    assert!(run(&stack, &root.id, &json!({})).await);
    assert!(started.elapsed() < Duration::from_secs(10), "the completion took {:?}", started.elapsed());
    let tree = run_tree(&stack, &root.id).await;
    assert_eq!(tree.len(), 6);
    assert_eq!(tree[0].status(), v1::TaskStatus::Succeeded);
    for child in &tree[1..] {
        assert_eq!(child.status(), v1::TaskStatus::Failed, "{child:?}");
        let error = child.error.as_deref().unwrap();
        assert!(
            error.contains("control_plane.transform_timeout_ms") || error.contains("control_plane.transform_budget_ms"),
            "{error}"
        );
    }
    assert!(tree[1..].iter().any(|t| t.error.as_deref().unwrap().contains("transform_budget_ms")), "{tree:#?}");
    stack.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_chain_applies_after_a_limit_is_lowered() {
    let stack = Stack::start(true, |_| {}).await;
    registered(&stack).await;
    let three = chain(
        "three",
        vec![
            relationship("core.util.echo", "core.util.noop"),
            relationship("core.util.echo", "core.util.sleep"),
            relationship("core.util.echo", "core.util.fail"),
        ],
    );
    let first = apply(&stack, three.clone()).await.expect("apply");
    let mut config = legion_proto::v1::config_service_client::ConfigServiceClient::new(stack.admin_channel().await);
    let Some(prost_types::value::Kind::StructValue(patch)) = json_to_value(&json!({"max_relationships": 2})).kind
    else {
        panic!("an object is a struct")
    };
    config
        .update_config(v1::UpdateConfigRequest { section: "limits".into(), patch: Some(patch) })
        .await
        .expect("lower the limit");
    // The same document is unchanged (a CI job that re-applies its files keeps passing)…
    let again = apply(&stack, three.clone()).await.expect("unchanged");
    assert!(!again.changed && !again.created);
    assert_eq!(again.chain.unwrap().version, first.chain.unwrap().version);
    // …while a change must fit the new limit.
    let mut changed = three;
    changed.description = "edited".into();
    let refused = apply(&stack, changed).await.unwrap_err();
    assert!(refused.message().starts_with("relationships: must hold 1 to 2"), "{refused:?}");
    stack.stop().await.expect("clean stop");
}
