//! [`OutboxStore`] on PostgreSQL: claims with `FOR UPDATE SKIP LOCKED` inside a transaction that stays
//! open while the publisher waits for the broker's confirms, so several replicas share the outbox.

use std::collections::HashSet;

use async_trait::async_trait;
use legion_common::TaskStatus;
use legion_common::broker::TASK_EXCHANGE;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::PgStore;
use crate::dispatch::message;
use crate::events::StatusChange;
use crate::store::{OutboxClaim, OutboxRow, OutboxStore, Result};

/// An outbox row to write with a task change.
#[derive(Debug, Clone)]
pub(crate) struct NewOutbox {
    pub task_id: Uuid,
    /// `<extension>.<runner>.<function>`, plus `.<region>` for a task bound to a region.
    pub routing_key: String,
    pub priority: i16,
    pub payload: Vec<u8>,
}

/// What a new dispatch of a task needs from its row: the broker message and its routing key.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DispatchRow {
    pub id: Uuid,
    pub function: String,
    pub args: serde_json::Value,
    pub timeout_ms: i32,
    pub priority: i16,
    /// The new dispatch number.
    pub dispatch: i32,
    pub attempt: i32,
    pub region: Option<String>,
}

/// The columns of [`DispatchRow`].
macro_rules! dispatch_columns {
    () => {
        "id, function, args, timeout_ms, priority, dispatch, attempt, region"
    };
}
pub(crate) use dispatch_columns;

impl DispatchRow {
    /// The outbox row of this dispatch: routing key with the task's region, message with its dispatch.
    pub(crate) fn outbox(&self) -> NewOutbox {
        NewOutbox {
            task_id: self.id,
            payload: message::payload(
                self.id,
                u32::try_from(self.dispatch).unwrap_or(0),
                &self.function,
                &self.args,
                u32::try_from(self.timeout_ms).unwrap_or(0),
            ),
            routing_key: message::routing_key(&self.function, self.region.as_deref()),
            priority: self.priority,
        }
    }
}

/// Inserts outbox rows on the task exchange, in the given order.
pub(crate) async fn insert_outbox(conn: &mut PgConnection, rows: &[NewOutbox]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.task_id).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.routing_key.as_str()).collect();
    let priorities: Vec<i16> = rows.iter().map(|r| r.priority).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    sqlx::query(
        "INSERT INTO outbox (task_id, exchange, routing_key, priority, payload)
         SELECT u.task_id, $5, u.routing_key, u.priority, u.payload
         FROM UNNEST($1::uuid[], $2::text[], $3::int2[], $4::bytea[]) WITH ORDINALITY
              AS u(task_id, routing_key, priority, payload, n)
         ORDER BY u.n",
    )
    .bind(&ids)
    .bind(&keys)
    .bind(&priorities)
    .bind(&payloads)
    .bind(TASK_EXCHANGE)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn claim_outbox(&self, limit: u32) -> Result<Box<dyn OutboxClaim>> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, Uuid, String, String, i16, Vec<u8>, bool)> = sqlx::query_as(
            "SELECT id, task_id, exchange, routing_key, priority, payload,
                    COALESCE(starts_with(last_error, $2), FALSE)
             FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(limit))
        .bind(UNROUTABLE)
        .fetch_all(&mut *tx)
        .await?;
        let mut returned_before = HashSet::new();
        let rows = rows
            .into_iter()
            .map(|(id, task_id, exchange, routing_key, priority, payload, returned)| {
                if returned {
                    returned_before.insert(id);
                }
                OutboxRow {
                    id,
                    task_id,
                    exchange,
                    routing_key,
                    priority: u8::try_from(priority.clamp(0, 9)).unwrap_or(0),
                    payload,
                }
            })
            .collect();
        Ok(Box::new(PgClaim { tx, rows, returned_before }))
    }

    async fn outbox_depth(&self) -> Result<u64> {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox").fetch_one(&self.pool).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// The start of `outbox.last_error` for a row the broker returned as unroutable: such a row, returned
/// again, dead-letters its task ([`OutboxClaim::finish_with_returns`]).
const UNROUTABLE: &str = "unroutable: ";

/// Why a returned row is unroutable, as `last_error` and as the dead letter's reason.
fn unroutable_reason(row: &OutboxRow) -> String {
    format!("{UNROUTABLE}no queue bound to routing key {} on exchange {}", row.routing_key, row.exchange)
}

struct PgClaim {
    tx: Transaction<'static, Postgres>,
    rows: Vec<OutboxRow>,
    /// Claimed rows whose last publish came back unroutable.
    returned_before: HashSet<i64>,
}

#[async_trait]
impl OutboxClaim for PgClaim {
    fn rows(&self) -> &[OutboxRow] {
        &self.rows
    }

    async fn finish(self: Box<Self>, published: &[i64], failed: &[(i64, String)]) -> Result<Vec<StatusChange>> {
        self.finish_with_returns(published, failed, &[]).await
    }

    async fn finish_with_returns(
        self: Box<Self>,
        published: &[i64],
        failed: &[(i64, String)],
        returned: &[i64],
    ) -> Result<Vec<StatusChange>> {
        let PgClaim { mut tx, rows, returned_before } = *self;
        let mut failed = failed.to_vec();
        let mut again = Vec::new();
        for row in rows.iter().filter(|r| returned.contains(&r.id)) {
            if returned_before.contains(&row.id) {
                again.push(row);
            } else {
                failed.push((row.id, unroutable_reason(row)));
            }
        }
        let mut changes = dead_letter_unroutable(&mut tx, &again, published, &rows).await?;
        if !published.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(published).execute(&mut *tx).await?;
            // Only a task still waiting for this very dispatch becomes queued: a task that started,
            // was cancelled or was dispatched again in the meantime keeps its status.
            let published_ids: HashSet<i64> = published.iter().copied().collect();
            let (mut ids, mut dispatches) = (Vec::new(), Vec::new());
            for row in rows.iter().filter(|r| published_ids.contains(&r.id)) {
                if let Some(dispatch) = message_dispatch(&row.payload) {
                    ids.push(row.task_id);
                    dispatches.push(dispatch);
                }
            }
            let queued: Vec<(Uuid, i32)> = sqlx::query_as(
                "UPDATE tasks t SET status = 'queued', queued_at = now()
                 FROM (SELECT tasks.id FROM tasks
                       JOIN UNNEST($1::uuid[], $2::int[]) AS u(id, dispatch)
                         ON tasks.id = u.id AND tasks.dispatch = u.dispatch
                       WHERE tasks.status = 'pending'
                       ORDER BY tasks.id FOR UPDATE OF tasks) AS locked
                 WHERE t.id = locked.id
                 RETURNING t.id, t.attempt",
            )
            .bind(&ids)
            .bind(&dispatches)
            .fetch_all(&mut *tx)
            .await?;
            changes.extend(queued.into_iter().map(|(task_id, attempt)| StatusChange {
                task_id,
                status: TaskStatus::Queued,
                attempt: u32::try_from(attempt).unwrap_or(0),
            }));
        }
        if !failed.is_empty() {
            let ids: Vec<i64> = failed.iter().map(|(id, _)| *id).collect();
            let errors: Vec<&str> = failed.iter().map(|(_, e)| e.as_str()).collect();
            sqlx::query(
                "UPDATE outbox o SET failures = o.failures + 1, last_error = u.error
                 FROM UNNEST($1::int8[], $2::text[]) AS u(id, error) WHERE o.id = u.id",
            )
            .bind(&ids)
            .bind(&errors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(changes)
    }
}

/// Deletes the rows returned `again` and ends their tasks `dead_lettered` (only a task still waiting for
/// that very dispatch, not finished). The tasks of these rows and of the `published` ones (which the
/// caller moves to `queued` next) are locked first, in id order, in one statement.
async fn dead_letter_unroutable(
    conn: &mut PgConnection,
    again: &[&OutboxRow],
    published: &[i64],
    rows: &[OutboxRow],
) -> Result<Vec<StatusChange>> {
    if again.is_empty() {
        return Ok(Vec::new());
    }
    let mut lock: Vec<Uuid> = rows
        .iter()
        .filter(|r| published.contains(&r.id) || again.iter().any(|a| a.id == r.id))
        .map(|r| r.task_id)
        .collect();
    lock.sort_unstable();
    lock.dedup();
    sqlx::query("SELECT id FROM tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&lock)
        .execute(&mut *conn)
        .await?;
    let ids: Vec<i64> = again.iter().map(|r| r.id).collect();
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(&ids).execute(&mut *conn).await?;
    let (mut tasks, mut dispatches, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    for row in again {
        if let Some(dispatch) = message_dispatch(&row.payload) {
            tasks.push(row.task_id);
            dispatches.push(dispatch);
            reasons.push(unroutable_reason(row));
        }
    }
    let terminal: Vec<&str> = TaskStatus::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.as_str()).collect();
    let ended: Vec<(Uuid, i32, String)> = sqlx::query_as(
        "UPDATE tasks t SET status = 'dead_lettered', finished_at = now(), not_before = NULL, error = u.reason
         FROM UNNEST($1::uuid[], $2::int[], $3::text[]) AS u(id, dispatch, reason)
         WHERE t.id = u.id AND t.dispatch = u.dispatch AND t.status <> ALL($4)
         RETURNING t.id, t.attempt, u.reason",
    )
    .bind(&tasks)
    .bind(&dispatches)
    .bind(&reasons)
    .bind(&terminal)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ended
        .into_iter()
        .map(|(task_id, attempt, reason)| {
            tracing::warn!(task_id = %task_id, reason = %reason, "task dead-lettered");
            StatusChange { task_id, status: TaskStatus::DeadLettered, attempt: u32::try_from(attempt).unwrap_or(0) }
        })
        .collect())
}

/// The dispatch number of a broker message body; `None` if it is not a task message.
fn message_dispatch(payload: &[u8]) -> Option<i32> {
    #[derive(serde::Deserialize)]
    struct Dispatch {
        dispatch: u32,
    }
    let parsed: Dispatch = serde_json::from_slice(payload).ok()?;
    i32::try_from(parsed.dispatch).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatch_is_read_from_the_message() {
        let payload = crate::dispatch::message::payload(Uuid::now_v7(), 3, "a.b.c", &serde_json::json!({}), 10);
        assert_eq!(message_dispatch(&payload), Some(3));
        assert_eq!(message_dispatch(b"not json"), None);
    }
}
