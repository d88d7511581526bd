//! [`SecurityStore`] for PostgreSQL (`migrations/0002_security.sql`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgStore;
use crate::store::security::{ApiKeyRecord, NewApiKey, SecurityStore, StoredPolicy};
use crate::store::{Error, Result};

type PolicyRow = (String, serde_json::Value, DateTime<Utc>, DateTime<Utc>);
type KeyRow = (Uuid, String, Vec<String>, String, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The columns of [`KeyRow`], as a literal so that every query stays a static string.
macro_rules! key_columns {
    () => {
        "id, name, policies, created_by, created_at, expires_at, revoked_at"
    };
}

fn policy((name, rules, created_at, updated_at): PolicyRow) -> StoredPolicy {
    StoredPolicy { name, rules, created_at, updated_at }
}

fn key((id, name, policies, created_by, created_at, expires_at, revoked_at): KeyRow) -> ApiKeyRecord {
    ApiKeyRecord { id, name, policies, created_by, created_at, expires_at, revoked_at }
}

#[async_trait]
impl SecurityStore for PgStore {
    async fn put_policy(&self, name: &str, rules: &serde_json::Value) -> Result<(StoredPolicy, bool)> {
        let (name, rules, created_at, updated_at, created): (String, serde_json::Value, _, _, bool) = sqlx::query_as(
            "INSERT INTO policies (name, rules) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET rules = EXCLUDED.rules, updated_at = now()
                 RETURNING name, rules, created_at, updated_at, (xmax = 0)",
        )
        .bind(name)
        .bind(rules)
        .fetch_one(self.pool())
        .await?;
        Ok((policy((name, rules, created_at, updated_at)), created))
    }

    async fn get_policy(&self, name: &str) -> Result<Option<StoredPolicy>> {
        let row: Option<PolicyRow> =
            sqlx::query_as("SELECT name, rules, created_at, updated_at FROM policies WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(policy))
    }

    async fn get_policies(&self, names: &[String]) -> Result<Vec<StoredPolicy>> {
        let rows: Vec<PolicyRow> =
            sqlx::query_as("SELECT name, rules, created_at, updated_at FROM policies WHERE name = ANY($1)")
                .bind(names)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(policy).collect())
    }

    async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        let rows: Vec<PolicyRow> =
            sqlx::query_as("SELECT name, rules, created_at, updated_at FROM policies ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        Ok(rows.into_iter().map(policy).collect())
    }

    async fn delete_policy(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM policies WHERE name = $1").bind(name).execute(self.pool()).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_api_key(&self, new: &NewApiKey) -> Result<ApiKeyRecord> {
        let row: KeyRow = sqlx::query_as(concat!(
            "INSERT INTO api_keys (id, name, key_hash, policies, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            key_columns!(),
            ""
        ))
        .bind(new.id)
        .bind(&new.name)
        .bind(&new.key_hash[..])
        .bind(&new.policies)
        .bind(&new.created_by)
        .bind(new.expires_at)
        .fetch_one(self.pool())
        .await?;
        Ok(key(row))
    }

    async fn api_key_by_hash(&self, key_hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>> {
        let row: Option<KeyRow> =
            sqlx::query_as(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE key_hash = $1"))
                .bind(&key_hash[..])
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(key))
    }

    async fn get_api_key(&self, id: Uuid) -> Result<Option<ApiKeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(key))
    }

    async fn list_api_keys(&self, include_revoked: bool) -> Result<Vec<ApiKeyRecord>> {
        let rows: Vec<KeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY created_at DESC, id"
        ))
        .bind(include_revoked)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(key).collect())
    }

    async fn revoke_api_key(&self, id: Uuid) -> Result<ApiKeyRecord> {
        let row: Option<KeyRow> = sqlx::query_as(concat!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING ",
            key_columns!(),
            ""
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(key).ok_or_else(|| Error::NotFound(format!("api key {id} not found")))
    }

    async fn has_valid_key_with_policy(&self, policy: &str) -> Result<bool> {
        let (exists,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE policies @> ARRAY[$1]::text[]
                AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))",
        )
        .bind(policy)
        .fetch_one(self.pool())
        .await?;
        Ok(exists)
    }

    async fn ensure_policy(&self, name: &str, rules: &serde_json::Value) -> Result<bool> {
        let done = sqlx::query("INSERT INTO policies (name, rules) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(rules)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_config_override(&self, section: &str, value: &serde_json::Value, by: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO config_overrides (section, value, updated_by) VALUES ($1, $2, $3)
             ON CONFLICT (section) DO UPDATE SET value = EXCLUDED.value, updated_by = EXCLUDED.updated_by,
                 updated_at = now()",
        )
        .bind(section)
        .bind(value)
        .bind(by)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn config_overrides(&self) -> Result<Vec<(String, serde_json::Value)>> {
        Ok(sqlx::query_as("SELECT section, value FROM config_overrides ORDER BY section")
            .fetch_all(self.pool())
            .await?)
    }
}
