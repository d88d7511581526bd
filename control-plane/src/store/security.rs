//! Storage of policies, API keys and the settings changed through the API.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Result;

/// A stored policy: its name, rules as JSON (`[{"path","capabilities":[…]}]`) and timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    /// The policy's name.
    pub name: String,
    /// Its rules, as validated by [`crate::policy::parse::parse_policy`].
    pub rules: serde_json::Value,
    /// When it was first written.
    pub created_at: DateTime<Utc>,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// A stored API key (never the key itself: only its SHA-256 is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// UUID.
    pub id: Uuid,
    /// The key's name.
    pub name: String,
    /// Names of the policies it is bound to.
    pub policies: Vec<String>,
    /// The principal that created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops authenticating; `None` never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// Whether the key authenticates at `now`: not revoked and not expired.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// A new API key to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// UUID.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// SHA-256 of the key.
    pub key_hash: [u8; 32],
    /// Bound policies.
    pub policies: Vec<String>,
    /// Creating principal.
    pub created_by: String,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Policies, API keys and settings overrides.
#[async_trait]
pub trait SecurityStore: Send + Sync {
    /// Creates or replaces a policy; `true` when it was new.
    async fn put_policy(&self, name: &str, rules: &serde_json::Value) -> Result<(StoredPolicy, bool)>;

    /// The policy, or `None`.
    async fn get_policy(&self, name: &str) -> Result<Option<StoredPolicy>>;

    /// The named policies that exist (absent names are left out).
    async fn get_policies(&self, names: &[String]) -> Result<Vec<StoredPolicy>>;

    /// Every policy, by name.
    async fn list_policies(&self) -> Result<Vec<StoredPolicy>>;

    /// Deletes a policy; `false` when there was none.
    async fn delete_policy(&self, name: &str) -> Result<bool>;

    /// Stores a new API key.
    ///
    /// # Errors
    /// [`super::Error::AlreadyExists`] when the hash is taken.
    async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord>;

    /// The key with this SHA-256, revoked or not.
    async fn api_key_by_hash(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>>;

    /// The key with this id.
    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKeyRecord>>;

    /// Every key, newest first; revoked ones only when asked.
    async fn list_api_keys(&self, include_revoked: bool) -> Result<Vec<ApiKeyRecord>>;

    /// Revokes a key (a second revocation keeps the first time) and returns it.
    ///
    /// # Errors
    /// [`super::Error::NotFound`] for an unknown id.
    async fn revoke_api_key(&self, id: Uuid) -> Result<ApiKeyRecord>;

    /// Whether an unrevoked, unexpired key bound to `policy` exists.
    async fn has_valid_key_with_policy(&self, policy: &str) -> Result<bool>;

    /// Creates `policy` only if no policy has its name; `true` when created.
    async fn ensure_policy(&self, name: &str, rules: &serde_json::Value) -> Result<bool>;

    /// Stores the value of a settings section changed through the API.
    async fn put_config_override(&self, section: &str, value: &serde_json::Value, by: &str) -> Result<()>;

    /// Every settings section changed through the API.
    async fn config_overrides(&self) -> Result<Vec<(String, serde_json::Value)>>;
}
