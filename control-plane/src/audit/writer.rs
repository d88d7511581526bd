//! The group-commit audit writer.
//!
//! [`AuditLog::append`] hands its events to a channel; one background task per process takes what is
//! queued (up to `max_batch` events) and appends it in one transaction:
//!
//! 1. `SELECT last_id, last_hash FROM audit_head FOR UPDATE`: the head row serializes every writer of
//!    the database, so several control-plane replicas still build one chain;
//! 2. assigns the ids `last_id + 1 …` and the time (the database's clock, one for all replicas),
//!    computes each hash from the one before ([`super::chain`]);
//! 3. inserts every row with one `INSERT … SELECT * FROM UNNEST(…)`, moves the head, commits;
//!
//! then answers every waiter. While a batch commits the next one queues, so the cost of a commit is
//! shared by every event that arrived meanwhile. A call returns only after its commit.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::chain::{Hash, Record, truncate_time};
use super::{AuditEvent, Error};

/// Largest `detail` JSON text stored (bytes). Longer text is replaced by
/// `{"truncated": true, "bytes": <length>, "sha256": "<hex of the text>"}`, so that one record stays
/// small and [`super::verify`] reads the chain in bounded memory.
pub const MAX_DETAIL_BYTES: usize = 32 * 1024;

/// Transactions that lose a serialization race are run again this many times.
const CONFLICT_RETRIES: u32 = 3;

/// Events queued per `max_batch` before `append` waits for room.
const QUEUE_BATCHES: usize = 4;

/// The events of one `append` call and where to answer it.
struct Pending {
    events: Vec<Prepared>,
    reply: oneshot::Sender<Result<(), Error>>,
}

/// An event ready to be chained: text fields cleaned, `detail` redacted and serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prepared {
    action: String,
    principal: String,
    resource: String,
    capability: String,
    decision: &'static str,
    request_id: String,
    source: String,
    detail: String,
}

impl Prepared {
    fn new(event: AuditEvent) -> Self {
        Self {
            action: clean(event.action),
            principal: clean(event.principal),
            resource: clean(event.resource),
            capability: clean(event.capability),
            decision: event.decision.as_str(),
            request_id: clean(event.request_id),
            source: clean(event.source),
            detail: detail_text(event.detail),
        }
    }

    fn to_record(&self, id: i64, at: DateTime<Utc>) -> Record {
        Record {
            id,
            at,
            action: self.action.clone(),
            principal: self.principal.clone(),
            resource: self.resource.clone(),
            capability: self.capability.clone(),
            decision: self.decision.to_owned(),
            request_id: self.request_id.clone(),
            source: self.source.clone(),
            detail: self.detail.clone(),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }
}

/// PostgreSQL `TEXT` cannot hold NUL: it becomes U+FFFD, so a caller-supplied value cannot make the
/// append fail.
fn clean(text: String) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text }
}

/// The `detail` text of an event, exactly as stored and hashed: `detail` redacted
/// ([`legion_common::settings::redact`]: values under keys containing `password`, `token`, `secret`,
/// `key`, `credential` or `private`, and passwords in URLs), an object kept as is, `null` stored as
/// `{}` and any other value as `{"value": …}`, serialized by serde_json; text over
/// [`MAX_DETAIL_BYTES`] is replaced by its length and SHA-256.
pub fn detail_text(mut detail: serde_json::Value) -> String {
    legion_common::settings::redact(&mut detail);
    let object = match detail {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("value".to_owned(), other)]),
    };
    // A map of JSON values always serializes.
    let text = serde_json::to_string(&object).unwrap_or_else(|_| "{}".to_owned());
    if text.len() <= MAX_DETAIL_BYTES {
        return text;
    }
    serde_json::json!({
        "truncated": true,
        "bytes": text.len(),
        "sha256": hex::encode(Sha256::digest(text.as_bytes())),
    })
    .to_string()
}

/// The audit writer's handle. Cheap to clone; every clone feeds the same background task.
#[derive(Clone, Debug)]
pub struct AuditLog {
    sender: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("events", &self.events.len()).finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer over `pool`, appending at most `max_batch` events per transaction (at least
    /// 1; an `append_many` call is never split, so a transaction may hold more). The writer stops when
    /// `shutdown` is cancelled, after appending what was queued, or when every handle is dropped.
    pub fn spawn(pool: PgPool, max_batch: usize, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let max_batch = max_batch.max(1);
        let (sender, receiver) = mpsc::channel(max_batch * QUEUE_BATCHES);
        let writer = tokio::spawn(write_loop(receiver, pool, max_batch, shutdown));
        (Self { sender }, writer)
    }

    /// Appends `event` and resolves once it is committed.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached (callers refuse the request then),
    /// [`Error::ShuttingDown`] once the writer stopped, others when the database refuses the append.
    pub async fn append(&self, event: AuditEvent) -> Result<(), Error> {
        self.append_many(vec![event]).await
    }

    /// Appends `events` as consecutive records of one transaction and resolves once they are committed.
    /// An empty list returns at once.
    ///
    /// # Errors
    /// As [`Self::append`]; nothing of `events` is appended then.
    pub async fn append_many(&self, events: Vec<AuditEvent>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.into_iter().map(Prepared::new).collect();
        let (reply, answer) = oneshot::channel();
        self.sender.send(Pending { events, reply }).await.map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)?
    }
}

async fn write_loop(
    mut receiver: mpsc::Receiver<Pending>,
    pool: PgPool,
    max_batch: usize,
    shutdown: CancellationToken,
) {
    let mut closing = false;
    loop {
        let first = if closing {
            receiver.recv().await
        } else {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // Refuse new events (and callers still waiting for room); append those queued.
                    receiver.close();
                    closing = true;
                    receiver.recv().await
                }
                pending = receiver.recv() => pending,
            }
        };
        let Some(first) = first else { break };
        let mut events = first.events;
        let mut replies = vec![first.reply];
        while events.len() < max_batch {
            match receiver.try_recv() {
                Ok(pending) => {
                    events.extend(pending.events);
                    replies.push(pending.reply);
                }
                Err(_) => break,
            }
        }
        let result = write_with_retries(&pool, &events).await;
        if let Err(error) = &result {
            tracing::warn!(error = %error, events = events.len(), "cannot append to the audit trail");
        }
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
    tracing::debug!("audit writer stopped");
}

async fn write_with_retries(pool: &PgPool, events: &[Prepared]) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        match write(pool, events).await {
            Err(Error::Conflict(message)) if attempt < CONFLICT_RETRIES => {
                attempt += 1;
                tracing::debug!(error = %message, attempt, "audit append conflicted, retrying");
            }
            result => return result,
        }
    }
}

/// Column arrays of the rows of one batch, for `UNNEST`.
#[derive(Default)]
struct Columns {
    ids: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    actions: Vec<String>,
    principals: Vec<String>,
    resources: Vec<String>,
    capabilities: Vec<String>,
    decisions: Vec<String>,
    request_ids: Vec<String>,
    sources: Vec<String>,
    details: Vec<String>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

impl Columns {
    fn push(&mut self, record: Record) {
        self.ids.push(record.id);
        self.ats.push(record.at);
        self.actions.push(record.action);
        self.principals.push(record.principal);
        self.resources.push(record.resource);
        self.capabilities.push(record.capability);
        self.decisions.push(record.decision);
        self.request_ids.push(record.request_id);
        self.sources.push(record.source);
        self.details.push(record.detail);
        self.prev_hashes.push(record.prev_hash);
        self.hashes.push(record.hash);
    }
}

/// Chains `events` after the head and appends them in one transaction.
async fn write(pool: &PgPool, events: &[Prepared]) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    // The head is locked before the clock is read, so times follow the chain order.
    let head: Option<(i64, Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
        "WITH head AS (SELECT last_id, last_hash FROM audit_head FOR UPDATE)
         SELECT last_id, last_hash, clock_timestamp() FROM head",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (last_id, last_hash, now) = head.ok_or_else(|| Error::Corrupt("the audit_head row is missing".into()))?;
    let mut prev: Hash = last_hash
        .try_into()
        .map_err(|hash: Vec<u8>| Error::Corrupt(format!("audit_head.last_hash is {} bytes, not 32", hash.len())))?;
    let at = truncate_time(now);
    let mut columns = Columns::default();
    let mut id = last_id;
    for event in events {
        id += 1;
        let mut record = event.to_record(id, at);
        prev = record.seal(&prev);
        columns.push(record);
    }
    sqlx::query(
        "INSERT INTO audit_log (id, at, action, principal, resource, capability, decision, request_id, source,
                                detail, prev_hash, hash)
         SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::bytea[])",
    )
    .bind(&columns.ids)
    .bind(&columns.ats)
    .bind(&columns.actions)
    .bind(&columns.principals)
    .bind(&columns.resources)
    .bind(&columns.capabilities)
    .bind(&columns.decisions)
    .bind(&columns.request_ids)
    .bind(&columns.sources)
    .bind(&columns.details)
    .bind(&columns.prev_hashes)
    .bind(&columns.hashes)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_head SET last_id = $1, last_hash = $2")
        .bind(id)
        .bind(prev.as_slice())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::Decision;

    #[test]
    fn secrets_are_redacted_from_detail() {
        let text = detail_text(json!({
            "name": "ops",
            "api_key": "lgn_abc",
            "nested": {"Password": "hunter2", "list": [{"token": "t"}]},
            "url": "postgres://legion:pw@db/legion",
        }));
        assert!(!text.contains("lgn_abc") && !text.contains("hunter2") && !text.contains(":pw@"), "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["api_key"], "[REDACTED]");
        assert_eq!(value["nested"]["Password"], "[REDACTED]");
        assert_eq!(value["nested"]["list"][0]["token"], "[REDACTED]");
        assert_eq!(value["name"], "ops");
    }

    #[test]
    fn detail_is_always_an_object() {
        assert_eq!(detail_text(serde_json::Value::Null), "{}");
        assert_eq!(detail_text(json!("denied")), r#"{"value":"denied"}"#);
        assert_eq!(detail_text(json!([1, 2])), r#"{"value":[1,2]}"#);
        assert_eq!(
            detail_text(json!({"b": 1, "a": 2})),
            serde_json::to_string(&json!({"b": 1, "a": 2})).expect("json")
        );
    }

    #[test]
    fn oversized_detail_becomes_a_digest() {
        let big = "x".repeat(MAX_DETAIL_BYTES);
        let text = detail_text(json!({ "blob": big }));
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["truncated"], true);
        assert_eq!(value["bytes"], MAX_DETAIL_BYTES + 11);
        assert_eq!(value["sha256"].as_str().map(str::len), Some(64));
        let fits = "x".repeat(MAX_DETAIL_BYTES - 11);
        assert_eq!(detail_text(json!({ "blob": fits })).len(), MAX_DETAIL_BYTES);
    }

    #[test]
    fn nul_characters_are_replaced() {
        let prepared = Prepared::new(AuditEvent {
            action: "authorize".into(),
            principal: "jwt/a\0b".into(),
            resource: "tasks".into(),
            capability: "list".into(),
            decision: Decision::Deny,
            request_id: "r".into(),
            source: "s".into(),
            detail: json!({"why": "a\0b"}),
        });
        assert_eq!(prepared.principal, "jwt/a\u{FFFD}b");
        assert_eq!(prepared.detail, r#"{"why":"a\u0000b"}"#);
        assert_eq!(prepared.decision, "deny");
    }
}
