//! Authentication and authorization of every user-facing call (DESIGN.md section 6).
//!
//! A call is authenticated from its metadata: `x-api-key` (looked up by SHA-256 among the stored
//! keys, which must be neither revoked nor expired) or `authorization: Bearer <JWT>` ([`jwt`]). A
//! call made with a node certificate is refused whatever it carries: nodes may call only the executor
//! service. The gateway forwards the caller's credential and never vouches for a caller; it may report
//! the caller's address (`x-legion-client-addr`), which is believed only from a gateway certificate.
//!
//! The caller's policies (the key's, or the token's `policies` claim) are merged into an
//! [`Acl`](crate::policy::Acl) and asked whether they allow the capability on the resource path. Every
//! decision, allow and deny, and every failed authentication is written to the audit trail before the
//! call proceeds or is refused; when the trail cannot be written the call is refused (`UNAVAILABLE`),
//! as Vault does when no audit device can record a request.
//!
//! Keys and policy sets are cached for `auth.cache_ttl_ms`: a key revoked or a policy changed on
//! another replica takes effect here within that time, and at once on the replica that made the change.

pub mod credential;
pub mod jwt;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use legion_common::tls::{Principal, principal_from_certs};
use tonic::{Request, Status};

use self::credential::Credential;
use self::jwt::JwtKeys;
use crate::audit::{AuditEvent, AuditLog, Decision};
use crate::policy::{ADMIN_POLICY, Acl, Capability, Policy};
use crate::store::security::{ApiKeyRecord, NewApiKey, SecurityStore};

/// Metadata in which the gateway reports the address of the HTTP client it forwards.
pub const CLIENT_ADDR_METADATA: &str = "x-legion-client-addr";

/// The authenticated caller of a user-facing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `api-key/<uuid>` or `jwt/<sub>`.
    pub principal: String,
    /// Names of the caller's policies.
    pub policies: Arc<[String]>,
    /// The request id (`x-request-id` metadata, else generated).
    pub request_id: String,
    /// The caller's address as the control plane saw it, or as the gateway reported it.
    pub source: String,
    /// When the credential stops authenticating: the API key's expiry, or the token's `exp`. Keys this
    /// caller creates never outlive it.
    pub expires_at: Option<chrono::DateTime<Utc>>,
}

/// Who the request comes from before authentication: request id, address, peer certificate.
#[derive(Debug, Clone)]
struct Origin {
    request_id: String,
    source: String,
    peer: Option<Principal>,
}

fn origin<T>(request: &Request<T>) -> Origin {
    let peer = request.peer_certs().as_deref().and_then(|certs| principal_from_certs(certs));
    let remote = request.remote_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let reported = request
        .metadata()
        .get(CLIENT_ADDR_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()));
    let source = match (&peer, reported) {
        (Some(Principal::Gateway(name)), Some(client)) => format!("{client} via gateway/{name}"),
        (Some(Principal::Gateway(name)), None) => format!("{remote} (gateway/{name})"),
        _ => remote,
    };
    Origin { request_id: credential::request_id(request.metadata()), source, peer }
}

/// Authenticates callers, evaluates their policies and audits every decision. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn SecurityStore>,
    audit: AuditLog,
    jwt: JwtKeys,
    ttl: Duration,
    keys: Mutex<HashMap<[u8; 32], (ApiKeyRecord, Instant)>>,
    key_ids: Mutex<HashMap<uuid::Uuid, (ApiKeyRecord, Instant)>>,
    acls: Mutex<AclCache>,
}

/// Merged ACLs by sorted policy names, with when they were built.
type AclCache = HashMap<Vec<String>, (Arc<Acl>, Instant)>;

/// Most entries of each cache; a full cache is emptied rather than grown.
const CACHE_CAPACITY: usize = 10_000;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Auth {
    /// The authorizer over `store`, writing to `audit`, verifying and issuing tokens with `jwt`, caching
    /// keys and policy sets for `cache_ttl`.
    pub fn new(store: Arc<dyn SecurityStore>, audit: AuditLog, jwt: JwtKeys, cache_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                audit,
                jwt,
                ttl: cache_ttl,
                keys: Mutex::new(HashMap::new()),
                key_ids: Mutex::new(HashMap::new()),
                acls: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The JWT keys.
    pub fn jwt(&self) -> &JwtKeys {
        &self.inner.jwt
    }

    /// The store of policies and keys.
    pub fn store(&self) -> &Arc<dyn SecurityStore> {
        &self.inner.store
    }

    /// Authenticates the caller of `request` and checks `capability` on `path`; both the decision and
    /// an authentication failure are audited before this returns.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without a valid credential, `PERMISSION_DENIED` when the policies deny it (or
    /// the call comes with a node certificate), `UNAVAILABLE` when the decision cannot be audited or the
    /// database cannot be read.
    pub async fn authorize<T>(
        &self,
        request: &Request<T>,
        path: &str,
        capability: Capability,
    ) -> Result<Caller, Status> {
        self.authorize_all(request, &[(path, capability)]).await
    }

    /// Like [`Auth::authorize`] for several checks at once: each is decided and audited (up to the
    /// first denial), and the call proceeds only if all allow.
    ///
    /// # Errors
    /// As [`Auth::authorize`].
    pub async fn authorize_all<T>(
        &self,
        request: &Request<T>,
        checks: &[(&str, Capability)],
    ) -> Result<Caller, Status> {
        let caller = self.authenticate(request).await?;
        self.check_many(&caller, checks).await?;
        Ok(caller)
    }

    /// Authenticates the caller of `request` without checking a capability (for calls whose resource is
    /// known only after a lookup). Failures are audited.
    ///
    /// # Errors
    /// As [`Auth::authorize`].
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let origin = origin(request);
        let refuse = |principal: String, reason: String, status: Status| {
            let origin = origin.clone();
            async move {
                let event = AuditEvent {
                    action: "authenticate".into(),
                    principal,
                    resource: String::new(),
                    capability: String::new(),
                    decision: Decision::Deny,
                    request_id: origin.request_id.clone(),
                    source: origin.source.clone(),
                    detail: serde_json::json!({"reason": reason}),
                };
                tracing::info!(request_id = %origin.request_id, source = %origin.source, %reason, "authentication refused");
                self.audit(vec![event]).await?;
                Err::<Caller, Status>(status)
            }
        };
        if let Some(Principal::Node(name)) = &origin.peer {
            let reason = "node certificates may call only the executor service".to_owned();
            return refuse(format!("node/{name}"), reason.clone(), Status::permission_denied(reason)).await;
        }
        let credential = match credential::from_metadata(request.metadata()) {
            Ok(credential) => credential,
            Err(missing) => {
                return refuse("anonymous".into(), missing.to_string(), Status::unauthenticated(missing.to_string()))
                    .await;
            }
        };
        let (principal, policies, expires_at) = match credential {
            Credential::ApiKey(key) => match self.lookup_key(&key).await? {
                Ok(record) => (format!("api-key/{}", record.id), record.policies, record.expires_at),
                Err((who, reason)) => {
                    return refuse(who, reason.into(), Status::unauthenticated("invalid, revoked or expired API key"))
                        .await;
                }
            },
            Credential::Bearer(token) => match self.inner.jwt.verify(&token) {
                Ok(claims) => {
                    // A token exchanged for an API key dies with the key: revoking or expiring the key
                    // ends its tokens too.
                    if let Some(id) = claims.sub.strip_prefix("api-key/") {
                        let id = uuid::Uuid::parse_str(id).ok();
                        let record = match id {
                            Some(id) => self.key_by_id(id).await?,
                            None => None,
                        };
                        if !record.is_some_and(|r| r.is_valid_at(Utc::now())) {
                            let reason = "the token's api key is unknown, revoked or expired".to_owned();
                            return refuse(
                                format!("jwt/{}", claims.sub),
                                reason.clone(),
                                Status::unauthenticated(reason),
                            )
                            .await;
                        }
                    }
                    let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0);
                    (format!("jwt/{}", claims.sub), claims.policies, expires_at)
                }
                Err(refused) => {
                    let message = refused.to_string();
                    return refuse("anonymous".into(), message.clone(), Status::unauthenticated(message)).await;
                }
            },
        };
        Ok(Caller {
            principal,
            policies: policies.into(),
            request_id: origin.request_id,
            source: origin.source,
            expires_at,
        })
    }

    /// Checks `capability` on `path` for an authenticated caller and audits the decision.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` when denied, `UNAVAILABLE` when it cannot be decided or audited.
    pub async fn check(&self, caller: &Caller, path: &str, capability: Capability) -> Result<(), Status> {
        self.check_all(caller, &[(path, capability)]).await
    }

    async fn check_all(&self, caller: &Caller, checks: &[(&str, Capability)]) -> Result<(), Status> {
        let acl = self.acl(&caller.policies).await?;
        let mut events = Vec::with_capacity(checks.len());
        let mut denied = None;
        for (path, capability) in checks {
            let allowed = acl.allows(path, *capability);
            events.push(AuditEvent {
                action: "authorize".into(),
                principal: caller.principal.clone(),
                resource: (*path).to_owned(),
                capability: capability.as_str().to_owned(),
                decision: if allowed { Decision::Allow } else { Decision::Deny },
                request_id: caller.request_id.clone(),
                source: caller.source.clone(),
                detail: serde_json::json!({}),
            });
            if !allowed {
                denied = Some(format!("{} lacks {capability} on {path}", caller.principal));
                break;
            }
        }
        self.audit(events).await?;
        match denied {
            Some(message) => {
                tracing::info!(request_id = %caller.request_id, principal = %caller.principal, %message, "access denied");
                Err(Status::permission_denied(message))
            }
            None => Ok(()),
        }
    }

    /// Whether `caller`'s policies allow `capability` on `path`, without auditing (for filtering what a
    /// caller is shown, and for capabilities questions).
    ///
    /// # Errors
    /// `UNAVAILABLE` when the policies cannot be read.
    pub async fn allows(&self, caller: &Caller, path: &str, capability: Capability) -> Result<bool, Status> {
        Ok(self.acl(&caller.policies).await?.allows(path, capability))
    }

    /// The merged ACL of the named policies (cached). Unknown names grant nothing; `admin` is built in.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the policies cannot be read.
    pub async fn acl(&self, names: &[String]) -> Result<Arc<Acl>, Status> {
        let mut key: Vec<String> = names.to_vec();
        key.sort();
        key.dedup();
        if let Some((acl, at)) = lock(&self.inner.acls).get(&key)
            && at.elapsed() < self.inner.ttl
        {
            return Ok(acl.clone());
        }
        let stored = self.inner.store.get_policies(&key).await.map_err(crate::grpc::store_status)?;
        let mut policies: Vec<Policy> = Vec::with_capacity(key.len());
        for p in stored.iter().filter(|p| p.name != ADMIN_POLICY) {
            match Policy::from_rules_json(&p.name, &p.rules) {
                Ok(policy) => policies.push(policy),
                Err(e) => tracing::error!(policy = %p.name, error = %e, "stored policy does not parse; ignored"),
            }
        }
        if key.iter().any(|n| n == ADMIN_POLICY) {
            policies.push(Policy::admin());
        }
        let acl = Arc::new(Acl::new(&policies));
        let mut cache = lock(&self.inner.acls);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, (acl.clone(), Instant::now()));
        Ok(acl)
    }

    /// The key with id `id` (cached like keys by hash).
    async fn key_by_id(&self, id: uuid::Uuid) -> Result<Option<ApiKeyRecord>, Status> {
        let cached =
            lock(&self.inner.key_ids).get(&id).filter(|(_, at)| at.elapsed() < self.inner.ttl).map(|(r, _)| r.clone());
        if cached.is_some() {
            return Ok(cached);
        }
        let found = self.inner.store.get_api_key(id).await.map_err(crate::grpc::store_status)?;
        if let Some(record) = &found {
            let mut cache = lock(&self.inner.key_ids);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(id, (record.clone(), Instant::now()));
        }
        Ok(found)
    }

    /// Checks several capabilities for an authenticated caller, each decided and audited (up to the first
    /// denial).
    ///
    /// # Errors
    /// As [`Auth::check`].
    pub async fn check_many(&self, caller: &Caller, checks: &[(&str, Capability)]) -> Result<(), Status> {
        self.check_all(caller, checks).await
    }

    /// The valid key for `key`, or who it was and why it is refused.
    async fn lookup_key(&self, key: &str) -> Result<Result<ApiKeyRecord, (String, &'static str)>, Status> {
        let hash = credential::hash_key(key);
        let cached =
            lock(&self.inner.keys).get(&hash).filter(|(_, at)| at.elapsed() < self.inner.ttl).map(|(r, _)| r.clone());
        let record = match cached {
            Some(record) => Some(record),
            None => {
                let found = self.inner.store.api_key_by_hash(&hash).await.map_err(crate::grpc::store_status)?;
                if let Some(record) = &found {
                    let mut cache = lock(&self.inner.keys);
                    if cache.len() >= CACHE_CAPACITY {
                        cache.clear();
                    }
                    cache.insert(hash, (record.clone(), Instant::now()));
                }
                found
            }
        };
        let now = Utc::now();
        Ok(match record {
            None => Err(("anonymous".into(), "unknown api key")),
            Some(r) if r.revoked_at.is_some() => Err((format!("api-key/{}", r.id), "api key revoked")),
            Some(r) if !r.is_valid_at(now) => Err((format!("api-key/{}", r.id), "api key expired")),
            Some(r) => Ok(r),
        })
    }

    /// The valid API key `key` (for the token exchange), or `UNAUTHENTICATED`; refusals are audited.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for an unknown, revoked or expired key; `UNAVAILABLE` as [`Auth::authorize`].
    pub async fn verify_key<T>(&self, request: &Request<T>, key: &str) -> Result<(Caller, ApiKeyRecord), Status> {
        let origin = origin(request);
        match self.lookup_key(key).await? {
            Ok(record) => Ok((
                Caller {
                    principal: format!("api-key/{}", record.id),
                    policies: record.policies.clone().into(),
                    request_id: origin.request_id,
                    source: origin.source,
                    expires_at: record.expires_at,
                },
                record,
            )),
            Err((principal, reason)) => {
                self.audit(vec![AuditEvent {
                    action: "token.issue".into(),
                    principal,
                    resource: String::new(),
                    capability: String::new(),
                    decision: Decision::Deny,
                    request_id: origin.request_id,
                    source: origin.source,
                    detail: serde_json::json!({"reason": reason}),
                }])
                .await?;
                Err(Status::unauthenticated("invalid, revoked or expired API key"))
            }
        }
    }

    /// Records a change made by `caller` (`policy.put`, `api_key.revoke`, …) in the audit trail.
    ///
    /// # Errors
    /// `UNAVAILABLE` when it cannot be written.
    pub async fn record_change(
        &self,
        caller: &Caller,
        action: &str,
        resource: &str,
        detail: serde_json::Value,
    ) -> Result<(), Status> {
        self.audit(vec![AuditEvent {
            action: action.into(),
            principal: caller.principal.clone(),
            resource: resource.into(),
            capability: String::new(),
            decision: Decision::Allow,
            request_id: caller.request_id.clone(),
            source: caller.source.clone(),
            detail,
        }])
        .await
    }

    /// Records a denial decided outside the policies (a read-only settings section, say).
    ///
    /// # Errors
    /// `UNAVAILABLE` when it cannot be written.
    pub async fn record_denial(
        &self,
        caller: &Caller,
        resource: &str,
        capability: Capability,
        reason: &str,
    ) -> Result<(), Status> {
        self.audit(vec![AuditEvent {
            action: "authorize".into(),
            principal: caller.principal.clone(),
            resource: resource.into(),
            capability: capability.as_str().into(),
            decision: Decision::Deny,
            request_id: caller.request_id.clone(),
            source: caller.source.clone(),
            detail: serde_json::json!({"reason": reason}),
        }])
        .await
    }

    async fn audit(&self, events: Vec<AuditEvent>) -> Result<(), Status> {
        self.inner.audit.append_many(events).await.map_err(|e| {
            tracing::error!(error = %e, "cannot write the audit trail; refusing the call");
            Status::unavailable("the audit trail cannot be written, retry later")
        })
    }

    /// Records the settings this process started with (redacted, with their SHA-256), so that a change
    /// made through the settings files between two starts shows in the audit trail too.
    ///
    /// # Errors
    /// When the audit trail cannot be written.
    pub async fn record_settings_loaded(&self, redacted: serde_json::Value) -> Result<(), crate::audit::Error> {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(redacted.to_string().as_bytes()));
        let event = AuditEvent {
            action: "config.load".into(),
            principal: "control-plane".into(),
            resource: "config/".into(),
            capability: String::new(),
            decision: Decision::Allow,
            request_id: String::new(),
            source: "settings files and environment".into(),
            detail: serde_json::json!({"sha256": digest, "settings": redacted}),
        };
        self.inner.audit.append_many(vec![event]).await
    }

    /// Forgets cached policy sets (after a policy changed on this replica).
    pub fn forget_policies(&self) {
        lock(&self.inner.acls).clear();
    }

    /// Forgets the cached key `id` (after it was revoked on this replica).
    pub fn forget_key(&self, id: uuid::Uuid) {
        lock(&self.inner.keys).retain(|_, (record, _)| record.id != id);
        lock(&self.inner.key_ids).remove(&id);
    }

    /// Creates the built-in `admin` policy if missing and, when `key` is given and no valid key is bound
    /// to `admin`, an API key `bootstrap-admin` with the value `key` (DESIGN.md section 3,
    /// `auth.bootstrap_admin_key`). Safe to run on several replicas at once.
    ///
    /// # Errors
    /// When the database refuses.
    pub async fn bootstrap(&self, key: Option<&str>) -> Result<(), crate::store::Error> {
        let store = &self.inner.store;
        store.ensure_policy(ADMIN_POLICY, &Policy::admin().rules_json()).await?;
        let Some(key) = key else { return Ok(()) };
        if store.has_valid_key_with_policy(ADMIN_POLICY).await? {
            return Ok(());
        }
        let hash = credential::hash_key(key);
        if let Some(existing) = store.api_key_by_hash(&hash).await? {
            tracing::warn!(
                key_id = %existing.id,
                "auth.bootstrap_admin_key names a key that was revoked or has expired; not recreating it"
            );
            return Ok(());
        }
        let new = NewApiKey {
            id: uuid::Uuid::now_v7(),
            name: "bootstrap-admin".into(),
            key_hash: hash,
            policies: vec![ADMIN_POLICY.to_owned()],
            created_by: "bootstrap".into(),
            expires_at: None,
        };
        match store.insert_api_key(&new).await {
            Ok(record) => {
                tracing::info!(key_id = %record.id, "bootstrap admin API key created");
                let event = AuditEvent {
                    action: "api_key.create".into(),
                    principal: "bootstrap".into(),
                    resource: "api-keys/bootstrap-admin".into(),
                    capability: String::new(),
                    decision: Decision::Allow,
                    request_id: String::new(),
                    source: "auth.bootstrap_admin_key".into(),
                    detail: serde_json::json!({"id": record.id, "policies": record.policies}),
                };
                if let Err(e) = self.inner.audit.append_many(vec![event]).await {
                    tracing::error!(error = %e, "cannot audit the bootstrap admin key");
                }
                Ok(())
            }
            // Another replica created it at the same moment.
            Err(crate::store::Error::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
