//! [`ChainStore`] on PostgreSQL, and the part of `CompleteTask` that fires chains: reading the parents
//! and their chain versions, and inserting the children with their outbox rows.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use legion_common::TaskStatus;
use legion_common::broker::TASK_EXCHANGE;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, int, with_retries};
use crate::chains::compiled::{ChainCache, CompiledChain};
use crate::chains::fire::{Child, Parent};
use crate::chains::{Chain, Definition};
use crate::events::StatusChange;
use crate::store::chains::{Applied, ChainStore};
use crate::store::{Error, Result};

#[derive(sqlx::FromRow)]
struct ChainRow {
    name: String,
    version: i64,
    definition: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    updated_by: String,
}

impl TryFrom<ChainRow> for Chain {
    type Error = Error;

    fn try_from(row: ChainRow) -> Result<Self> {
        let definition: Definition = serde_json::from_value(row.definition)
            .map_err(|e| Error::Corrupt(format!("chain_versions.definition of {}: {e}", row.name)))?;
        Ok(Chain {
            name: row.name,
            version: row.version,
            definition,
            created_at: row.created_at,
            updated_at: row.updated_at,
            updated_by: row.updated_by,
        })
    }
}

/// Selects [`ChainRow`]s: a chain with its current version's definition.
macro_rules! chain_select {
    () => {
        "SELECT c.name, c.version, v.definition, c.created_at, c.updated_at, c.updated_by
         FROM chains c JOIN chain_versions v ON v.id = c.version"
    };
}

/// Whether two definitions say the same, relationship ids aside.
fn same_definition(a: &Definition, b: &Definition) -> bool {
    let strip = |d: &Definition| {
        let mut d = d.clone();
        for r in &mut d.relationships {
            r.id = Uuid::nil();
        }
        d
    };
    strip(a) == strip(b)
}

#[async_trait]
impl ChainStore for PgStore {
    async fn apply_chain(&self, name: &str, definition: &Definition, actor: &str) -> Result<Applied> {
        let json = serde_json::to_value(definition).map_err(|e| Error::InvalidData(e.to_string()))?;
        with_retries("apply chain", || async {
            let mut tx = self.pool.begin().await?;
            let current: Option<ChainRow> =
                sqlx::query_as(concat!(chain_select!(), " WHERE c.name = $1 FOR UPDATE OF c"))
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(row) = current {
                let chain = Chain::try_from(row)?;
                if same_definition(&chain.definition, definition) {
                    return Ok(Applied { chain, created: false, changed: false });
                }
            }
            let (version,): (i64,) = sqlx::query_as("SELECT nextval(pg_get_serial_sequence('chain_versions', 'id'))")
                .fetch_one(&mut *tx)
                .await?;
            // A concurrent create of the same name loses on the primary key (23505, retried as a replace
            // would not be: the caller sees ALREADY_EXISTS only if it keeps losing).
            let (created,): (bool,) = sqlx::query_as(
                "INSERT INTO chains (name, description, version, updated_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE
                     SET description = excluded.description, version = excluded.version,
                         updated_by = excluded.updated_by, updated_at = now()
                 RETURNING (xmax = 0)",
            )
            .bind(name)
            .bind(&definition.description)
            .bind(version)
            .bind(actor)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO chain_versions (id, chain, definition, created_by) VALUES ($1, $2, $3, $4)")
                .bind(version)
                .bind(name)
                .bind(&json)
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            let row: ChainRow =
                sqlx::query_as(concat!(chain_select!(), " WHERE c.name = $1")).bind(name).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(Applied { chain: Chain::try_from(row)?, created, changed: true })
        })
        .await
    }

    async fn get_chain(&self, name: &str) -> Result<Option<Chain>> {
        let row: Option<ChainRow> = sqlx::query_as(concat!(chain_select!(), " WHERE c.name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Chain::try_from).transpose()
    }

    async fn list_chains(&self, after: Option<&str>, limit: u32) -> Result<(Vec<Chain>, bool)> {
        let rows: Vec<ChainRow> =
            sqlx::query_as(concat!(chain_select!(), " WHERE $1::text IS NULL OR c.name > $1 ORDER BY c.name LIMIT $2"))
                .bind(after)
                .bind(i64::from(limit) + 1)
                .fetch_all(&self.pool)
                .await?;
        let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        let chains = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(Chain::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok((chains, more))
    }

    async fn delete_chain(&self, name: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM chains WHERE name = $1").bind(name).execute(&self.pool).await?;
        Ok(deleted.rows_affected() > 0)
    }
}

#[derive(sqlx::FromRow)]
struct ParentRow {
    id: Uuid,
    function: String,
    args: serde_json::Value,
    chain: Option<String>,
    chain_version: Option<i64>,
    root_id: Option<Uuid>,
    parent_id: Option<Uuid>,
    relationship_id: Option<Uuid>,
    depth: i32,
    attempt: i32,
    priority: i16,
    region: Option<String>,
    owner: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
}

/// Reads the parents among `succeeded` (task id, result JSON text) that belong to a chain run.
pub(super) async fn parents(conn: &mut PgConnection, succeeded: &[(Uuid, &str)]) -> Result<Vec<Parent>> {
    let ids: Vec<Uuid> = succeeded.iter().map(|(id, _)| *id).collect();
    let rows: Vec<ParentRow> = sqlx::query_as(
        "SELECT id, function, args, chain, chain_version, root_id, parent_id, relationship_id, depth, attempt,
                priority, region, owner, created_at, started_at
         FROM tasks WHERE id = ANY($1) AND chain_version IS NOT NULL ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let results: HashMap<Uuid, &str> = succeeded.iter().copied().collect();
    rows.into_iter()
        .map(|row| {
            let text = results.get(&row.id).copied().unwrap_or("null");
            let result =
                serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("result of {}: {e}", row.id)))?;
            Ok(Parent {
                id: row.id,
                function: row.function,
                args: row.args,
                result,
                chain: row.chain.unwrap_or_default(),
                chain_version: row.chain_version.unwrap_or_default(),
                root_id: row.root_id.unwrap_or(row.id),
                parent_id: row.parent_id,
                relationship_id: row.relationship_id,
                depth: u32::try_from(row.depth).unwrap_or(0),
                attempt: u32::try_from(row.attempt).unwrap_or(0),
                priority: u8::try_from(row.priority.clamp(0, 9)).unwrap_or(0),
                region: row.region,
                owner: row.owner,
                created_at: row.created_at,
                started_at: row.started_at,
            })
        })
        .collect()
}

/// The parsed chain versions of `parents` that still exist (a deleted chain's versions are gone), from
/// `cache` or read and parsed now. The existence check runs in the transaction, so a delete committed
/// before it stops the run.
pub(super) async fn versions(
    conn: &mut PgConnection,
    parents: &[Parent],
    cache: &ChainCache,
) -> Result<HashMap<i64, Arc<CompiledChain>>> {
    let mut wanted: Vec<i64> = parents.iter().map(|p| p.chain_version).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let uncached: Vec<i64> = wanted.iter().copied().filter(|v| cache.get(*v).is_none()).collect();
    let rows: Vec<(i64, Option<serde_json::Value>)> =
        sqlx::query_as("SELECT id, CASE WHEN id = ANY($2) THEN definition END FROM chain_versions WHERE id = ANY($1)")
            .bind(&wanted)
            .bind(&uncached)
            .fetch_all(&mut *conn)
            .await?;
    let mut chains = HashMap::with_capacity(rows.len());
    for (id, definition) in rows {
        let compiled = match (cache.get(id), definition) {
            (Some(compiled), _) => compiled,
            (None, Some(definition)) => {
                let definition: Definition = serde_json::from_value(definition)
                    .map_err(|e| Error::Corrupt(format!("chain_versions.definition {id}: {e}")))?;
                match CompiledChain::compile(id, &definition) {
                    Ok(compiled) => cache.insert(compiled),
                    Err(e) => {
                        tracing::error!(chain_version = id, error = %e, "stored chain version does not parse; it fires nothing");
                        continue;
                    }
                }
            }
            (None, None) => continue,
        };
        chains.insert(id, compiled);
    }
    Ok(chains)
}

/// Locks the roots of `children`'s runs (in id order), keeps the runs within `max_run_tasks`
/// ([`crate::chains::fire::cap_run`]) and adds what each run gains to its root's `run_tasks`.
pub(super) async fn cap_runs(conn: &mut PgConnection, children: Vec<Child>, max_run_tasks: u32) -> Result<Vec<Child>> {
    if children.is_empty() {
        return Ok(children);
    }
    let mut roots: Vec<Uuid> = children.iter().map(|c| c.root_id).collect();
    roots.sort_unstable();
    roots.dedup();
    let rows: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT id, run_tasks FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&roots)
            .fetch_all(&mut *conn)
            .await?;
    let sizes: HashMap<Uuid, u32> = rows.into_iter().map(|(id, n)| (id, u32::try_from(n).unwrap_or(0))).collect();
    let (kept, added) = crate::chains::fire::cap_run(children, &sizes, max_run_tasks);
    let (ids, counts): (Vec<Uuid>, Vec<i32>) = added.into_iter().map(|(id, n)| (id, int(n))).unzip();
    sqlx::query(
        "UPDATE tasks t SET run_tasks = t.run_tasks + u.added
         FROM UNNEST($1::uuid[], $2::int[]) AS u(id, added) WHERE t.id = u.id",
    )
    .bind(&ids)
    .bind(&counts)
    .execute(&mut *conn)
    .await?;
    Ok(kept)
}

/// Inserts children (a relationship creates each child of a parent once: the unique index on
/// `(parent_id, relationship_id, fanout_index)` drops a repeat) and the outbox rows of the `pending`
/// ones. Returns the status changes of the inserted children.
///
/// Each child's retry policy is its relationship's fields over `retry` (the `retry.*` settings), see
/// [`crate::delivery::retry::merge`].
pub(super) async fn insert_children(
    conn: &mut PgConnection,
    children: &[Child],
    retry: &legion_common::settings::RetrySettings,
) -> Result<Vec<StatusChange>> {
    if children.is_empty() {
        return Ok(Vec::new());
    }
    let n = children.len();
    let mut c = ChildColumns::default();
    for child in children {
        c.push(child, retry)?;
    }
    let inserted: Vec<(Uuid, String)> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int2[],
                                  $7::int[], $8::int[], $9::int8[], $10::text[], $11::int8[], $12::uuid[],
                                  $13::uuid[], $14::uuid[], $15::int[], $16::int[], $17::text[], $18::text[],
                                  $19::text[], $20::bytea[], $22::text[])
                 WITH ORDINALITY AS u(id, function, status, args, error, priority, max_attempts, timeout_ms,
                                      delay_ms, chain, chain_version, root_id, parent_id, relationship_id,
                                      depth, fanout_index, owner, region, routing_key, payload, retry, n)
         ),
         ins AS (
             INSERT INTO tasks (id, function, status, args, error, priority, max_attempts, timeout_ms, dispatch,
                                chain, chain_version, root_id, parent_id, relationship_id, depth, fanout_index,
                                owner, region, not_before, finished_at, retry)
             SELECT id, function, status, args::jsonb, error, priority, max_attempts, timeout_ms,
                    CASE WHEN status = 'pending' THEN 1 ELSE 0 END,
                    chain, chain_version, root_id, parent_id, relationship_id, depth, fanout_index, owner, region,
                    CASE WHEN status = 'scheduled' THEN now() + delay_ms::float8 * interval '1 millisecond' END,
                    CASE WHEN status IN ('skipped', 'failed') THEN now() END, retry::jsonb
             FROM input ORDER BY n
             ON CONFLICT (parent_id, relationship_id, fanout_index) WHERE parent_id IS NOT NULL DO NOTHING
             RETURNING id, status
         ),
         queued AS (
             INSERT INTO outbox (task_id, exchange, routing_key, priority, payload)
             SELECT input.id, $21, input.routing_key, input.priority, input.payload
             FROM input JOIN ins ON ins.id = input.id
             WHERE input.status = 'pending'
             ORDER BY input.n
         )
         SELECT id, status FROM ins",
    )
    .bind(&c.ids)
    .bind(&c.functions)
    .bind(&c.statuses)
    .bind(&c.args)
    .bind(&c.errors)
    .bind(&c.priorities)
    .bind(&c.max_attempts)
    .bind(&c.timeouts)
    .bind(&c.delays)
    .bind(&c.chains)
    .bind(&c.versions)
    .bind(&c.roots)
    .bind(&c.parents)
    .bind(&c.relationships)
    .bind(&c.depths)
    .bind(&c.fanout)
    .bind(&c.owners)
    .bind(&c.regions)
    .bind(&c.routing_keys)
    .bind(&c.payloads)
    .bind(TASK_EXCHANGE)
    .bind(&c.retries)
    .fetch_all(&mut *conn)
    .await?;
    if inserted.len() < n {
        tracing::warn!(
            expected = n,
            inserted = inserted.len(),
            "some chain children existed already and were not created again"
        );
    }
    inserted
        .into_iter()
        .map(|(task_id, status)| {
            let status: TaskStatus =
                status.parse().map_err(|e: legion_common::status::Error| Error::Corrupt(e.to_string()))?;
            Ok(StatusChange { task_id, status, attempt: 0 })
        })
        .collect()
}

/// The arrays bound to the children insert.
#[derive(Default)]
struct ChildColumns {
    ids: Vec<Uuid>,
    functions: Vec<String>,
    statuses: Vec<&'static str>,
    args: Vec<String>,
    errors: Vec<Option<String>>,
    priorities: Vec<i16>,
    max_attempts: Vec<i32>,
    timeouts: Vec<i32>,
    delays: Vec<i64>,
    chains: Vec<String>,
    versions: Vec<i64>,
    roots: Vec<Uuid>,
    parents: Vec<Uuid>,
    relationships: Vec<Uuid>,
    depths: Vec<i32>,
    fanout: Vec<i32>,
    owners: Vec<String>,
    regions: Vec<Option<String>>,
    routing_keys: Vec<String>,
    payloads: Vec<Vec<u8>>,
    retries: Vec<String>,
}

impl ChildColumns {
    fn push(&mut self, child: &Child, retry: &legion_common::settings::RetrySettings) -> Result<()> {
        self.ids.push(child.id);
        self.functions.push(child.function.clone());
        self.statuses.push(child.status.as_str());
        self.args.push(child.args_json.clone());
        self.errors.push(child.error.clone());
        self.priorities.push(i16::from(child.priority));
        self.max_attempts.push(int(child.max_attempts));
        self.timeouts.push(int(child.timeout_ms));
        self.delays.push(i64::try_from(child.delay_ms).unwrap_or(i64::MAX));
        self.chains.push(child.chain.clone());
        self.versions.push(child.chain_version);
        self.roots.push(child.root_id);
        self.parents.push(child.parent_id);
        self.relationships.push(child.relationship_id);
        self.depths.push(int(child.depth));
        self.fanout.push(int(child.fanout_index));
        self.owners.push(child.owner.clone());
        self.regions.push(child.region.clone());
        self.routing_keys.push(child.routing_key.clone());
        self.payloads.push(child.payload.clone());
        let policy = crate::delivery::retry::merge(&child.retry, retry);
        self.retries.push(serde_json::to_string(&policy).map_err(|e| Error::InvalidData(format!("retry: {e}")))?);
        Ok(())
    }
}
