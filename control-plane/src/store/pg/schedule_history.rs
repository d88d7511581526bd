//! [`FireHistoryStore`] on PostgreSQL: deleting the fire rows of each schedule beyond its newest `keep`,
//! walking the `(schedule_id, slot)` primary key of `schedule_fires` (`migrations/0007_schedules.sql`).

use async_trait::async_trait;
use uuid::Uuid;

use super::PgStore;
use crate::store::Result;
use crate::store::schedules::{FireHistoryStore, Pruned};

#[async_trait]
impl FireHistoryStore for PgStore {
    async fn prune_fires(&self, after: Option<Uuid>, schedules: u32, keep: u32, max_rows: u32) -> Result<Pruned> {
        // Per visited schedule, the newest row to delete is found by an index-only walk of its `keep`
        // newest rows (OFFSET on the primary key, backwards); the rows to delete are then read forwards
        // from its oldest one, at most `max_rows` in all, and deleted by key.
        let (deleted, visited, last): (i64, i64, Option<Uuid>) = sqlx::query_as(
            "WITH visited AS (
                 SELECT id FROM schedules WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2
             ), cut AS (
                 SELECT v.id, c.slot FROM visited v
                 CROSS JOIN LATERAL (SELECT f.slot FROM schedule_fires f WHERE f.schedule_id = v.id
                                     ORDER BY f.slot DESC OFFSET $3 LIMIT 1) c
             ), doomed AS (
                 SELECT d.schedule_id, d.slot FROM cut
                 CROSS JOIN LATERAL (SELECT f.schedule_id, f.slot FROM schedule_fires f
                                     WHERE f.schedule_id = cut.id AND f.slot <= cut.slot
                                     ORDER BY f.slot LIMIT $4) d
                 LIMIT $4
             ), deleted AS (
                 DELETE FROM schedule_fires f USING doomed d
                 WHERE f.schedule_id = d.schedule_id AND f.slot = d.slot
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM visited),
                    (SELECT id FROM visited ORDER BY id DESC LIMIT 1)",
        )
        .bind(after)
        .bind(i64::from(schedules))
        .bind(i64::from(keep))
        .bind(i64::from(max_rows))
        .fetch_one(&self.pool)
        .await?;
        Ok(Pruned {
            deleted: u64::try_from(deleted).unwrap_or(0),
            visited: u32::try_from(visited).unwrap_or(u32::MAX),
            last,
        })
    }
}
