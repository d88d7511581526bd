//! `legion.v1.ChainService`: apply, read, list and delete chains. Every change is audited.
//!
//! Authorization: `create` (new) or `update` on `chains/<name>`, plus `execute` on the runner of every
//! action of the chain, so a chain never runs a function its author could not run; `read`, `list` on
//! `chains/`, and `delete` for the others. A list shows only the chains the caller may `read`.

use std::collections::HashSet;
use std::sync::Arc;

use legion_common::settings::{Limits, RetrySettings};
use legion_proto::v1;
use legion_proto::v1::chain_service_server::ChainService;
use legion_proto::{json_to_value, timestamp, value_to_json};
use tonic::{Request, Response, Status};

use super::tasks::{readable_page, runner_path};
use super::{invalid, store_status};
use crate::auth::Auth;
use crate::chains::validate::{self, ChainSpec, RelationshipSpec};
use crate::chains::{Chain, FieldError};
use crate::delivery::retry::{self, RetryOverrides};
use crate::policy::Capability;
use crate::policy::parse::validate_name;
use crate::store::Store;
use crate::tasks::page;

/// Page size of `ListChains` when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page of `ListChains`.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The chain API over the store.
pub struct ChainApi {
    store: Arc<dyn Store>,
    limits: tokio::sync::watch::Receiver<Limits>,
    auth: Auth,
    retry: RetrySettings,
}

impl ChainApi {
    /// The service.
    pub fn new(store: Arc<dyn Store>, limits: tokio::sync::watch::Receiver<Limits>, auth: Auth) -> Self {
        Self { store, limits, auth, retry: RetrySettings::default() }
    }

    /// The same service checking each relationship's `retry` against `retry` (the `retry.*` settings)
    /// when a chain is applied (default: their defaults).
    pub fn with_retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
        self
    }
}

fn field_error(e: FieldError) -> Status {
    invalid(&e.field, e.reason)
}

/// The resource path of chain `name` (DESIGN.md section 6).
pub fn chain_path(name: &str) -> String {
    format!("chains/{name}")
}

/// A `legion.v1.Chain` as the validator's input. JSON `null` conditions or transformation are absent.
pub fn spec(chain: &v1::Chain) -> ChainSpec {
    let json = |value: &Option<prost_types::Value>| value.as_ref().map(value_to_json).filter(|v| !v.is_null());
    ChainSpec {
        name: chain.name.clone(),
        description: chain.description.clone(),
        max_depth: chain.max_depth,
        relationships: chain
            .relationships
            .iter()
            .map(|r| RelationshipSpec {
                trigger: r.trigger.clone(),
                action: r.action.clone(),
                conditions: json(&r.conditions),
                transformation: json(&r.transformation),
                delay_ms: r.delay_ms,
                active: r.active,
                priority: r.priority,
                max_attempts: r.max_attempts,
                timeout_ms: r.timeout_ms,
                retry: RetryOverrides::from_proto(r.retry.as_ref()),
            })
            .collect(),
    }
}

/// A chain as `legion.v1.Chain`.
pub fn chain_message(chain: &Chain) -> v1::Chain {
    let d = &chain.definition;
    v1::Chain {
        name: chain.name.clone(),
        description: d.description.clone(),
        max_depth: d.max_depth,
        relationships: d
            .relationships
            .iter()
            .map(|r| v1::Relationship {
                id: r.id.to_string(),
                trigger: r.trigger.clone(),
                action: r.action.clone(),
                conditions: r.conditions.as_ref().map(json_to_value),
                transformation: r.transformation.as_ref().map(json_to_value),
                delay_ms: r.delay_ms,
                active: Some(r.active),
                priority: r.priority.map(u32::from),
                max_attempts: r.max_attempts,
                timeout_ms: r.timeout_ms,
                retry: r.retry.to_proto(),
            })
            .collect(),
        version: chain.version,
        created_at: Some(timestamp(chain.created_at)),
        updated_at: Some(timestamp(chain.updated_at)),
        updated_by: chain.updated_by.clone(),
    }
}

/// The actions of a chain, each once, in order.
pub fn actions(chain: &crate::chains::Definition) -> Vec<String> {
    let mut seen = HashSet::new();
    chain.relationships.iter().filter(|r| seen.insert(r.action.as_str())).map(|r| r.action.clone()).collect()
}

#[tonic::async_trait]
impl ChainService for ChainApi {
    #[tracing::instrument(skip_all)]
    async fn apply_chain(
        &self,
        request: Request<v1::ApplyChainRequest>,
    ) -> Result<Response<v1::ApplyChainResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let chain = request.get_ref().chain.as_ref().ok_or_else(|| invalid("chain", "required"))?;
        // Whether the caller may write this chain comes before what is wrong with the document, so
        // that validation (which consults the catalog) answers only callers allowed to write it.
        validate_name("name", &chain.name).map_err(|e| invalid(&e.field, e.reason))?;
        let path = chain_path(&chain.name);
        let current = self.store.get_chain(&chain.name).await.map_err(store_status)?;
        let capability = if current.is_some() { Capability::Update } else { Capability::Create };
        self.auth.check(&caller, &path, capability).await?;
        let limits = self.limits.borrow().clone();
        let document = spec(chain);
        let definition = match validate::validate(&document, &limits) {
            Ok(definition) => definition,
            // The stored version, applied again after a limit was lowered: nothing to change.
            Err(_) if current.as_ref().is_some_and(|c| validate::same_as(&document, &c.definition)) => {
                let current = current.ok_or_else(|| Status::internal("chain vanished"))?;
                return Ok(Response::new(v1::ApplyChainResponse {
                    chain: Some(chain_message(&current)),
                    created: false,
                    changed: false,
                }));
            }
            Err(e) => return Err(field_error(e)),
        };
        // The fields a relationship leaves unset take the settings, so a policy valid on its own may
        // still not be with them (an initial backoff above `retry.max_backoff_ms`).
        for (i, relationship) in definition.relationships.iter().enumerate() {
            retry::resolve_overrides(&relationship.retry, &self.retry)
                .map_err(|e| invalid(&format!("relationships[{i}].{}", e.field), e.reason))?;
        }
        let functions = validate::functions(&definition);
        let known: HashSet<String> =
            self.store.function_status(&functions).await.map_err(store_status)?.into_keys().collect();
        validate::unknown_functions(&definition, &known).map_err(field_error)?;
        let runners: Vec<String> = actions(&definition).iter().map(|a| runner_path(a)).collect();
        let checks: Vec<(&str, Capability)> = runners.iter().map(|p| (p.as_str(), Capability::Execute)).collect();
        self.auth.check_many(&caller, &checks).await?;
        let applied =
            self.store.apply_chain(&chain.name, &definition, &caller.principal).await.map_err(store_status)?;
        if applied.changed {
            self.auth
                .record_change(
                    &caller,
                    "chain.apply",
                    &path,
                    serde_json::json!({
                        "version": applied.chain.version,
                        "created": applied.created,
                        "relationships": applied.chain.definition.relationships.len(),
                    }),
                )
                .await?;
            tracing::info!(
                chain = %chain.name,
                version = applied.chain.version,
                created = applied.created,
                principal = %caller.principal,
                "chain applied"
            );
        }
        Ok(Response::new(v1::ApplyChainResponse {
            chain: Some(chain_message(&applied.chain)),
            created: applied.created,
            changed: applied.changed,
        }))
    }

    async fn get_chain(&self, request: Request<v1::GetChainRequest>) -> Result<Response<v1::Chain>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let name = &request.get_ref().name;
        validate_name("name", name).map_err(|e| invalid(&e.field, e.reason))?;
        self.auth.check(&caller, &chain_path(name), Capability::Read).await?;
        let chain = self.store.get_chain(name).await.map_err(store_status)?;
        let chain = chain.ok_or_else(|| Status::not_found(format!("name: no chain {name}")))?;
        Ok(Response::new(chain_message(&chain)))
    }

    async fn list_chains(
        &self,
        request: Request<v1::ListChainsRequest>,
    ) -> Result<Response<v1::ListChainsResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let req = request.get_ref();
        let limit = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n <= MAX_PAGE_SIZE => n,
            n => return Err(invalid("page_size", format!("must be 1 to {MAX_PAGE_SIZE}, got {n}"))),
        };
        let after = page_token(&req.page_token)?;
        self.auth.check(&caller, "chains/", Capability::List).await?;
        // `list` enumerates, `read` reveals (as Vault's): a chain is shown only with `read` on its path.
        let acl = self.auth.acl(&caller.policies).await?;
        let (scanned, more) = self.store.list_chains(after.as_deref(), limit).await.map_err(store_status)?;
        let readable = |c: &Chain| acl.allows(&chain_path(&c.name), Capability::Read);
        let (chains, next) = readable_page(&scanned, more, readable, chain_message, None);
        let next_page_token = next.map(|c| page::encode_name(TOKEN_PREFIX, &c.name)).unwrap_or_default();
        Ok(Response::new(v1::ListChainsResponse { chains, next_page_token }))
    }

    async fn delete_chain(
        &self,
        request: Request<v1::DeleteChainRequest>,
    ) -> Result<Response<v1::DeleteChainResponse>, Status> {
        let caller = self.auth.authenticate(&request).await?;
        let name = &request.get_ref().name;
        validate_name("name", name).map_err(|e| invalid(&e.field, e.reason))?;
        let path = chain_path(name);
        self.auth.check(&caller, &path, Capability::Delete).await?;
        if !self.store.delete_chain(name).await.map_err(store_status)? {
            return Err(Status::not_found(format!("name: no chain {name}")));
        }
        self.auth.record_change(&caller, "chain.delete", &path, serde_json::json!({})).await?;
        tracing::info!(chain = %name, principal = %caller.principal, "chain deleted");
        Ok(Response::new(v1::DeleteChainResponse {}))
    }
}

/// Prefix of `ListChains` page tokens (`c1.<last name>`).
const TOKEN_PREFIX: &str = "c1.";

fn page_token(token: &str) -> Result<Option<String>, Status> {
    page::decode_name(TOKEN_PREFIX, token).map_err(|e| invalid("page_token", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        assert_eq!(page_token("").expect("empty"), None);
        assert_eq!(page_token("c1.nightly-report").expect("valid"), Some("nightly-report".into()));
        for bad in ["nightly", "c1.", "c1.Bad Name", "c2.x"] {
            assert!(page_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn null_documents_are_absent() {
        let chain = v1::Chain {
            name: "c".into(),
            relationships: vec![v1::Relationship {
                trigger: "a.b.c".into(),
                action: "d.e.f".into(),
                conditions: Some(json_to_value(&serde_json::Value::Null)),
                transformation: None,
                ..v1::Relationship::default()
            }],
            ..v1::Chain::default()
        };
        let spec = spec(&chain);
        assert_eq!(spec.relationships[0].conditions, None);
        assert_eq!(spec.relationships[0].transformation, None);
    }
}
