//! [`DeliveryStore`] on PostgreSQL: lock the batch's tasks in id order, plan with the pure deciders of
//! [`crate::delivery`], write the plan with set-based SQL, commit.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use legion_common::TaskStatus;
use sqlx::PgConnection;
use uuid::Uuid;

use super::outbox::{DispatchRow, NewOutbox, dispatch_columns, insert_outbox};
use super::{PgStore, StateRow, chains, int, state_columns, with_retries};
use crate::delivery::complete::{self, CompleteItem, ResultLimits, Verdict};
use crate::delivery::lost::Cause;
use crate::delivery::start::{self, Decision, StartItem};
use crate::delivery::{Backoff, Plan, TaskState, deadline, lost};
use crate::events::StatusChange;
use crate::store::{DeliveryStore, Error, Expiry, Result};

#[async_trait]
impl DeliveryStore for PgStore {
    async fn start(
        &self,
        node: &str,
        items: &[StartItem],
        delivery_limit: u32,
    ) -> Result<(Vec<Decision>, Vec<StatusChange>)> {
        with_retries("start tasks", || async {
            let mut tx = self.pool.begin().await?;
            let states = lock_states(&mut tx, &start::task_ids(items)).await?;
            let (decisions, plan) = start::plan(states, items, node, delivery_limit);
            apply_plan(&mut tx, &plan).await?;
            tx.commit().await?;
            Ok((decisions, plan.changes))
        })
        .await
    }

    async fn complete(
        &self,
        items: &[CompleteItem],
        limits: ResultLimits,
    ) -> Result<(Vec<Verdict>, Vec<StatusChange>)> {
        with_retries("complete tasks", || async {
            let mut tx = self.pool.begin().await?;
            let states = lock_states(&mut tx, &complete::task_ids(items)).await?;
            let chained: HashSet<Uuid> = states.iter().filter(|s| s.chain_version.is_some()).map(|s| s.id).collect();
            let mut draw = || rand::random::<f64>();
            let mut backoff = Backoff { defaults: self.default_retry(), draw: &mut draw };
            let (verdicts, plan) = complete::plan(states, items, limits, &mut backoff);
            apply_plan(&mut tx, &plan).await?;
            let mut changes = plan.changes;
            if let Some(firing) = self.firing.as_ref().filter(|_| !chained.is_empty()) {
                let succeeded: Vec<(Uuid, &str)> = plan
                    .updates
                    .iter()
                    .filter(|u| u.state.status == TaskStatus::Succeeded && chained.contains(&u.state.id))
                    .filter_map(|u| u.result.as_deref().map(|r| (u.state.id, r)))
                    .collect();
                if !succeeded.is_empty() {
                    let parents = chains::parents(&mut tx, &succeeded).await?;
                    let versions = chains::versions(&mut tx, &parents, firing.cache()).await?;
                    let children = firing.children(&parents, &versions).await;
                    let children = chains::cap_runs(&mut tx, children, firing.max_run_tasks()).await?;
                    changes.extend(chains::insert_children(&mut tx, &children, &self.retry).await?);
                }
            }
            tx.commit().await?;
            Ok((verdicts, changes))
        })
        .await
    }

    async fn expire_nodes(&self, lease: Duration, delivery_limit: u32) -> Result<Expiry> {
        #[allow(clippy::cast_precision_loss)]
        let lease_ms = lease.as_millis() as f64;
        with_retries("expire nodes", || async {
            let mut tx = self.pool.begin().await?;
            // A node row locked right now belongs to a call in progress: the node is alive, skip it.
            let nodes: Vec<(String,)> = sqlx::query_as(
                "UPDATE nodes n SET status = 'lost'
                 FROM (SELECT name FROM nodes
                       WHERE kind = 'executor' AND status <> 'lost'
                         AND last_heartbeat < now() - $1::float8 * interval '1 millisecond'
                       ORDER BY name FOR UPDATE SKIP LOCKED) AS silent
                 WHERE n.name = silent.name
                 RETURNING n.name",
            )
            .bind(lease_ms)
            .fetch_all(&mut *tx)
            .await?;
            if nodes.is_empty() {
                return Ok(Expiry::default());
            }
            let nodes: Vec<String> = nodes.into_iter().map(|(name,)| name).collect();
            // Not SKIP LOCKED: every running task of a lost node must be recovered in this sweep, the
            // only one for this loss. A task being completed meanwhile is re-checked after its commit.
            let rows: Vec<StateRow> = sqlx::query_as(concat!(
                "SELECT ",
                state_columns!(),
                " FROM tasks WHERE status = 'running' AND node = ANY($1) ORDER BY id FOR UPDATE"
            ))
            .bind(&nodes)
            .fetch_all(&mut *tx)
            .await?;
            let states = rows.into_iter().map(TaskState::try_from).collect::<Result<Vec<_>>>()?;
            let plan = lost::plan(states, delivery_limit, Cause::Silent);
            apply_plan(&mut tx, &plan).await?;
            tx.commit().await?;
            Ok(Expiry { nodes, changes: plan.changes })
        })
        .await
    }

    async fn expire_attempts(&self, lease: Duration, limit: u32) -> Result<Vec<StatusChange>> {
        #[allow(clippy::cast_precision_loss)]
        let lease_ms = lease.as_millis() as f64;
        with_retries("expire attempts", || async {
            let mut tx = self.pool.begin().await?;
            // Tasks being completed or started right now are skipped: the next sweep sees them again
            // if they are still overdue.
            let rows: Vec<StateRow> = sqlx::query_as(concat!(
                "SELECT ",
                state_columns!(),
                " FROM tasks
                 WHERE status = 'running'
                   AND EXISTS (SELECT 1 FROM task_attempts a
                               WHERE a.task_id = tasks.id AND a.attempt = tasks.attempt AND a.status = 'running'
                                 AND a.started_at < now() - (tasks.timeout_ms + $1::float8)
                                                            * interval '1 millisecond')
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
            ))
            .bind(lease_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let states = rows.into_iter().map(TaskState::try_from).collect::<Result<Vec<_>>>()?;
            let mut draw = || rand::random::<f64>();
            let mut backoff = Backoff { defaults: self.default_retry(), draw: &mut draw };
            let plan = deadline::plan(states, lease, &mut backoff);
            apply_plan(&mut tx, &plan).await?;
            tx.commit().await?;
            Ok(plan.changes)
        })
        .await
    }

    async fn stop_node(&self, node: &str, delivery_limit: u32) -> Result<Vec<StatusChange>> {
        with_retries("stop node", || async {
            let mut tx = self.pool.begin().await?;
            let known: Option<(String,)> =
                sqlx::query_as("SELECT name FROM nodes WHERE name = $1 AND kind = 'executor' FOR UPDATE")
                    .bind(node)
                    .fetch_optional(&mut *tx)
                    .await?;
            if known.is_none() {
                return Err(Error::NotFound(format!("node {node:?} is not registered; call RegisterNode first")));
            }
            let rows: Vec<StateRow> = sqlx::query_as(concat!(
                "SELECT ",
                state_columns!(),
                " FROM tasks WHERE status = 'running' AND node = $1 ORDER BY id FOR UPDATE"
            ))
            .bind(node)
            .fetch_all(&mut *tx)
            .await?;
            let states = rows.into_iter().map(TaskState::try_from).collect::<Result<Vec<_>>>()?;
            let plan = lost::plan(states, delivery_limit, Cause::Stopped);
            apply_plan(&mut tx, &plan).await?;
            // Its node_extensions rows go with it (ON DELETE CASCADE); the transition history stays.
            sqlx::query("DELETE FROM nodes WHERE name = $1").bind(node).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(plan.changes)
        })
        .await
    }
}

/// Locks the rows of `ids` (sorted) and reads their states; unknown ids are absent.
async fn lock_states(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<TaskState>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<StateRow> =
        sqlx::query_as(concat!("SELECT ", state_columns!(), " FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE"))
            .bind(ids)
            .fetch_all(conn)
            .await?;
    rows.into_iter().map(TaskState::try_from).collect()
}

/// Writes a plan: task rows, new and ended attempt rows, and the outbox rows of redispatched tasks.
async fn apply_plan(conn: &mut PgConnection, plan: &Plan) -> Result<()> {
    update_tasks(conn, plan).await?;
    insert_attempts(conn, plan).await?;
    end_attempts(conn, plan).await?;
    let redispatched: Vec<Uuid> = plan.updates.iter().filter(|u| u.redispatch).map(|u| u.state.id).collect();
    if !redispatched.is_empty() {
        let rows: Vec<DispatchRow> =
            sqlx::query_as(concat!("SELECT ", dispatch_columns!(), " FROM tasks WHERE id = ANY($1) ORDER BY id"))
                .bind(&redispatched)
                .fetch_all(&mut *conn)
                .await?;
        let outbox: Vec<NewOutbox> = rows.iter().map(DispatchRow::outbox).collect();
        insert_outbox(conn, &outbox).await?;
    }
    Ok(())
}

async fn update_tasks(conn: &mut PgConnection, plan: &Plan) -> Result<()> {
    if plan.updates.is_empty() {
        return Ok(());
    }
    let n = plan.updates.len();
    let mut ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let (mut attempts, mut failures, mut dispatches, mut redeliveries) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut nodes = Vec::with_capacity(n);
    let (mut started, mut finished, mut set_error) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut errors, mut results) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut waits: Vec<Option<i64>> = Vec::with_capacity(n);
    for update in &plan.updates {
        let s = &update.state;
        ids.push(s.id);
        statuses.push(s.status.as_str());
        attempts.push(int(s.attempt));
        failures.push(int(s.failures));
        dispatches.push(int(s.dispatch));
        redeliveries.push(int(s.redeliveries));
        nodes.push(s.node.as_deref());
        started.push(update.started);
        finished.push(update.finished);
        set_error.push(update.error.is_some());
        errors.push(update.error.clone().flatten());
        results.push(update.result.as_deref());
        waits.push(update.not_before_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)));
    }
    sqlx::query(
        "UPDATE tasks t SET
             status = u.status, attempt = u.attempt, failures = u.failures, dispatch = u.dispatch,
             redeliveries = u.redeliveries, node = u.node,
             started_at = CASE WHEN u.started THEN COALESCE(t.started_at, now()) ELSE t.started_at END,
             finished_at = CASE WHEN u.finished THEN now() ELSE t.finished_at END,
             error = CASE WHEN u.set_error THEN u.error ELSE t.error END,
             result = CASE WHEN u.result IS NOT NULL THEN u.result::jsonb ELSE t.result END,
             not_before = CASE WHEN u.wait_ms IS NOT NULL
                               THEN now() + u.wait_ms::float8 * interval '1 millisecond'
                               ELSE t.not_before END
         FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::int[], $5::int[], $6::int[], $7::text[],
                     $8::bool[], $9::bool[], $10::bool[], $11::text[], $12::text[], $13::int8[])
              AS u(id, status, attempt, failures, dispatch, redeliveries, node, started, finished, set_error,
                   error, result, wait_ms)
         WHERE t.id = u.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&attempts)
    .bind(&failures)
    .bind(&dispatches)
    .bind(&redeliveries)
    .bind(&nodes)
    .bind(&started)
    .bind(&finished)
    .bind(&set_error)
    .bind(&errors)
    .bind(&results)
    .bind(&waits)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_attempts(conn: &mut PgConnection, plan: &Plan) -> Result<()> {
    if plan.new_attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = plan.new_attempts.iter().map(|a| a.task_id).collect();
    let attempts: Vec<i32> = plan.new_attempts.iter().map(|a| int(a.attempt)).collect();
    let nodes: Vec<&str> = plan.new_attempts.iter().map(|a| a.node.as_str()).collect();
    let statuses: Vec<&str> = plan.new_attempts.iter().map(|a| a.status.as_str()).collect();
    let errors: Vec<Option<&str>> = plan.new_attempts.iter().map(|a| a.error.as_deref()).collect();
    sqlx::query(
        "INSERT INTO task_attempts (task_id, attempt, node, status, error, finished_at)
         SELECT u.task_id, u.attempt, u.node, u.status, u.error,
                CASE WHEN u.status = 'running' THEN NULL ELSE now() END
         FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[])
              AS u(task_id, attempt, node, status, error)
         ON CONFLICT (task_id, attempt) DO UPDATE SET
             node = excluded.node, status = excluded.status, error = excluded.error,
             started_at = excluded.started_at, finished_at = excluded.finished_at, duration_ms = NULL",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&nodes)
    .bind(&statuses)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}

async fn end_attempts(conn: &mut PgConnection, plan: &Plan) -> Result<()> {
    if plan.ended_attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = plan.ended_attempts.iter().map(|a| a.task_id).collect();
    let attempts: Vec<i32> = plan.ended_attempts.iter().map(|a| int(a.attempt)).collect();
    let statuses: Vec<&str> = plan.ended_attempts.iter().map(|a| a.status.as_str()).collect();
    let errors: Vec<Option<&str>> = plan.ended_attempts.iter().map(|a| a.error.as_deref()).collect();
    let durations: Vec<Option<i64>> =
        plan.ended_attempts.iter().map(|a| a.duration_ms.map(|d| i64::try_from(d).unwrap_or(i64::MAX))).collect();
    sqlx::query(
        "UPDATE task_attempts a SET status = u.status, error = u.error, finished_at = now(),
                                    duration_ms = u.duration_ms
         FROM UNNEST($1::uuid[], $2::int[], $3::text[], $4::text[], $5::int8[])
              AS u(task_id, attempt, status, error, duration_ms)
         WHERE a.task_id = u.task_id AND a.attempt = u.attempt",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&statuses)
    .bind(&errors)
    .bind(&durations)
    .execute(conn)
    .await?;
    Ok(())
}
