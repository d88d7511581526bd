//! The REST shapes of API keys, tokens, capabilities, policies, the audit trail and the settings
//! (DESIGN.md sections 6 and 7), as REST returns them and the CLI prints them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use legion_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::time;

/// An API key, without its secret (which is shown once, by [`CreatedApiKey`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// The key's id (UUID); its principal is `api-key/<id>`.
    #[schema(format = Uuid)]
    pub id: String,
    /// Its name.
    pub name: String,
    /// The policies it is bound to.
    pub policies: Vec<String>,
    /// When it stops authenticating (RFC 3339, UTC); null when it does not expire.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was created.
    #[schema(required = true)]
    pub created_at: Option<DateTime<Utc>>,
    /// When it was revoked; null while it is valid.
    #[schema(required = true)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The principal that created it; null when not recorded (the bootstrap key).
    #[schema(required = true)]
    pub created_by: Option<String>,
}

impl From<&v1::ApiKey> for ApiKey {
    fn from(k: &v1::ApiKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            policies: k.policies.clone(),
            expires_at: time(k.expires_at.as_ref()),
            created_at: time(k.created_at.as_ref()),
            revoked_at: time(k.revoked_at.as_ref()),
            created_by: non_empty(&k.created_by),
        }
    }
}

/// A new API key with its secret, which is shown this once: only its hash is stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key's id (UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// Its name.
    pub name: String,
    /// The secret to send as `X-API-Key`.
    pub key: String,
    /// The policies it is bound to.
    pub policies: Vec<String>,
    /// When it stops authenticating; null when it does not expire.
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was created.
    #[schema(required = true)]
    pub created_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("key", &"[REDACTED]")
            .field("policies", &self.policies)
            .field("expires_at", &self.expires_at)
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl CreatedApiKey {
    /// The REST shape of a `CreateApiKeyResponse`: its key and secret.
    pub fn new(key: &v1::ApiKey, secret: String) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            key: secret,
            policies: key.policies.clone(),
            expires_at: time(key.expires_at.as_ref()),
            created_at: time(key.created_at.as_ref()),
        }
    }
}

/// API keys, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    /// The keys (revoked ones only when asked for).
    pub api_keys: Vec<ApiKey>,
}

impl From<&v1::ListApiKeysResponse> for ApiKeyList {
    fn from(r: &v1::ListApiKeysResponse) -> Self {
        Self { api_keys: r.api_keys.iter().map(ApiKey::from).collect() }
    }
}

/// A JWT issued for an API key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// A compact JWS (RFC 7515) to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// When it expires (`exp`).
    #[schema(required = true)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("token", &"[REDACTED]").field("expires_at", &self.expires_at).finish()
    }
}

impl From<&v1::IssueTokenResponse> for Token {
    fn from(r: &v1::IssueTokenResponse) -> Self {
        Self { token: r.token.clone(), expires_at: time(r.expires_at.as_ref()) }
    }
}

/// The capabilities per path, as Vault's `sys/capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CapabilityMap {
    /// Path → capability names in display order; `["deny"]` when nothing is allowed.
    #[schema(example = json!({"tasks/core/util/echo": ["create", "read"]}))]
    pub capabilities: BTreeMap<String, Vec<String>>,
}

impl From<&v1::CapabilitiesResponse> for CapabilityMap {
    fn from(r: &v1::CapabilitiesResponse) -> Self {
        Self { capabilities: r.capabilities.iter().map(|(p, c)| (p.clone(), c.capabilities.clone())).collect() }
    }
}

/// The caller as the control plane authenticated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// `api-key/<id>` or `jwt/<sub>`.
    pub principal: String,
    /// The policies that apply to the caller.
    pub policies: Vec<String>,
}

impl From<&v1::WhoAmIResponse> for WhoAmI {
    fn from(r: &v1::WhoAmIResponse) -> Self {
        Self { principal: r.principal.clone(), policies: r.policies.clone() }
    }
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyRule {
    /// Exact path, `*` glob suffix or `+` segment wildcards.
    pub path: String,
    /// Capability names.
    pub capabilities: Vec<String>,
}

/// A Vault-style ACL policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// Its rules.
    pub rules: Vec<PolicyRule>,
    /// When it was created.
    #[schema(required = true)]
    pub created_at: Option<DateTime<Utc>>,
    /// When its rules were last replaced.
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<&v1::Policy> for Policy {
    fn from(p: &v1::Policy) -> Self {
        Self {
            name: p.name.clone(),
            rules: p
                .rules
                .iter()
                .map(|r| PolicyRule { path: r.path.clone(), capabilities: r.capabilities.clone() })
                .collect(),
            created_at: time(p.created_at.as_ref()),
            updated_at: time(p.updated_at.as_ref()),
        }
    }
}

/// Every policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyList {
    /// The policies, by name.
    pub policies: Vec<Policy>,
}

impl From<&v1::ListPoliciesResponse> for PolicyList {
    fn from(r: &v1::ListPoliciesResponse) -> Self {
        Self { policies: r.policies.iter().map(Policy::from).collect() }
    }
}

/// One record of the append-only, hash-chained audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Position in the chain, increasing.
    pub id: i64,
    /// When it was written.
    #[schema(required = true)]
    pub at: Option<DateTime<Utc>>,
    /// `authorize` for decisions; `policy.put`, `api_key.create`, … for changes.
    pub action: String,
    /// `api-key/<id>`, `jwt/<sub>`, `node/<name>`, `gateway/<name>` or `anonymous`.
    pub principal: String,
    /// The resource path (`tasks/core/util/echo`).
    pub resource: String,
    /// The capability checked; null for changes.
    #[schema(required = true)]
    pub capability: Option<String>,
    /// `allow`, `deny` or `error` (authentication failed).
    pub decision: String,
    /// The request id (`x-request-id`) of the call; null when it had none.
    #[schema(required = true)]
    pub request_id: Option<String>,
    /// The caller's address as the control plane saw it, or as the gateway reported it.
    #[schema(required = true)]
    pub source: Option<String>,
    /// What changed or why access was denied (never a secret); null when nothing is recorded.
    #[schema(required = true, value_type = Option<Object>)]
    pub detail: serde_json::Value,
    /// Hex SHA-256 of `prev_hash` and this record's content.
    pub hash: String,
    /// `hash` of the previous record.
    pub prev_hash: String,
}

impl From<&v1::AuditRecord> for AuditRecord {
    fn from(r: &v1::AuditRecord) -> Self {
        Self {
            id: r.id,
            at: time(r.at.as_ref()),
            action: r.action.clone(),
            principal: r.principal.clone(),
            resource: r.resource.clone(),
            capability: non_empty(&r.capability),
            decision: r.decision.clone(),
            request_id: non_empty(&r.request_id),
            source: non_empty(&r.source),
            detail: r.detail.as_ref().map_or(serde_json::Value::Null, struct_to_json),
            hash: r.hash.clone(),
            prev_hash: r.prev_hash.clone(),
        }
    }
}

/// One page of audit records, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The records of this page.
    pub records: Vec<AuditRecord>,
    /// Pass as `page_token` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_page_token: Option<String>,
}

impl From<&v1::ListAuditResponse> for AuditPage {
    fn from(r: &v1::ListAuditResponse) -> Self {
        Self {
            records: r.records.iter().map(AuditRecord::from).collect(),
            next_page_token: non_empty(&r.next_page_token),
        }
    }
}

/// The result of checking the audit trail's hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    /// Whether every record links to the one before it.
    pub valid: bool,
    /// Records checked.
    pub checked: i64,
    /// Id of the first record whose link does not verify; null when valid.
    #[schema(required = true)]
    pub first_broken: Option<i64>,
    /// Why the chain does not verify; null when valid.
    #[schema(required = true)]
    pub reason: Option<String>,
}

impl From<&v1::VerifyAuditResponse> for AuditVerification {
    fn from(r: &v1::VerifyAuditResponse) -> Self {
        Self { valid: r.valid, checked: r.checked, first_broken: r.first_broken, reason: non_empty(&r.reason) }
    }
}

/// A `google.protobuf.Struct` (settings, a settings section, an audit detail) as a plain JSON object.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), legion_proto::value_to_json(v))).collect())
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.to_owned()).filter(|s| !s.is_empty())
}
