//! Callers with limited rights, for the tests of what a policy lets a caller see and do.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use legion_proto::v1;
use legion_proto::v1::auth_service_client::AuthServiceClient;
use legion_proto::v1::policy_service_client::PolicyServiceClient;

use super::stack::{AuthChannel, Credential, Stack};

/// A policy rule granting `capabilities` on `path`.
pub fn rule(path: &str, capabilities: &[&str]) -> v1::PolicyRule {
    v1::PolicyRule { path: path.into(), capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect() }
}

/// A channel whose calls carry a new API key holding only policy `name` with `rules` (written by the
/// admin).
pub async fn limited(stack: &Stack, name: &str, rules: Vec<v1::PolicyRule>) -> AuthChannel {
    let mut policies = PolicyServiceClient::new(stack.admin_channel().await);
    policies.put_policy(v1::PutPolicyRequest { name: name.into(), rules }).await.expect("policy");
    let mut auth = AuthServiceClient::new(stack.admin_channel().await);
    let request = v1::CreateApiKeyRequest { name: name.into(), policies: vec![name.into()], ttl_s: 0 };
    let key = auth.create_api_key(request).await.expect("key").into_inner().key;
    stack.channel_as(Credential::api_key(&key).unwrap()).await
}
