//! [`CatalogStore`] on PostgreSQL: nodes, extensions, runners, functions and the persisted catalog
//! state machine.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use legion_common::{ExtensionState, NodeStatus};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, int};
use crate::catalog::state::Event;
use crate::catalog::{Transition, on_register, on_report};
use crate::store::{
    CatalogStore, Error, ExtensionInfo, FunctionInfo, Heartbeat, HeartbeatReply, NodeExtensionInfo, NodeInfo,
    NodeRegistration, Result, RunnerInfo, Unserved,
};

#[derive(sqlx::FromRow)]
struct NodeExtensionRow {
    node: String,
    extension: String,
    state: String,
    reason: Option<String>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct NodeRow {
    name: String,
    region: String,
    version: String,
    status: String,
    concurrency: i32,
    started_at: DateTime<Utc>,
    last_heartbeat: DateTime<Utc>,
}

/// A transition to persist for one node-extension.
struct Change {
    node: String,
    extension: String,
    transition: Transition,
    reason: Option<String>,
}

#[async_trait]
impl CatalogStore for PgStore {
    async fn unregistered_tasks(&self, node: &str, ids: &[Uuid]) -> Result<Vec<Unserved>> {
        let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
            "SELECT t.id, split_part(t.function, '.', 1), ne.state FROM tasks t
             LEFT JOIN node_extensions ne ON ne.node = $2 AND ne.extension = split_part(t.function, '.', 1)
             WHERE t.id = ANY($1) AND (ne.state IS NULL OR ne.state NOT IN ('registered', 'loaded', 'running'))",
        )
        .bind(ids)
        .bind(node)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(task_id, extension, state)| Unserved { task_id, extension, state }).collect())
    }

    async fn register_node(&self, reg: &NodeRegistration) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO nodes (name, kind, region, version, status, concurrency, started_at, last_heartbeat)
             VALUES ($1, 'executor', $2, $3, 'active', $4, now(), now())
             ON CONFLICT (name) DO UPDATE SET region = excluded.region, version = excluded.version,
                 status = 'active', concurrency = excluded.concurrency, started_at = now(), last_heartbeat = now()",
        )
        .bind(&reg.name)
        .bind(&reg.region)
        .bind(&reg.version)
        .bind(int(reg.concurrency))
        .execute(&mut *tx)
        .await?;
        upsert_manifests(&mut tx, reg).await?;

        let names: Vec<&str> = reg.extensions.iter().map(|e| e.name.as_str()).collect();
        let disabled: HashMap<String, bool> =
            sqlx::query_as::<_, (String, bool)>("SELECT name, disabled FROM extensions WHERE name = ANY($1)")
                .bind(&names)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let current: HashMap<String, ExtensionState> = node_extension_states(&mut tx, &reg.name)
            .await?
            .into_iter()
            .map(|(extension, state, _)| (extension, state))
            .collect();
        let mut changes = Vec::new();
        for extension in &reg.extensions {
            let is_disabled = disabled.get(&extension.name).copied().unwrap_or(false);
            for transition in on_register(current.get(&extension.name).copied(), is_disabled) {
                changes.push(Change {
                    node: reg.name.clone(),
                    extension: extension.name.clone(),
                    transition,
                    reason: None,
                });
            }
        }
        persist_changes(&mut tx, &changes).await?;
        let disabled = disabled_extensions(&mut tx).await?;
        tx.commit().await?;
        Ok(disabled)
    }

    async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatReply> {
        let mut tx = self.pool.begin().await?;
        let previous: Option<(String,)> = sqlx::query_as(
            "UPDATE nodes n SET last_heartbeat = now(),
                 status = CASE WHEN $2 THEN 'draining' ELSE 'active' END
             FROM (SELECT name, status FROM nodes WHERE name = $1 FOR UPDATE) AS old
             WHERE n.name = old.name
             RETURNING old.status",
        )
        .bind(&hb.node)
        .bind(hb.draining)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((previous,)) = previous else {
            return Err(Error::NotFound(format!("node {:?} is not registered; call RegisterNode first", hb.node)));
        };
        if previous == NodeStatus::Lost.as_str() {
            tracing::info!(node = %hb.node, "lost node is heartbeating again");
        }
        let current: HashMap<String, (ExtensionState, Option<String>)> = node_extension_states(&mut tx, &hb.node)
            .await?
            .into_iter()
            .map(|(extension, state, reason)| (extension, (state, reason)))
            .collect();
        let mut changes = Vec::new();
        for report in &hb.extensions {
            let Some((state, reason)) = current.get(&report.extension) else {
                tracing::warn!(node = %hb.node, extension = %report.extension, "heartbeat reports an extension the node did not register");
                continue;
            };
            match on_report(*state, reason.as_deref(), report.state, report.reason.as_deref()) {
                Ok(None) => {}
                Ok(Some(transition)) => changes.push(Change {
                    node: hb.node.clone(),
                    extension: report.extension.clone(),
                    reason: if transition.to == ExtensionState::Failed { report.reason.clone() } else { None },
                    transition,
                }),
                Err(e) if *state == ExtensionState::Disabled => {
                    tracing::debug!(node = %hb.node, extension = %report.extension, error = %e, "report ignored: extension is disabled");
                }
                Err(e) => {
                    tracing::warn!(node = %hb.node, extension = %report.extension, error = %e, "invalid extension state report not applied");
                }
            }
        }
        persist_changes(&mut tx, &changes).await?;
        let ids: Vec<Uuid> = hb.running.iter().map(|(id, _)| *id).collect();
        let attempts: Vec<i32> = hb.running.iter().map(|(_, a)| int(*a)).collect();
        let abort: Vec<(Uuid, i32)> = sqlx::query_as(
            "SELECT u.id, u.attempt FROM UNNEST($1::uuid[], $2::int[]) WITH ORDINALITY AS u(id, attempt, n)
             LEFT JOIN tasks t ON t.id = u.id
             WHERE t.id IS NULL OR t.status <> 'running' OR t.attempt <> u.attempt OR t.node IS DISTINCT FROM $3
             ORDER BY u.n",
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(&hb.node)
        .fetch_all(&mut *tx)
        .await?;
        let disabled_extensions = disabled_extensions(&mut tx).await?;
        tx.commit().await?;
        let abort = abort.into_iter().map(|(id, attempt)| (id, u32::try_from(attempt).unwrap_or(0))).collect();
        Ok(HeartbeatReply { abort, disabled_extensions })
    }

    async fn touch_node(&self, node: &str, min_interval: Duration) -> Result<bool> {
        #[allow(clippy::cast_precision_loss)]
        let min_interval_ms = min_interval.as_millis() as f64;
        // The CTE reads the status before the update (its snapshot), for the return value only.
        let touched: Option<(String,)> = sqlx::query_as(
            "WITH old AS (SELECT status FROM nodes WHERE name = $1)
             UPDATE nodes SET last_heartbeat = now(),
                 status = CASE WHEN status = 'lost' THEN 'active' ELSE status END
             WHERE name = $1
               AND (status = 'lost' OR last_heartbeat < now() - $2::float8 * interval '1 millisecond')
             RETURNING (SELECT status FROM old)",
        )
        .bind(node)
        .bind(min_interval_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(touched.is_some_and(|(previous,)| previous == NodeStatus::Lost.as_str()))
    }

    async fn list_extensions(&self) -> Result<Vec<ExtensionInfo>> {
        let mut conn = self.pool.acquire().await?;
        load_extensions(&mut conn, None).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<NodeRow> = sqlx::query_as(
            "SELECT name, region, version, status, concurrency, started_at, last_heartbeat
             FROM nodes WHERE kind = 'executor' ORDER BY name",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut by_node: BTreeMap<String, Vec<NodeExtensionInfo>> = BTreeMap::new();
        for ne in node_extensions(&mut conn, None).await? {
            by_node.entry(ne.node.clone()).or_default().push(ne);
        }
        rows.into_iter()
            .map(|row| {
                Ok(NodeInfo {
                    extensions: by_node.remove(&row.name).unwrap_or_default(),
                    status: row
                        .status
                        .parse()
                        .map_err(|e: legion_common::status::Error| Error::Corrupt(format!("nodes.status: {e}")))?,
                    concurrency: u32::try_from(row.concurrency).unwrap_or(0),
                    name: row.name,
                    region: row.region,
                    version: row.version,
                    started_at: row.started_at,
                    last_heartbeat: row.last_heartbeat,
                })
            })
            .collect()
    }

    async fn set_extension_disabled(&self, name: &str, disabled: bool) -> Result<ExtensionInfo> {
        let mut tx = self.pool.begin().await?;
        let found: Option<(String,)> =
            sqlx::query_as("UPDATE extensions SET disabled = $2, updated_at = now() WHERE name = $1 RETURNING name")
                .bind(name)
                .bind(disabled)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Err(Error::NotFound(format!("name: unknown extension {name:?}")));
        }
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT node, state FROM node_extensions WHERE extension = $1 ORDER BY node FOR UPDATE")
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
        let event = if disabled { Event::Disable } else { Event::Enable };
        let mut changes = Vec::new();
        for (node, state) in rows {
            let state: ExtensionState =
                state.parse().map_err(|e: legion_common::status::Error| Error::Corrupt(e.to_string()))?;
            match crate::catalog::state::transition(state, event) {
                Ok(to) => changes.push(Change {
                    node,
                    extension: name.to_owned(),
                    transition: Transition { from: Some(state), to, event },
                    reason: None,
                }),
                Err(e) => tracing::debug!(node = %node, extension = %name, error = %e, "node-extension left as is"),
            }
        }
        persist_changes(&mut tx, &changes).await?;
        let mut extensions = load_extensions(&mut tx, Some(name)).await?;
        tx.commit().await?;
        extensions.pop().ok_or_else(|| Error::NotFound(format!("name: unknown extension {name:?}")))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Upserts the extensions, runners and functions of a registration, in name order.
async fn upsert_manifests(conn: &mut PgConnection, reg: &NodeRegistration) -> Result<()> {
    let mut extensions: Vec<(&str, &str)> =
        reg.extensions.iter().map(|e| (e.name.as_str(), e.version.as_str())).collect();
    extensions.sort_unstable();
    let (names, versions): (Vec<&str>, Vec<&str>) = extensions.into_iter().unzip();
    sqlx::query(
        "INSERT INTO extensions (name, version) SELECT * FROM UNNEST($1::text[], $2::text[])
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, updated_at = now()
         WHERE extensions.version IS DISTINCT FROM excluded.version",
    )
    .bind(&names)
    .bind(&versions)
    .execute(&mut *conn)
    .await?;
    let mut runners: Vec<(&str, &str)> = Vec::new();
    let mut functions: Vec<(&str, &str, &str, &str)> = Vec::new();
    for extension in &reg.extensions {
        for runner in &extension.runners {
            runners.push((&extension.name, &runner.name));
            for function in &runner.functions {
                functions.push((&extension.name, &runner.name, &function.name, &function.description));
            }
        }
    }
    runners.sort_unstable();
    runners.dedup();
    functions.sort_unstable();
    functions.dedup_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2));
    let (r_ext, r_name): (Vec<&str>, Vec<&str>) = runners.into_iter().unzip();
    sqlx::query(
        "INSERT INTO runners (extension, name) SELECT * FROM UNNEST($1::text[], $2::text[])
         ON CONFLICT (extension, name) DO NOTHING",
    )
    .bind(&r_ext)
    .bind(&r_name)
    .execute(&mut *conn)
    .await?;
    let f_ext: Vec<&str> = functions.iter().map(|f| f.0).collect();
    let f_runner: Vec<&str> = functions.iter().map(|f| f.1).collect();
    let f_name: Vec<&str> = functions.iter().map(|f| f.2).collect();
    let f_desc: Vec<&str> = functions.iter().map(|f| f.3).collect();
    sqlx::query(
        "INSERT INTO functions (extension, runner, name, description)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
         ON CONFLICT (extension, runner, name) DO UPDATE SET description = excluded.description
         WHERE functions.description IS DISTINCT FROM excluded.description",
    )
    .bind(&f_ext)
    .bind(&f_runner)
    .bind(&f_name)
    .bind(&f_desc)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The node-extension rows of `node`, locked: `(extension, state, reason)`.
async fn node_extension_states(
    conn: &mut PgConnection,
    node: &str,
) -> Result<Vec<(String, ExtensionState, Option<String>)>> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT extension, state, reason FROM node_extensions WHERE node = $1 ORDER BY extension FOR UPDATE",
    )
    .bind(node)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(extension, state, reason)| {
            let state = state.parse().map_err(|e: legion_common::status::Error| Error::Corrupt(e.to_string()))?;
            Ok((extension, state, reason))
        })
        .collect()
}

/// Stores the final state of each changed node-extension and appends every transition to the history.
async fn persist_changes(conn: &mut PgConnection, changes: &[Change]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    // The last change of each (node, extension) is its state now.
    let mut last: BTreeMap<(&str, &str), &Change> = BTreeMap::new();
    for change in changes {
        last.insert((&change.node, &change.extension), change);
    }
    let nodes: Vec<&str> = last.keys().map(|k| k.0).collect();
    let extensions: Vec<&str> = last.keys().map(|k| k.1).collect();
    let states: Vec<&str> = last.values().map(|c| c.transition.to.as_str()).collect();
    let reasons: Vec<Option<&str>> = last.values().map(|c| c.reason.as_deref()).collect();
    sqlx::query(
        "INSERT INTO node_extensions (node, extension, state, reason, updated_at)
         SELECT u.node, u.extension, u.state, u.reason, now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(node, extension, state, reason)
         ON CONFLICT (node, extension) DO UPDATE SET state = excluded.state, reason = excluded.reason,
             updated_at = now()",
    )
    .bind(&nodes)
    .bind(&extensions)
    .bind(&states)
    .bind(&reasons)
    .execute(&mut *conn)
    .await?;
    let nodes: Vec<&str> = changes.iter().map(|c| c.node.as_str()).collect();
    let extensions: Vec<&str> = changes.iter().map(|c| c.extension.as_str()).collect();
    let from: Vec<Option<&str>> = changes.iter().map(|c| c.transition.from.map(ExtensionState::as_str)).collect();
    let to: Vec<&str> = changes.iter().map(|c| c.transition.to.as_str()).collect();
    let events: Vec<&str> = changes.iter().map(|c| c.transition.event.as_str()).collect();
    sqlx::query(
        "INSERT INTO node_extension_transitions (node, extension, from_state, to_state, event)
         SELECT u.node, u.extension, u.from_state, u.to_state, u.event
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY
              AS u(node, extension, from_state, to_state, event, n)
         ORDER BY u.n",
    )
    .bind(&nodes)
    .bind(&extensions)
    .bind(&from)
    .bind(&to)
    .bind(&events)
    .execute(&mut *conn)
    .await?;
    for change in changes {
        tracing::info!(
            node = %change.node,
            extension = %change.extension,
            from = change.transition.from.map_or("none", ExtensionState::as_str),
            to = %change.transition.to,
            event = %change.transition.event,
            "extension state changed"
        );
    }
    Ok(())
}

async fn disabled_extensions(conn: &mut PgConnection) -> Result<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM extensions WHERE disabled ORDER BY name").fetch_all(conn).await?;
    Ok(rows.into_iter().map(|(name,)| name).collect())
}

/// Node-extension rows, of one extension or all, ordered by extension then node.
async fn node_extensions(conn: &mut PgConnection, extension: Option<&str>) -> Result<Vec<NodeExtensionInfo>> {
    let rows: Vec<NodeExtensionRow> = sqlx::query_as(
        "SELECT node, extension, state, reason, updated_at FROM node_extensions
         WHERE $1::text IS NULL OR extension = $1 ORDER BY extension, node",
    )
    .bind(extension)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let state = row.state.parse().map_err(|e: legion_common::status::Error| Error::Corrupt(e.to_string()))?;
            Ok(NodeExtensionInfo {
                node: row.node,
                extension: row.extension,
                state,
                reason: row.reason,
                updated_at: row.updated_at,
            })
        })
        .collect()
}

/// Extensions (one or all) with their runners, functions and node states.
async fn load_extensions(conn: &mut PgConnection, only: Option<&str>) -> Result<Vec<ExtensionInfo>> {
    let extensions: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT name, version, disabled FROM extensions WHERE $1::text IS NULL OR name = $1 ORDER BY name",
    )
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    let functions: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT r.extension, r.name, f.name, f.description FROM runners r
         LEFT JOIN functions f ON f.extension = r.extension AND f.runner = r.name
         WHERE $1::text IS NULL OR r.extension = $1
         ORDER BY r.extension, r.name, f.name",
    )
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    let mut runners: BTreeMap<String, Vec<RunnerInfo>> = BTreeMap::new();
    for (extension, runner, function, description) in functions {
        let list = runners.entry(extension).or_default();
        if list.last().is_none_or(|r| r.name != runner) {
            list.push(RunnerInfo { name: runner, functions: Vec::new() });
        }
        if let (Some(name), Some(current)) = (function, list.last_mut()) {
            current.functions.push(FunctionInfo { name, description: description.unwrap_or_default() });
        }
    }
    let mut nodes: BTreeMap<String, Vec<NodeExtensionInfo>> = BTreeMap::new();
    for ne in node_extensions(conn, only).await? {
        nodes.entry(ne.extension.clone()).or_default().push(ne);
    }
    Ok(extensions
        .into_iter()
        .map(|(name, version, disabled)| ExtensionInfo {
            runners: runners.remove(&name).unwrap_or_default(),
            nodes: nodes.remove(&name).unwrap_or_default(),
            name,
            version,
            disabled,
        })
        .collect())
}
