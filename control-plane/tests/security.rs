//! Authentication, authorization, audit and settings redaction through the control plane's gRPC API,
//! against real PostgreSQL: each refusal is checked for its exact code, for having changed nothing, and
//! for its audit record.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use legion_proto::v1;
use legion_proto::v1::audit_service_client::AuditServiceClient;
use legion_proto::v1::auth_service_client::AuthServiceClient;
use legion_proto::v1::config_service_client::ConfigServiceClient;
use legion_proto::v1::policy_service_client::PolicyServiceClient;
use legion_proto::v1::task_service_client::TaskServiceClient;
use support::stack::{ADMIN_KEY, AuthChannel, Credential, NODE, Stack, core_manifest};
use tonic::Code;

const CANARY: &str = "canary-secret-5f1d7c2a9b3e4d6f8a0b1c2d3e4f5a6b";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

async fn start() -> Stack {
    let stack = Stack::start(true, |s| {
        s.crypt.jwt.rs_private_key = Some(fixture("jwt-rs256-private.pem"));
        s.crypt.jwt.rs_public_key = Some(fixture("jwt-rs256-public.pem"));
        s.crypt.vault =
            serde_json::json!({"clusters": [{"name": "main", "token": CANARY, "nested": {"secret_id": CANARY}}]});
    })
    .await;
    stack.executor().await.register_node(core_manifest(&["echo", "fail"])).await.expect("register");
    stack
}

fn submit(function: &str) -> v1::SubmitTaskRequest {
    v1::SubmitTaskRequest {
        function: function.into(),
        args: Some(legion_proto::json_to_value(&serde_json::json!({"x": 1}))),
        ..v1::SubmitTaskRequest::default()
    }
}

async fn count(stack: &Stack, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&stack.pool().await).await.expect("count");
    n
}

async fn as_key(stack: &Stack, key: &str) -> AuthChannel {
    stack.channel_as(Credential::api_key(key).expect("key")).await
}

async fn as_token(stack: &Stack, token: &str) -> AuthChannel {
    stack.channel_as(Credential::bearer(token).expect("token")).await
}

async fn put_policy(stack: &Stack, name: &str, rules: &[(&str, &[&str])]) {
    let rules = rules
        .iter()
        .map(|(path, caps)| v1::PolicyRule {
            path: (*path).into(),
            capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        })
        .collect();
    PolicyServiceClient::new(stack.admin_channel().await)
        .put_policy(v1::PutPolicyRequest { name: name.into(), rules })
        .await
        .expect("put policy");
}

async fn create_key(stack: &Stack, name: &str, policies: &[&str], ttl_s: u64) -> (String, String) {
    let created = AuthServiceClient::new(stack.admin_channel().await)
        .create_api_key(v1::CreateApiKeyRequest {
            name: name.into(),
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            ttl_s,
        })
        .await
        .expect("create key")
        .into_inner();
    (created.api_key.expect("key").id, created.key)
}

fn jwt(claims: &serde_json::Value, header: Header, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).expect("encode")
}

fn claims(exp_offset_s: i64) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({"sub": "mallory", "iss": "legion", "aud": "legion", "exp": now + exp_offset_s,
        "policies": ["admin"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_credential_is_refused_and_audited() {
    let stack = start().await;
    put_policy(&stack, "echo", &[("tasks/core/*", &["create", "read"]), ("runners/core/*", &["execute"])]).await;
    let (revoked_id, revoked) = create_key(&stack, "revoked", &["echo"], 0).await;
    AuthServiceClient::new(stack.admin_channel().await)
        .revoke_api_key(v1::RevokeApiKeyRequest { id: revoked_id })
        .await
        .expect("revoke");
    let (_, expiring) = create_key(&stack, "expiring", &["echo"], 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let own = EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256-private.pem")).expect("pem")).expect("key");
    let other =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("jwt-rs256-other-private.pem")).expect("pem")).expect("key");
    let public_pem = std::fs::read(fixture("jwt-rs256-public.pem")).expect("pem");
    let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let rs = Header::new(Algorithm::RS256);
    let good = jwt(&claims(600), rs.clone(), &own);
    let tampered = {
        let (head, rest) = good.split_once('.').expect("jws");
        let (_, signature) = rest.split_once('.').expect("jws");
        let mut body = claims(600);
        body["sub"] = "someone-else".into();
        format!("{head}.{}.{signature}", b64(body))
    };
    let mut wrong_aud = claims(600);
    wrong_aud["aud"] = "other".into();
    let mut wrong_iss = claims(600);
    wrong_iss["iss"] = "other".into();

    let mut channels: Vec<(&str, AuthChannel)> = vec![
        ("no credential", stack.channel_as(Credential::none()).await),
        ("wrong api key", as_key(&stack, "lgn_not-a-key").await),
        ("revoked api key", as_key(&stack, &revoked).await),
        ("expired api key", as_key(&stack, &expiring).await),
        (
            "alg none",
            as_token(&stack, &format!("{}.{}.", b64(serde_json::json!({"alg": "none"})), b64(claims(600)))).await,
        ),
        (
            "hs256 signed with the rs256 public key",
            as_token(
                &stack,
                &jwt(&claims(600), Header::new(Algorithm::HS256), &EncodingKey::from_secret(&public_pem).expect("k")),
            )
            .await,
        ),
        ("another key's signature", as_token(&stack, &jwt(&claims(600), rs.clone(), &other)).await),
        ("tampered payload", as_token(&stack, &tampered).await),
        ("wrong aud", as_token(&stack, &jwt(&wrong_aud, rs.clone(), &own)).await),
        ("wrong iss", as_token(&stack, &jwt(&wrong_iss, rs.clone(), &own)).await),
        ("expired token", as_token(&stack, &jwt(&claims(-120), rs.clone(), &own)).await),
    ];
    let denials_before =
        count(&stack, "SELECT count(*) FROM audit_log WHERE action = 'authenticate' AND decision = 'deny'").await;
    for (what, channel) in &mut channels {
        let refused =
            TaskServiceClient::new(channel.clone()).submit_task(submit("core.util.echo")).await.expect_err(what);
        assert_eq!(refused.code(), Code::Unauthenticated, "{what}: {refused:?}");
    }
    assert_eq!(count(&stack, "SELECT count(*) FROM tasks").await, 0, "nothing was submitted");
    let denials =
        count(&stack, "SELECT count(*) FROM audit_log WHERE action = 'authenticate' AND decision = 'deny'").await;
    assert_eq!(denials - denials_before, i64::try_from(channels.len()).expect("len"), "each denial audited");

    // The well-formed token verifies (it claims admin: tokens are only as good as the key that signs them).
    TaskServiceClient::new(as_token(&stack, &good).await)
        .submit_task(submit("core.util.echo"))
        .await
        .expect("good token");
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_decide_every_call() {
    let stack = start().await;
    put_policy(
        &stack,
        "core",
        &[("tasks/core/*", &["create", "read"]), ("runners/core/*", &["execute"]), ("tasks/core/util/fail", &["deny"])],
    )
    .await;
    let (_, key) = create_key(&stack, "core-user", &["core"], 0).await;
    let mut tasks = TaskServiceClient::new(as_key(&stack, &key).await);
    let task =
        tasks.submit_task(submit("core.util.echo")).await.expect("echo allowed").into_inner().task.expect("task");
    tasks.get_task(v1::GetTaskRequest { id: task.id.clone() }).await.expect("read allowed");

    let before = count(&stack, "SELECT count(*) FROM tasks").await;
    for (function, code) in [
        ("http.request.get", Code::PermissionDenied),
        ("core.util.fail", Code::PermissionDenied),
        ("core/../http.request.get", Code::InvalidArgument),
        ("Core.util.echo", Code::InvalidArgument),
        ("core.util.echo/", Code::InvalidArgument),
        ("core%2eutil.echo", Code::InvalidArgument),
    ] {
        let refused = tasks.submit_task(submit(function)).await.expect_err(function);
        assert_eq!(refused.code(), code, "{function}: {refused:?}");
    }
    assert_eq!(count(&stack, "SELECT count(*) FROM tasks").await, before, "nothing was submitted");
    let refused = tasks.list_tasks(v1::ListTasksRequest::default()).await.expect_err("listing all tasks");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut policies = PolicyServiceClient::new(as_key(&stack, &key).await);
    let refused = policies
        .put_policy(v1::PutPolicyRequest {
            name: "mine".into(),
            rules: vec![v1::PolicyRule { path: "*".into(), capabilities: vec!["sudo".into()] }],
        })
        .await
        .expect_err("policies/*");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = policies.list_policies(v1::ListPoliciesRequest {}).await.expect_err("list policies");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // No escalation through keys: a key may only be bound to the creator's policies.
    put_policy(&stack, "keymaker", &[("api-keys/*", &["create"])]).await;
    let (_, maker) = create_key(&stack, "maker", &["keymaker"], 0).await;
    let refused = AuthServiceClient::new(as_key(&stack, &maker).await)
        .create_api_key(v1::CreateApiKeyRequest { name: "escalate".into(), policies: vec!["admin".into()], ttl_s: 0 })
        .await
        .expect_err("escalation");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The built-in admin policy cannot be changed.
    let refused = PolicyServiceClient::new(stack.admin_channel().await)
        .delete_policy(v1::DeletePolicyRequest { name: "admin".into() })
        .await
        .expect_err("admin is built in");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // A node certificate cannot call user APIs, whatever credential it carries.
    let node = tonic::service::interceptor::InterceptedService::new(
        stack.channel(Some("executor")).await,
        Credential::api_key(ADMIN_KEY).expect("key"),
    );
    let refused = TaskServiceClient::new(node).submit_task(submit("core.util.echo")).await.expect_err("node cert");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // The key exchanged for a token keeps its policies; the capabilities question answers as Vault's.
    let mut auth = AuthServiceClient::new(stack.channel_as(Credential::none()).await);
    let token = auth.issue_token(v1::IssueTokenRequest { api_key: key.clone() }).await.expect("token").into_inner();
    let mut by_token = TaskServiceClient::new(as_token(&stack, &token.token).await);
    by_token.submit_task(submit("core.util.echo")).await.expect("token allows echo");
    assert_eq!(
        by_token.submit_task(submit("http.request.get")).await.expect_err("http").code(),
        Code::PermissionDenied
    );
    let jwks: serde_json::Value =
        serde_json::from_str(&auth.get_jwks(v1::GetJwksRequest {}).await.expect("jwks").into_inner().jwks_json)
            .expect("json");
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    let answer = AuthServiceClient::new(as_key(&stack, &key).await)
        .capabilities(v1::CapabilitiesRequest {
            paths: vec!["tasks/core/util/echo".into(), "tasks/core/util/fail".into(), "policies/x".into()],
            policies: vec![],
        })
        .await
        .expect("capabilities")
        .into_inner()
        .capabilities;
    assert_eq!(answer["tasks/core/util/echo"].capabilities, vec!["create", "read"]);
    assert_eq!(answer["tasks/core/util/fail"].capabilities, vec!["deny"]);
    assert_eq!(answer["policies/x"].capabilities, vec!["deny"]);
    let refused = AuthServiceClient::new(as_key(&stack, &key).await)
        .capabilities(v1::CapabilitiesRequest { paths: vec!["x".into()], policies: vec!["admin".into()] })
        .await
        .expect_err("other policies need sudo on policies/*");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let denied = count(&stack, "SELECT count(*) FROM audit_log WHERE action = 'authorize' AND decision = 'deny'").await;
    assert!(denied >= 8, "denials audited: {denied}");
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_one_audit_row_breaks_verification_at_that_row() {
    let stack = start().await;
    let mut tasks = stack.tasks().await;
    for _ in 0..5 {
        tasks.submit_task(submit("core.util.echo")).await.expect("submit");
    }
    let mut audit = AuditServiceClient::new(stack.admin_channel().await);
    let verified = audit.verify_audit(v1::VerifyAuditRequest {}).await.expect("verify").into_inner();
    assert!(verified.valid, "{verified:?}");
    assert!(verified.checked >= 10, "{verified:?}");
    let pool = stack.pool().await;
    let (target,): (i64,) =
        sqlx::query_as("SELECT id FROM audit_log WHERE action = 'authorize' ORDER BY id LIMIT 1 OFFSET 3")
            .fetch_one(&pool)
            .await
            .expect("row");
    // Truncating the trail or moving its head back is refused by the database itself.
    let refused = sqlx::query("TRUNCATE audit_log").execute(&pool).await.expect_err("truncate");
    assert!(refused.to_string().contains("append-only"), "{refused}");
    let refused = sqlx::query("UPDATE audit_head SET last_id = 1").execute(&pool).await.expect_err("head back");
    assert!(refused.to_string().contains("forward"), "{refused}");
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only").execute(&pool).await.expect("disable");
    sqlx::query("UPDATE audit_log SET decision = 'allow', principal = 'api-key/forged' WHERE id = $1")
        .bind(target)
        .execute(&pool)
        .await
        .expect("tamper");
    let verified = audit.verify_audit(v1::VerifyAuditRequest {}).await.expect("verify").into_inner();
    assert!(!verified.valid);
    assert_eq!(verified.first_broken, Some(target), "{verified:?}");
    let page = audit
        .list_audit(v1::ListAuditRequest { action: "authorize".into(), limit: 3, ..v1::ListAuditRequest::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.records.len(), 3);
    assert!(!page.next_page_token.is_empty());
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_endpoint_shows_no_secret_and_guards_read_only_sections() {
    let stack = start().await;
    let mut config = ConfigServiceClient::new(stack.admin_channel().await);
    let shown = config.get_config(v1::GetConfigRequest {}).await.expect("config").into_inner();
    let json = legion_proto::value_to_json(&prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(shown.settings.expect("settings"))),
    });
    let text = json.to_string();
    assert!(!text.contains(CANARY), "canary leaked: {text}");
    assert!(!text.contains(ADMIN_KEY), "admin key leaked");
    assert!(!text.contains(":guest@"), "broker password leaked");
    assert_eq!(json["crypt"]["vault"]["clusters"][0]["token"], "[REDACTED]");
    assert_eq!(json["crypt"]["vault"]["clusters"][0]["nested"]["secret_id"], "[REDACTED]");
    assert_eq!(json["auth"]["bootstrap_admin_key"], "[REDACTED]");
    assert_eq!(json["crypt"]["jwt"]["rs_private_key"], "[REDACTED]");

    let patch = |v: serde_json::Value| match legion_proto::json_to_value(&v).kind {
        Some(prost_types::value::Kind::StructValue(s)) => Some(s),
        _ => None,
    };
    for section in ["crypt", "tls", "auth", "rbac", "transport", "data"] {
        let refused = config
            .update_config(v1::UpdateConfigRequest {
                section: section.into(),
                patch: patch(serde_json::json!({"x": 1})),
            })
            .await
            .expect_err(section);
        assert_eq!(refused.code(), Code::PermissionDenied, "{section}");
    }
    let refused = config
        .update_config(v1::UpdateConfigRequest {
            section: "limits".into(),
            patch: patch(serde_json::json!({"max_idempotency_key_bytes": "[REDACTED]"})),
        })
        .await
        .expect_err("redacted value");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let changed = config
        .update_config(v1::UpdateConfigRequest {
            section: "limits".into(),
            patch: patch(serde_json::json!({"max_attempts": 3})),
        })
        .await
        .expect("limits change")
        .into_inner();
    let section = legion_proto::value_to_json(&prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(changed.section.expect("section"))),
    });
    assert_eq!(section["max_attempts"], 3);
    let mut tasks = stack.tasks().await;
    let mut request = submit("core.util.echo");
    request.max_attempts = Some(4);
    assert_eq!(tasks.submit_task(request).await.expect_err("over the new limit").code(), Code::InvalidArgument);
    assert!(count(&stack, "SELECT count(*) FROM audit_log WHERE action = 'config.update'").await == 1);
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_may_run_only_what_it_registered() {
    let stack = start().await;
    let task = stack.tasks().await.submit_task(submit("core.util.echo")).await.expect("submit").into_inner();
    let task = task.task.expect("task");
    // Another node registers only `log`, then tries to start the core task: refused, and left queued.
    legion_common::tls::write_node_cert(&support::stack::cert_dir(&stack), "exec-log").expect("node cert");
    let mut log_node = legion_proto::v1::executor_service_client::ExecutorServiceClient::new(
        stack.channel(Some("node-exec-log")).await,
    );
    let mut manifest = core_manifest(&["write"]);
    manifest.name = "exec-log".into();
    manifest.extensions[0].name = "log".into();
    manifest.extensions[0].runners[0].name = "entry".into();
    log_node.register_node(manifest).await.expect("register");
    let item = v1::StartItem { task_id: task.id.clone(), dispatch: 1, redelivered: false };
    let answer =
        log_node.start_task(v1::StartTaskRequest { items: vec![item.clone()] }).await.expect("start").into_inner();
    assert_eq!(answer.results[0].decision(), v1::StartDecision::Refuse);
    assert_eq!(answer.results[0].reason, "node exec-log did not register extension core");
    let (status,): (String,) = sqlx::query_as("SELECT status FROM tasks WHERE id = $1::uuid")
        .bind(&task.id)
        .fetch_one(&stack.pool().await)
        .await
        .expect("task");
    assert_ne!(status, "running", "the refused start changed nothing");
    // The node that registered `core` runs it.
    let answer = stack.executor().await.start_task(v1::StartTaskRequest { items: vec![item] }).await.expect("start");
    assert_eq!(answer.into_inner().results[0].decision(), v1::StartDecision::Run);
    assert_eq!(NODE, "exec-1");
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_belong_to_their_owner() {
    let stack = start().await;
    put_policy(&stack, "echo", &[("tasks/core/*", &["create", "read"]), ("runners/core/*", &["execute"])]).await;
    let (id_a, key_a) = create_key(&stack, "alice", &["echo"], 0).await;
    let (_, key_b) = create_key(&stack, "bob", &["echo"], 0).await;
    let request = || v1::SubmitTaskRequest { idempotency_key: Some("nightly-1".into()), ..submit("core.util.echo") };
    let mut alice = TaskServiceClient::new(as_key(&stack, &key_a).await);
    let mut bob = TaskServiceClient::new(as_key(&stack, &key_b).await);
    let first = alice.submit_task(request()).await.expect("alice").into_inner();
    let again = alice.submit_task(request()).await.expect("alice again").into_inner();
    assert!(first.created && !again.created);
    assert_eq!(first.task.as_ref().map(|t| &t.id), again.task.as_ref().map(|t| &t.id));
    assert_eq!(first.task.as_ref().map(|t| t.owner.clone()), Some(format!("api-key/{id_a}")));
    // The same key from another caller is another submit: Alice's task is never handed to Bob.
    let other = bob.submit_task(request()).await.expect("bob").into_inner();
    assert!(other.created);
    assert_ne!(other.task.map(|t| t.id), first.task.map(|t| t.id));
    stack.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_tokens_never_outlive_their_creator() {
    let stack = start().await;
    put_policy(&stack, "keys", &[("api-keys/*", &["create", "delete", "list"]), ("policies/*", &["read"])]).await;
    let (parent_id, parent) = create_key(&stack, "parent", &["keys"], 60).await;
    let mut as_parent = AuthServiceClient::new(as_key(&stack, &parent).await);
    let child = as_parent
        .create_api_key(v1::CreateApiKeyRequest { name: "child".into(), policies: vec!["keys".into()], ttl_s: 0 })
        .await
        .expect("child")
        .into_inner()
        .api_key
        .expect("key");
    let expires = child.expires_at.expect("the child expires with its parent");
    assert!(expires.seconds <= chrono::Utc::now().timestamp() + 61, "{expires:?}");

    // A token dies with its key.
    let token = AuthServiceClient::new(stack.channel_as(Credential::none()).await)
        .issue_token(v1::IssueTokenRequest { api_key: parent.clone() })
        .await
        .expect("token")
        .into_inner()
        .token;
    let mut by_token = AuthServiceClient::new(as_token(&stack, &token).await);
    by_token.who_am_i(v1::WhoAmIRequest {}).await.expect("token works");
    AuthServiceClient::new(stack.admin_channel().await)
        .revoke_api_key(v1::RevokeApiKeyRequest { id: parent_id })
        .await
        .expect("revoke");
    let refused = by_token
        .create_api_key(v1::CreateApiKeyRequest { name: "phoenix".into(), policies: vec!["keys".into()], ttl_s: 0 })
        .await
        .expect_err("the revoked key's token");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Revoking a key that holds more than the caller needs sudo: the admin key stays.
    let (_, keeper) = create_key(&stack, "keeper", &["keys"], 0).await;
    let admin_id = AuthServiceClient::new(stack.admin_channel().await)
        .list_api_keys(v1::ListApiKeysRequest { include_revoked: false })
        .await
        .expect("list")
        .into_inner()
        .api_keys
        .into_iter()
        .find(|k| k.name == "bootstrap-admin")
        .expect("bootstrap key")
        .id;
    let refused = AuthServiceClient::new(as_key(&stack, &keeper).await)
        .revoke_api_key(v1::RevokeApiKeyRequest { id: admin_id })
        .await
        .expect_err("revoking admin");
    assert_eq!(refused.code(), Code::PermissionDenied);
    stack.stop().await.expect("stop");
}
