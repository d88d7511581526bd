//! `legion.v1.AuthService` and `legion.v1.PolicyService`: API keys, tokens, capabilities questions and
//! policy CRUD. Every change is audited with what changed (never a secret).

use std::collections::BTreeMap;

use chrono::Utc;
use legion_proto::v1;
use legion_proto::v1::auth_service_server::AuthService;
use legion_proto::v1::policy_service_server::PolicyService;
use tonic::{Request, Response, Status};

use super::{invalid, parse_uuid, store_status};
use crate::auth::{Auth, Caller, credential};
use crate::policy::parse::{Invalid, parse_policy, validate_name, validate_query_path};
use crate::policy::{ADMIN_POLICY, Capability, Policy};
use crate::store::security::{ApiKeyRecord, NewApiKey, StoredPolicy};

/// Most paths in one capabilities question.
pub const MAX_CAPABILITY_PATHS: usize = 100;
/// Most policies an API key is bound to.
pub const MAX_KEY_POLICIES: usize = 32;
/// Longest API key lifetime, in s (10 years).
pub const MAX_KEY_TTL_S: u64 = 10 * 365 * 24 * 3600;

fn invalid_field(e: Invalid) -> Status {
    invalid(&e.field, e.reason)
}

fn api_key(record: &ApiKeyRecord) -> v1::ApiKey {
    v1::ApiKey {
        id: record.id.to_string(),
        name: record.name.clone(),
        policies: record.policies.clone(),
        created_at: Some(legion_proto::timestamp(record.created_at)),
        expires_at: record.expires_at.map(legion_proto::timestamp),
        revoked_at: record.revoked_at.map(legion_proto::timestamp),
        created_by: record.created_by.clone(),
    }
}

fn capability_names(caps: impl IntoIterator<Item = Capability>) -> v1::Capabilities {
    v1::Capabilities { capabilities: caps.into_iter().map(|c| c.as_str().to_owned()).collect() }
}

/// The auth API.
pub struct AuthApi {
    auth: Auth,
}

impl AuthApi {
    /// The service.
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn create_api_key(
        &self,
        request: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        let req = request.get_ref();
        validate_name("name", &req.name).map_err(invalid_field)?;
        if req.policies.is_empty() || req.policies.len() > MAX_KEY_POLICIES {
            return Err(invalid("policies", format!("must name 1 to {MAX_KEY_POLICIES} policies")));
        }
        for (i, name) in req.policies.iter().enumerate() {
            validate_name(&format!("policies[{i}]"), name).map_err(invalid_field)?;
        }
        if req.ttl_s > MAX_KEY_TTL_S {
            return Err(invalid("ttl_s", format!("must be at most {MAX_KEY_TTL_S} (10 years); 0 never expires")));
        }
        let path = format!("api-keys/{}", req.name);
        let caller = self.auth.authorize(&request, &path, Capability::Create).await?;
        let mut policies = req.policies.clone();
        policies.sort();
        policies.dedup();
        let stored = self.auth.store().get_policies(&policies).await.map_err(store_status)?;
        for (i, name) in req.policies.iter().enumerate() {
            if name != ADMIN_POLICY && !stored.iter().any(|p| &p.name == name) {
                return Err(invalid(&format!("policies[{i}]"), format!("no policy {name:?}")));
            }
        }
        // No escalation: a key gets only policies its creator holds, unless the creator has `sudo` here.
        let beyond: Vec<&String> = policies.iter().filter(|p| !caller.policies.contains(p)).collect();
        if !beyond.is_empty() && !self.auth.allows(&caller, &path, Capability::Sudo).await? {
            let reason = format!(
                "policies: {} not held by {}; binding them needs sudo on {path}",
                beyond.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                caller.principal
            );
            self.auth.record_denial(&caller, &path, Capability::Sudo, &reason).await?;
            return Err(Status::permission_denied(reason));
        }
        let key = credential::generate_key();
        let requested = (req.ttl_s > 0)
            .then(|| Utc::now() + chrono::Duration::seconds(i64::try_from(req.ttl_s).unwrap_or(i64::MAX)));
        // A key never outlives the credential that created it (as a Vault child token).
        let expires_at = match (requested, caller.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let new = NewApiKey {
            id: uuid::Uuid::now_v7(),
            name: req.name.clone(),
            key_hash: credential::hash_key(&key),
            policies,
            created_by: caller.principal.clone(),
            expires_at,
        };
        let record = self.auth.store().insert_api_key(&new).await.map_err(store_status)?;
        self.auth
            .record_change(
                &caller,
                "api_key.create",
                &path,
                serde_json::json!({"id": record.id, "policies": record.policies, "expires_at": record.expires_at}),
            )
            .await?;
        tracing::info!(key_id = %record.id, name = %record.name, principal = %caller.principal, "api key created");
        Ok(Response::new(v1::CreateApiKeyResponse { api_key: Some(api_key(&record)), key }))
    }

    async fn list_api_keys(
        &self,
        request: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        self.auth.authorize(&request, "api-keys/", Capability::List).await?;
        let keys = self.auth.store().list_api_keys(request.get_ref().include_revoked).await.map_err(store_status)?;
        Ok(Response::new(v1::ListApiKeysResponse { api_keys: keys.iter().map(api_key).collect() }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::RevokeApiKeyResponse>, Status> {
        let id = parse_uuid("id", &request.get_ref().id)?;
        let caller = self.auth.authenticate(&request).await?;
        let record = self.auth.store().get_api_key(id).await.map_err(store_status)?;
        let record = record.ok_or_else(|| Status::not_found(format!("id: no api key {id}")))?;
        let path = format!("api-keys/{}", record.name);
        self.auth.check(&caller, &path, Capability::Delete).await?;
        // Revoking a key that holds policies the caller does not hold is as privileged as creating one.
        let beyond: Vec<&String> = record.policies.iter().filter(|p| !caller.policies.contains(p)).collect();
        if !beyond.is_empty() && !self.auth.allows(&caller, &path, Capability::Sudo).await? {
            let reason = format!(
                "id: the key holds {} which {} does not; revoking it needs sudo on {path}",
                beyond.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                caller.principal
            );
            self.auth.record_denial(&caller, &path, Capability::Sudo, &reason).await?;
            return Err(Status::permission_denied(reason));
        }
        let record = self.auth.store().revoke_api_key(id).await.map_err(store_status)?;
        self.auth.forget_key(id);
        self.auth.record_change(&caller, "api_key.revoke", &path, serde_json::json!({"id": id})).await?;
        tracing::info!(key_id = %id, principal = %caller.principal, "api key revoked");
        Ok(Response::new(v1::RevokeApiKeyResponse { api_key: Some(api_key(&record)) }))
    }

    async fn issue_token(
        &self,
        request: Request<v1::IssueTokenRequest>,
    ) -> Result<Response<v1::IssueTokenResponse>, Status> {
        let key = request.get_ref().api_key.trim();
        if key.is_empty() || key.len() > credential::MAX_CREDENTIAL_BYTES {
            return Err(invalid("api_key", "must be a non-empty API key"));
        }
        if !self.auth.jwt().can_sign() {
            return Err(Status::failed_precondition(
                "tokens are not enabled: set crypt.jwt.hs_secret or crypt.jwt.rs_private_key and rs_public_key",
            ));
        }
        let (caller, record) = self.auth.verify_key(&request, key).await?;
        let (token, expires_at) = self
            .auth
            .jwt()
            .issue(&caller.principal, &record.policies, Utc::now(), record.expires_at)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.auth.record_change(&caller, "token.issue", "", serde_json::json!({"expires_at": expires_at})).await?;
        Ok(Response::new(v1::IssueTokenResponse { token, expires_at: Some(legion_proto::timestamp(expires_at)) }))
    }

    async fn get_jwks(&self, _request: Request<v1::GetJwksRequest>) -> Result<Response<v1::GetJwksResponse>, Status> {
        Ok(Response::new(v1::GetJwksResponse { jwks_json: self.auth.jwt().jwks().to_owned() }))
    }

    async fn capabilities(
        &self,
        request: Request<v1::CapabilitiesRequest>,
    ) -> Result<Response<v1::CapabilitiesResponse>, Status> {
        let req = request.get_ref();
        if req.paths.is_empty() || req.paths.len() > MAX_CAPABILITY_PATHS {
            return Err(invalid("paths", format!("must hold 1 to {MAX_CAPABILITY_PATHS} paths")));
        }
        for (i, path) in req.paths.iter().enumerate() {
            validate_query_path(&format!("paths[{i}]"), path).map_err(invalid_field)?;
        }
        for (i, name) in req.policies.iter().enumerate() {
            validate_name(&format!("policies[{i}]"), name).map_err(invalid_field)?;
        }
        let acl = if req.policies.is_empty() {
            let caller = self.auth.authenticate(&request).await?;
            self.auth.acl(&caller.policies).await?
        } else {
            // Asking about other policies than one's own is privileged (Vault's sys/capabilities).
            self.auth.authorize(&request, "policies/*", Capability::Sudo).await?;
            self.auth.acl(&req.policies).await?
        };
        let capabilities: BTreeMap<String, v1::Capabilities> =
            req.paths.iter().map(|p| (p.clone(), capability_names(acl.capabilities(p)))).collect();
        Ok(Response::new(v1::CapabilitiesResponse { capabilities: capabilities.into_iter().collect() }))
    }

    async fn who_am_i(&self, request: Request<v1::WhoAmIRequest>) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        Ok(Response::new(v1::WhoAmIResponse { principal: caller.principal, policies: caller.policies.to_vec() }))
    }
}

/// The policy API.
pub struct PolicyApi {
    auth: Auth,
}

impl PolicyApi {
    /// The service.
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

fn policy_message(stored: &StoredPolicy) -> v1::Policy {
    let rules = stored
        .rules
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| v1::PolicyRule {
            path: r.get("path").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned(),
            capabilities: r
                .get("capabilities")
                .and_then(serde_json::Value::as_array)
                .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        })
        .collect();
    v1::Policy {
        name: stored.name.clone(),
        rules,
        created_at: Some(legion_proto::timestamp(stored.created_at)),
        updated_at: Some(legion_proto::timestamp(stored.updated_at)),
    }
}

impl PolicyApi {
    /// Refuses (and audits) any change to the built-in admin policy.
    async fn refuse_admin(
        &self,
        caller: &Caller,
        path: &str,
        name: &str,
        capability: Capability,
    ) -> Result<(), Status> {
        if name == ADMIN_POLICY {
            let reason = format!("name: {ADMIN_POLICY} is built in and cannot be changed or deleted");
            self.auth.record_denial(caller, path, capability, &reason).await?;
            return Err(Status::failed_precondition(reason));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn put_policy(
        &self,
        request: Request<v1::PutPolicyRequest>,
    ) -> Result<Response<v1::PutPolicyResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let req = request.get_ref();
        let rules: Vec<(String, Vec<String>)> =
            req.rules.iter().map(|r| (r.path.clone(), r.capabilities.clone())).collect();
        let policy: Policy = parse_policy(&req.name, &rules).map_err(invalid_field)?;
        let path = format!("policies/{}", req.name);
        self.refuse_admin(&caller, &path, &req.name, Capability::Update).await?;
        let exists = self.auth.store().get_policy(&req.name).await.map_err(store_status)?.is_some();
        self.auth.check(&caller, &path, if exists { Capability::Update } else { Capability::Create }).await?;
        let rules_json = policy.rules_json();
        let (stored, created) = self.auth.store().put_policy(&req.name, &rules_json).await.map_err(store_status)?;
        self.auth.forget_policies();
        self.auth.record_change(&caller, "policy.put", &path, serde_json::json!({"rules": rules_json})).await?;
        tracing::info!(policy = %req.name, created, principal = %caller.principal, "policy written");
        Ok(Response::new(v1::PutPolicyResponse { policy: Some(policy_message(&stored)), created }))
    }

    async fn get_policy(&self, request: Request<v1::GetPolicyRequest>) -> Result<Response<v1::Policy>, Status> {
        let name = &request.get_ref().name;
        validate_name("name", name).map_err(invalid_field)?;
        self.auth.authorize(&request, &format!("policies/{name}"), Capability::Read).await?;
        let stored = self.auth.store().get_policy(name).await.map_err(store_status)?;
        let stored = stored.ok_or_else(|| Status::not_found(format!("name: no policy {name}")))?;
        Ok(Response::new(policy_message(&stored)))
    }

    async fn list_policies(
        &self,
        request: Request<v1::ListPoliciesRequest>,
    ) -> Result<Response<v1::ListPoliciesResponse>, Status> {
        self.auth.authorize(&request, "policies/", Capability::List).await?;
        let all = self.auth.store().list_policies().await.map_err(store_status)?;
        Ok(Response::new(v1::ListPoliciesResponse { policies: all.iter().map(policy_message).collect() }))
    }

    async fn delete_policy(
        &self,
        request: Request<v1::DeletePolicyRequest>,
    ) -> Result<Response<v1::DeletePolicyResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let name = request.get_ref().name.clone();
        validate_name("name", &name).map_err(invalid_field)?;
        let path = format!("policies/{name}");
        self.refuse_admin(&caller, &path, &name, Capability::Delete).await?;
        self.auth.check(&caller, &path, Capability::Delete).await?;
        if !self.auth.store().delete_policy(&name).await.map_err(store_status)? {
            return Err(Status::not_found(format!("name: no policy {name}")));
        }
        self.auth.forget_policies();
        self.auth.record_change(&caller, "policy.delete", &path, serde_json::json!({})).await?;
        tracing::info!(policy = %name, principal = %caller.principal, "policy deleted");
        Ok(Response::new(v1::DeletePolicyResponse {}))
    }
}
