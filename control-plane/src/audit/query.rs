//! Reading the audit trail: pages of records, newest first, and the verification of the whole chain.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::chain::{Head, Record, Verification, Verifier};
use super::{Decision, Error};

/// Page size when none is given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 1000;
/// Records [`verify`] reads per query. With `detail` capped at [`super::MAX_DETAIL_BYTES`], a chunk
/// holds at most 64 MiB of detail text, typically well under 1 MiB.
pub const VERIFY_CHUNK: i64 = 2000;

/// Prefix of version 1 page tokens.
const TOKEN_PREFIX: &str = "v1.";

/// Which records to list. Empty filters match every record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exact principal.
    pub principal: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact decision.
    pub decision: Option<Decision>,
    /// Prefix of the resource path (`tasks/` matches `tasks/core/util/echo`).
    pub resource_prefix: Option<String>,
    /// Records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Records at or before this time.
    pub until: Option<DateTime<Utc>>,
    /// Keyset paging: only records with a smaller id (from [`AuditPage::next_before`]).
    pub before: Option<i64>,
    /// Page size, 1 to [`MAX_LIMIT`]; 0 means [`DEFAULT_LIMIT`] and larger values are capped.
    pub limit: u32,
}

impl Default for AuditFilter {
    fn default() -> Self {
        Self {
            principal: None,
            action: None,
            decision: None,
            resource_prefix: None,
            since: None,
            until: None,
            before: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// One page of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// Newest first.
    pub records: Vec<Record>,
    /// Set when more records match: pass it as [`AuditFilter::before`] for the next page.
    pub next_before: Option<i64>,
}

/// Checks a requested page size (1 to [`MAX_LIMIT`]; 0 means [`DEFAULT_LIMIT`]).
///
/// # Errors
/// The reason, for an `INVALID_ARGUMENT` on `limit`.
pub fn page_limit(requested: u32) -> Result<u32, String> {
    match requested {
        0 => Ok(DEFAULT_LIMIT),
        1..=MAX_LIMIT => Ok(requested),
        _ => Err(format!("must be 1 to {MAX_LIMIT}, got {requested}")),
    }
}

/// A page token that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed page token; pass next_page_token from a previous response unchanged")]
pub struct MalformedToken;

/// The opaque token of the page after the record `next_before` (`v1.<decimal id>`).
pub fn encode_page_token(next_before: i64) -> String {
    format!("{TOKEN_PREFIX}{next_before}")
}

/// The [`AuditFilter::before`] of a page token; `None` for an empty token (the first page).
///
/// # Errors
/// [`MalformedToken`] for anything [`encode_page_token`] does not produce from a positive id.
pub fn decode_page_token(token: &str) -> Result<Option<i64>, MalformedToken> {
    if token.is_empty() {
        return Ok(None);
    }
    let digits = token.strip_prefix(TOKEN_PREFIX).ok_or(MalformedToken)?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0')
    {
        return Err(MalformedToken);
    }
    digits.parse().map(Some).map_err(|_| MalformedToken)
}

/// A row of `audit_log`.
#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    action: String,
    principal: String,
    resource: String,
    capability: String,
    decision: String,
    request_id: String,
    source: String,
    detail: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl From<AuditRow> for Record {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            at: row.at,
            action: row.action,
            principal: row.principal,
            resource: row.resource,
            capability: row.capability,
            decision: row.decision,
            request_id: row.request_id,
            source: row.source,
            detail: row.detail,
            prev_hash: row.prev_hash,
            hash: row.hash,
        }
    }
}

/// The columns of [`AuditRow`].
macro_rules! audit_columns {
    () => {
        "id, at, action, principal, resource, capability, decision, request_id, source, detail, prev_hash, hash"
    };
}

/// The newest records matching `filter`, keyset-paged by id.
///
/// # Errors
/// [`Error::Unavailable`] when the database cannot be reached, others when it fails.
pub async fn list(pool: &PgPool, filter: &AuditFilter) -> Result<AuditPage, Error> {
    let limit = page_limit(filter.limit).unwrap_or(MAX_LIMIT);
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new(concat!("SELECT ", audit_columns!(), " FROM audit_log WHERE TRUE"));
    if let Some(principal) = &filter.principal {
        query.push(" AND principal = ").push_bind(principal.clone());
    }
    if let Some(action) = &filter.action {
        query.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(decision) = filter.decision {
        query.push(" AND decision = ").push_bind(decision.as_str());
    }
    if let Some(prefix) = &filter.resource_prefix {
        query.push(" AND starts_with(resource, ").push_bind(prefix.clone()).push(")");
    }
    if let Some(since) = filter.since {
        query.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND at <= ").push_bind(until);
    }
    if let Some(before) = filter.before {
        query.push(" AND id < ").push_bind(before);
    }
    query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(limit) + 1);
    let rows: Vec<AuditRow> = query.build_query_as().fetch_all(pool).await?;
    let mut records: Vec<Record> = rows.into_iter().map(Record::from).collect();
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_before = if more { records.last().map(|r| r.id) } else { None };
    Ok(AuditPage { records, next_before })
}

/// Verifies the whole chain against its head ([`super::chain::Verifier`]), reading [`VERIFY_CHUNK`]
/// records at a time in one repeatable-read snapshot, so records appended meanwhile neither break nor
/// join the verification and a large table is never in memory at once. A missing `audit_head` row is
/// reported as not valid, with no `first_broken`.
///
/// # Errors
/// [`Error::Unavailable`] when the database cannot be reached, others when it fails.
pub async fn verify(pool: &PgPool) -> Result<Verification, Error> {
    let mut tx = pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT last_id, last_hash FROM audit_head").fetch_optional(&mut *tx).await?;
    let Some((last_id, last_hash)) = head else {
        return Ok(Verification {
            valid: false,
            checked: 0,
            first_broken: None,
            reason: "the audit_head row is missing".into(),
        });
    };
    let mut verifier = Verifier::new(Head { last_id, last_hash });
    let mut after = i64::MIN;
    'chunks: loop {
        let rows: Vec<AuditRow> =
            sqlx::query_as(concat!("SELECT ", audit_columns!(), " FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2"))
                .bind(after)
                .bind(VERIFY_CHUNK)
                .fetch_all(&mut *tx)
                .await?;
        let full = rows.len() as i64 == VERIFY_CHUNK;
        for row in rows {
            let record = Record::from(row);
            after = record.id;
            if !verifier.push(&record) {
                break 'chunks;
            }
        }
        if !full {
            break;
        }
    }
    tx.rollback().await?;
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip() {
        for id in [1, 42, i64::MAX] {
            assert_eq!(decode_page_token(&encode_page_token(id)), Ok(Some(id)));
        }
        assert_eq!(decode_page_token(""), Ok(None));
    }

    #[test]
    fn malformed_page_tokens_are_refused() {
        for token in ["42", "v1.", "v1.-1", "v1.0", "v1.007", "v1.1x", "v2.5", "v1. 5", "v1.99999999999999999999"] {
            assert_eq!(decode_page_token(token), Err(MalformedToken), "{token:?}");
        }
    }

    #[test]
    fn page_limits_default_and_cap() {
        assert_eq!(page_limit(0), Ok(DEFAULT_LIMIT));
        assert_eq!(page_limit(1), Ok(1));
        assert_eq!(page_limit(MAX_LIMIT), Ok(MAX_LIMIT));
        assert_eq!(page_limit(MAX_LIMIT + 1), Err("must be 1 to 1000, got 1001".into()));
    }
}
