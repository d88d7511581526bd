//! Building the tasks of a batch's fires. What the checks need is read once per batch
//! ([`Lookups::read`]: one catalog query, then each distinct chain, creator key and policy set once);
//! then each fire is checked ([`Builder::prepare`]), its transformation (if any) evaluated by the
//! round ([`super::evaluate`]), and its task made ([`Builder::finish`]). A failed check fails the slot
//! with its reason (and pauses the schedule for a creator no longer authorized); a storage failure
//! abandons the batch (nothing is written, the next round decides again).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use legion_common::FunctionName;
use legion_common::settings::Limits;
use serde_json::Value;
use uuid::Uuid;

use super::plan::{
    Failure, check_access, check_args, check_catalog, check_chain, check_key, context, creator_key, required,
};
use crate::auth::Auth;
use crate::chains::Chain;
use crate::chains::transform::Transformation;
use crate::policy::Acl;
use crate::store::schedules::Schedule;
use crate::store::security::ApiKeyRecord;
use crate::store::{self, NewTask, Store};
use crate::tasks::submit::new_task;
use crate::tasks::validate::SubmitSpec;

/// Why a batch's lookups failed (transient: the batch is decided again later).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The catalog, a chain or a key could not be read.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A creator's policies could not be read.
    #[error("cannot read the policies of schedule creators: {0}")]
    Policies(String),
}

/// What the checks of a batch's fires need, read once per batch.
#[derive(Default)]
pub struct Lookups {
    /// Function → whether its extension is disabled; functions absent are not in the catalog.
    catalog: HashMap<String, bool>,
    /// Chain name → the chain as read now (`Ok(None)`: deleted; `Err`: its stored version is corrupt).
    chains: HashMap<String, Result<Option<Chain>, String>>,
    /// Creator key id → the key as read now (`None`: deleted).
    keys: HashMap<Uuid, Option<ApiKeyRecord>>,
    /// Sorted, deduplicated policy names → their merged ACL.
    acls: HashMap<Vec<String>, Arc<Acl>>,
}

fn policy_key(policies: &[String]) -> Vec<String> {
    let mut key = policies.to_vec();
    key.sort();
    key.dedup();
    key
}

impl Lookups {
    /// Reads what the fires of `schedules` need.
    ///
    /// # Errors
    /// [`Error`] when the database cannot be read.
    pub async fn read(store: &dyn Store, auth: &Auth, schedules: &[&Schedule]) -> Result<Self, Error> {
        let mut lookups = Self::default();
        if schedules.is_empty() {
            return Ok(lookups);
        }
        let mut functions: Vec<String> = schedules.iter().map(|s| s.spec.function.clone()).collect();
        functions.sort_unstable();
        functions.dedup();
        lookups.catalog = store.function_status(&functions).await?;
        for schedule in schedules {
            let spec = &schedule.spec;
            if let Some(name) = &spec.chain
                && !lookups.chains.contains_key(name)
            {
                let chain = match store.get_chain(name).await {
                    Ok(chain) => Ok(chain),
                    Err(store::Error::Corrupt(e)) => Err(format!("chain {name:?} cannot be read: {e}")),
                    Err(e) => return Err(e.into()),
                };
                lookups.chains.insert(name.clone(), chain);
            }
            if let Some(id) = creator_key(&spec.created_by)
                && !lookups.keys.contains_key(&id)
            {
                lookups.keys.insert(id, auth.store().get_api_key(id).await?);
            }
            let key = policy_key(&spec.policies);
            if let std::collections::hash_map::Entry::Vacant(entry) = lookups.acls.entry(key) {
                let acl = auth.acl(entry.key()).await.map_err(|status| Error::Policies(status.message().to_owned()))?;
                entry.insert(acl);
            }
        }
        Ok(lookups)
    }
}

/// The args of a fire, once its checks passed.
#[derive(Debug)]
pub enum Args {
    /// The schedule's args (no transformation).
    Ready(Value),
    /// To be evaluated: the transformation and its input (`{"args", "schedule"}`).
    Transform {
        /// The parsed transformation.
        transformation: Transformation,
        /// Its input.
        context: Value,
    },
}

/// A fire whose checks passed, waiting for its args ([`Builder::finish`]).
#[derive(Debug)]
pub struct Prepared<'s> {
    schedule: &'s Schedule,
    function: FunctionName,
    chain_version: Option<i64>,
}

/// Checks fires and builds their tasks.
pub struct Builder<'a> {
    /// The batch's lookups.
    pub lookups: &'a Lookups,
    /// The limits in force.
    pub limits: &'a Limits,
    /// The tick's instant (database clock): the transformation's `schedule.fired_at`, and when keys
    /// must still be valid.
    pub now: DateTime<Utc>,
}

impl Builder<'_> {
    /// Checks `schedule`'s fire of `slot` and says where its args come from.
    ///
    /// # Errors
    /// Why the slot fails: the function left the catalog or its extension is disabled, the chain is
    /// gone or no longer starts from the function, the stored transformation no longer parses
    /// ([`Failure::Slot`]); or the creator is no longer authorized ([`Failure::Unauthorized`]).
    pub fn prepare<'s>(&self, schedule: &'s Schedule, slot: DateTime<Utc>) -> Result<(Prepared<'s>, Args), Failure> {
        let spec = &schedule.spec;
        let function = FunctionName::parse(&spec.function).map_err(|e| Failure::Slot(format!("function: {e}")))?;
        check_catalog(&self.lookups.catalog, &spec.function).map_err(Failure::Slot)?;
        let chain = match &spec.chain {
            None => None,
            Some(name) => {
                let read = match self.lookups.chains.get(name) {
                    Some(Ok(chain)) => chain.as_ref(),
                    Some(Err(corrupt)) => return Err(Failure::Slot(corrupt.clone())),
                    None => None,
                };
                Some(check_chain(read, name, &spec.function).map_err(Failure::Slot)?)
            }
        };
        if let Some(id) = creator_key(&spec.created_by) {
            check_key(&spec.created_by, self.lookups.keys.get(&id).and_then(Option::as_ref), self.now)
                .map_err(Failure::Unauthorized)?;
        }
        let acl = self
            .lookups
            .acls
            .get(&policy_key(&spec.policies))
            .ok_or_else(|| Failure::Slot(format!("the policies of creator {} were not read", spec.created_by)))?;
        check_access(&spec.created_by, acl, &required(&spec.function, chain)).map_err(Failure::Unauthorized)?;
        let args = match &spec.transformation {
            None => Args::Ready(spec.args.clone()),
            Some(document) => {
                let transformation =
                    Transformation::parse(document, "transformation", self.limits.max_transformation_bytes)
                        .map_err(|e| Failure::Slot(e.to_string()))?;
                Args::Transform { transformation, context: context(&spec.args, &spec.name, slot, self.now) }
            }
        };
        Ok((Prepared { schedule, function, chain_version: chain.map(|c| c.version) }, args))
    }

    /// The task of a prepared fire with `args` (the schedule's, or its transformation's output): owned
    /// by the creator, no idempotency key, no delay, the chain (if any) pinned to its current version.
    ///
    /// # Errors
    /// [`Failure::Slot`] when the args are not acceptable ([`check_args`]).
    pub fn finish(&self, prepared: Prepared<'_>, args: Value) -> Result<NewTask, Failure> {
        let spec = &prepared.schedule.spec;
        let (args, args_json) = check_args(args, self.limits).map_err(Failure::Slot)?;
        Ok(new_task(SubmitSpec {
            function: prepared.function,
            args,
            args_json,
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            timeout_ms: spec.timeout_ms,
            delay_ms: 0,
            idempotency_key: None,
            region: spec.region.clone(),
            owner: spec.created_by.clone(),
            chain: spec.chain.clone(),
            chain_version: prepared.chain_version,
            retry: spec.retry,
        }))
    }
}
