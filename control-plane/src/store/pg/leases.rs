//! [`LeaseStore`] on PostgreSQL: one statement per acquisition, judged by the database's clock.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::leader::{Lease, LeaseStore};
use crate::store::Result;

#[async_trait]
impl LeaseStore for PgStore {
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        #[allow(clippy::cast_precision_loss)]
        let ttl_ms = ttl.as_millis() as f64;
        // Taken when free, expired or already ours; the epoch moves only when the holder changes.
        let row: Option<(String, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "INSERT INTO leases AS l (name, holder, epoch, expires_at)
             VALUES ($1, $2, 1, now() + $3::float8 * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE SET
                 holder = excluded.holder,
                 epoch = CASE WHEN l.holder = excluded.holder THEN l.epoch ELSE l.epoch + 1 END,
                 acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at ELSE now() END,
                 renewed_at = now(),
                 expires_at = excluded.expires_at
             WHERE l.holder = excluded.holder OR l.expires_at < now()
             RETURNING holder, epoch, acquired_at, expires_at",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(holder, epoch, acquired_at, expires_at)| Lease { holder, epoch, acquired_at, expires_at }))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease(&self, name: &str) -> Result<Option<Lease>> {
        let row: Option<(String, i64, DateTime<Utc>, DateTime<Utc>)> =
            sqlx::query_as("SELECT holder, epoch, acquired_at, expires_at FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(holder, epoch, acquired_at, expires_at)| Lease { holder, epoch, acquired_at, expires_at }))
    }
}
