//! The audit trail against a real PostgreSQL: one chain from several writers, tampering detected by
//! `verify` (altered, deleted, inserted rows), the append-only trigger, listing with filters and pages,
//! redaction of secrets, shutdown and an unreachable database. Each test has its own database.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use legion_control_plane::audit::chain::{GENESIS, Hash, Record};
use legion_control_plane::audit::{
    self, AuditEvent, AuditFilter, AuditLog, Decision, Error, VERIFY_CHUNK, Verification,
};
use legion_control_plane::store::pg;
use serde_json::json;
use sqlx::PgPool;
use support::TestDb;
use tokio_util::sync::CancellationToken;

/// A migrated pool over `db` (the test user owns the tables, so it can also tamper with them).
async fn pool(db: &TestDb) -> PgPool {
    let pool = pg::connect(&db.data_settings()).await.expect("connect");
    pg::migrate(&pool).await.expect("migrate");
    pool
}

fn event(n: usize) -> AuditEvent {
    AuditEvent {
        action: if n.is_multiple_of(3) { "policy.put".into() } else { "authorize".into() },
        principal: format!("api-key/{}", n % 4),
        resource: if n.is_multiple_of(2) { format!("tasks/core/util/f{n}") } else { format!("policies/p{n}") },
        capability: if n.is_multiple_of(3) { String::new() } else { "create".into() },
        decision: Decision::ALL[n % 3],
        request_id: format!("req-{n}"),
        source: "127.0.0.1:40000".into(),
        detail: json!({ "n": n }),
    }
}

/// Appends `count` events through a writer of its own, in batches of `append_many`.
async fn fill(pool: &PgPool, count: usize) {
    let shutdown = CancellationToken::new();
    let (log, writer) = AuditLog::spawn(pool.clone(), 500, shutdown.clone());
    let events: Vec<AuditEvent> = (0..count).map(event).collect();
    for chunk in events.chunks(500) {
        log.append_many(chunk.to_vec()).await.expect("append");
    }
    shutdown.cancel();
    writer.await.expect("writer");
}

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(pool).await.expect("count")
}

/// Runs `sql` with the append-only trigger disabled, as an operator owning the table could.
async fn tamper(pool: &PgPool, sql: &'static str) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&mut *tx)
        .await
        .expect("disable");
    let done = sqlx::query(sql).execute(&mut *tx).await.expect("tamper");
    assert_eq!(done.rows_affected(), 1, "{sql}");
    sqlx::query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only").execute(&mut *tx).await.expect("enable");
    tx.commit().await.expect("commit");
}

fn broken_at(v: &Verification) -> i64 {
    assert!(!v.valid, "expected tampering to be detected: {v:?}");
    v.first_broken.expect("first_broken")
}

#[tokio::test]
async fn concurrent_appends_from_two_writers_form_one_chain() {
    let db = TestDb::create().await;
    let (a, b) = (pool(&db).await, pool(&db).await);
    let shutdown = CancellationToken::new();
    let (log_a, writer_a) = AuditLog::spawn(a.clone(), 16, shutdown.clone());
    let (log_b, writer_b) = AuditLog::spawn(b.clone(), 16, shutdown.clone());
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..300_usize {
        let log = if n.is_multiple_of(2) { log_a.clone() } else { log_b.clone() };
        calls.spawn(async move { log.append(event(n)).await });
    }
    for n in 0..20_usize {
        let log = if n.is_multiple_of(2) { log_a.clone() } else { log_b.clone() };
        calls.spawn(async move { log.append_many((0..5).map(|i| event(1000 + n * 5 + i)).collect()).await });
    }
    while let Some(joined) = calls.join_next().await {
        joined.expect("join").expect("append");
    }

    let verification = audit::verify(&a).await.expect("verify");
    assert_eq!(verification, Verification { valid: true, checked: 400, first_broken: None, reason: String::new() });
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id").fetch_all(&a).await.expect("ids");
    assert_eq!(ids, (1..=400).collect::<Vec<i64>>());
    let head: (i64,) = sqlx::query_as("SELECT last_id FROM audit_head").fetch_one(&a).await.expect("head");
    assert_eq!(head.0, 400);

    // The five events of an append_many are consecutive records.
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log WHERE request_id LIKE 'req-10__' ORDER BY id")
        .fetch_all(&a)
        .await
        .expect("ids");
    for group in ids.chunks(5) {
        assert_eq!(group[4] - group[0], 4, "{ids:?}");
    }
    // Times follow the chain (one database clock for every writer).
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT at < lag(at) OVER (ORDER BY id) AS back FROM audit_log) t WHERE back",
    )
    .fetch_one(&a)
    .await
    .expect("times");
    assert_eq!(out_of_order, 0);

    shutdown.cancel();
    writer_a.await.expect("writer a");
    writer_b.await.expect("writer b");
}

#[tokio::test]
async fn an_altered_row_is_named() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    fill(&pool, 10).await;
    assert!(audit::verify(&pool).await.expect("verify").valid);

    tamper(&pool, "UPDATE audit_log SET principal = 'api-key/admin' WHERE id = 5").await;
    let v = audit::verify(&pool).await.expect("verify");
    assert_eq!(broken_at(&v), 5);
    assert_eq!(v.checked, 4);
    assert!(v.reason.contains("altered"), "{}", v.reason);
}

#[tokio::test]
async fn an_altered_detail_is_named() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    fill(&pool, 10).await;
    // Same JSON value, other text: the hash covers the text as stored.
    tamper(&pool, r#"UPDATE audit_log SET detail = '{"n": 7}' WHERE id = 8"#).await;
    assert_eq!(broken_at(&audit::verify(&pool).await.expect("verify")), 8);
}

#[tokio::test]
async fn a_deleted_middle_row_names_the_row_after_the_gap() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    fill(&pool, 10).await;
    tamper(&pool, "DELETE FROM audit_log WHERE id = 4").await;
    let v = audit::verify(&pool).await.expect("verify");
    assert_eq!(broken_at(&v), 5);
    assert_eq!(v.checked, 3);
    assert!(v.reason.contains("record 4 is missing"), "{}", v.reason);
}

#[tokio::test]
async fn a_deleted_first_row_is_detected() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    fill(&pool, 3).await;
    tamper(&pool, "DELETE FROM audit_log WHERE id = 1").await;
    assert_eq!(broken_at(&audit::verify(&pool).await.expect("verify")), 2);
}

#[tokio::test]
async fn a_deleted_newest_row_is_detected() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    fill(&pool, 10).await;
    tamper(&pool, "DELETE FROM audit_log WHERE id = 10").await;
    let v = audit::verify(&pool).await.expect("verify");
    assert_eq!(broken_at(&v), 10);
    assert_eq!(v.checked, 9);
    assert!(v.reason.contains("record 10 is missing"), "{}", v.reason);
}

#[tokio::test]
async fn a_forged_row_is_detected_and_stops_appends() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    fill(&pool, 5).await;
    // A well-formed record chained after the last one, without moving the head (INSERT needs no
    // disabled trigger: the table refuses only UPDATE and DELETE).
    let (last_hash,): (Vec<u8>,) =
        sqlx::query_as("SELECT hash FROM audit_log WHERE id = 5").fetch_one(&pool).await.expect("last");
    let mut forged = Record {
        id: 6,
        at: chrono::Utc::now(),
        action: "authorize".into(),
        principal: "api-key/intruder".into(),
        resource: "audit".into(),
        capability: "read".into(),
        decision: "allow".into(),
        request_id: "forged".into(),
        source: "10.0.0.1:1".into(),
        detail: "{}".into(),
        prev_hash: Vec::new(),
        hash: Vec::new(),
    };
    forged.at = legion_control_plane::audit::chain::truncate_time(forged.at);
    let prev: Hash = last_hash.try_into().expect("32 bytes");
    forged.seal(&prev);
    sqlx::query(
        "INSERT INTO audit_log (id, at, action, principal, resource, capability, decision, request_id, source,
                                detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(forged.id)
    .bind(forged.at)
    .bind(&forged.action)
    .bind(&forged.principal)
    .bind(&forged.resource)
    .bind(&forged.capability)
    .bind(&forged.decision)
    .bind(&forged.request_id)
    .bind(&forged.source)
    .bind(&forged.detail)
    .bind(&forged.prev_hash)
    .bind(&forged.hash)
    .execute(&pool)
    .await
    .expect("forge");
    let v = audit::verify(&pool).await.expect("verify");
    assert_eq!(broken_at(&v), 6);
    assert_eq!(v.checked, 5);
    assert!(v.reason.contains("beyond the head"), "{}", v.reason);

    // The next append would take id 6: it fails (and its caller refuses the request) rather than
    // build on the forged record.
    let shutdown = CancellationToken::new();
    let (log, writer) = AuditLog::spawn(pool.clone(), 10, shutdown.clone());
    let err = log.append(event(1)).await.expect_err("id taken");
    assert!(matches!(err, Error::Database(_)), "{err:?}");
    assert_eq!(count(&pool).await, 6);
    shutdown.cancel();
    writer.await.expect("writer");
}

#[tokio::test]
async fn a_forged_genesis_row_is_detected() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    fill(&pool, 3).await;
    sqlx::query(
        "INSERT INTO audit_log SELECT 0, at, action, principal, resource, capability, decision, request_id, source,
                                      detail, $1, hash FROM audit_log WHERE id = 1",
    )
    .bind(GENESIS.as_slice())
    .execute(&pool)
    .await
    .expect("forge");
    assert_eq!(broken_at(&audit::verify(&pool).await.expect("verify")), 0);
}

#[tokio::test]
async fn tampering_past_the_first_chunk_is_detected() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    let total = usize::try_from(VERIFY_CHUNK).expect("chunk") + 500;
    fill(&pool, total).await;
    let v = audit::verify(&pool).await.expect("verify");
    assert_eq!((v.valid, v.checked), (true, i64::try_from(total).expect("total")));
    tamper(&pool, "UPDATE audit_log SET source = 'elsewhere' WHERE id = 2300").await;
    let v = audit::verify(&pool).await.expect("verify");
    assert_eq!((broken_at(&v), v.checked), (2300, 2299));
}

#[tokio::test]
async fn the_table_refuses_update_and_delete() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    fill(&pool, 3).await;
    for sql in ["UPDATE audit_log SET principal = 'x' WHERE id = 2", "DELETE FROM audit_log WHERE id = 3"] {
        let err = sqlx::query(sql).execute(&pool).await.expect_err("append-only");
        let db_err = err.as_database_error().expect("database error");
        assert_eq!(db_err.code().as_deref(), Some("42501"), "{sql}");
        assert!(db_err.message().contains("append-only"), "{}", db_err.message());
    }
    assert_eq!(count(&pool).await, 3);
    assert!(audit::verify(&pool).await.expect("verify").valid);
}

#[tokio::test]
async fn an_empty_trail_verifies() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    let v = audit::verify(&pool).await.expect("verify");
    assert_eq!(v, Verification { valid: true, checked: 0, first_broken: None, reason: String::new() });
    let page = audit::list(&pool, &AuditFilter::default()).await.expect("list");
    assert!(page.records.is_empty() && page.next_before.is_none());
}

#[tokio::test]
async fn secrets_in_detail_are_stored_redacted() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    let shutdown = CancellationToken::new();
    let (log, writer) = AuditLog::spawn(pool.clone(), 10, shutdown.clone());
    let mut secret = event(1);
    secret.detail = json!({
        "name": "deploy",
        "api_key": "lgn_supersecret",
        "rules": [{"path": "tasks/*", "client_secret": "s3cr3t"}],
        "target": "amqp://legion:hunter2@broker/legion",
    });
    log.append(secret).await.expect("append");
    shutdown.cancel();
    writer.await.expect("writer");

    let (text,): (String,) = sqlx::query_as("SELECT detail FROM audit_log").fetch_one(&pool).await.expect("detail");
    for secret in ["lgn_supersecret", "s3cr3t", "hunter2"] {
        assert!(!text.contains(secret), "{secret} stored: {text}");
    }
    let page = audit::list(&pool, &AuditFilter::default()).await.expect("list");
    let detail: serde_json::Value = serde_json::from_str(&page.records[0].detail).expect("json");
    assert_eq!(detail["api_key"], "[REDACTED]");
    assert_eq!(detail["rules"][0]["client_secret"], "[REDACTED]");
    assert_eq!(detail["rules"][0]["path"], "tasks/*");
    assert_eq!(detail["name"], "deploy");
    assert!(audit::verify(&pool).await.expect("verify").valid);
}

/// Every page of `filter`, following `next_before`; asserts each page is newest first.
async fn all_pages(pool: &PgPool, mut filter: AuditFilter) -> Vec<Record> {
    let mut records = Vec::new();
    loop {
        let page = audit::list(pool, &filter).await.expect("list");
        assert!(page.records.len() <= filter.limit as usize);
        assert!(page.records.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        records.extend(page.records);
        match page.next_before {
            Some(before) => filter.before = Some(before),
            None => return records,
        }
    }
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    // Three batches, so there are three distinct times.
    for _ in 0..3 {
        fill(&pool, 20).await;
    }
    let all = all_pages(&pool, AuditFilter { limit: 7, ..AuditFilter::default() }).await;
    let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=60).rev().collect::<Vec<i64>>(), "no duplicates, no gaps");
    // A page that ends exactly at the last record has no next page.
    let page = audit::list(&pool, &AuditFilter { limit: 60, ..AuditFilter::default() }).await.expect("list");
    assert_eq!((page.records.len(), page.next_before), (60, None));
    let page = audit::list(&pool, &AuditFilter { limit: 59, ..AuditFilter::default() }).await.expect("list");
    assert_eq!(page.next_before, Some(2));
    // The records come back as written, hashes included.
    assert!(all.iter().all(|r| r.hash == r.compute_hash().to_vec()));

    let expect = |keep: &dyn Fn(&Record) -> bool| all.iter().filter(|r| keep(r)).map(|r| r.id).collect::<Vec<_>>();
    let listed = |records: Vec<Record>| records.iter().map(|r| r.id).collect::<Vec<_>>();

    let by_principal = AuditFilter { principal: Some("api-key/1".into()), limit: 4, ..AuditFilter::default() };
    assert_eq!(listed(all_pages(&pool, by_principal).await), expect(&|r| r.principal == "api-key/1"));
    let by_action = AuditFilter { action: Some("policy.put".into()), limit: 3, ..AuditFilter::default() };
    assert_eq!(listed(all_pages(&pool, by_action).await), expect(&|r| r.action == "policy.put"));
    let by_decision = AuditFilter { decision: Some(Decision::Deny), limit: 5, ..AuditFilter::default() };
    assert_eq!(listed(all_pages(&pool, by_decision).await), expect(&|r| r.decision == "deny"));
    let by_prefix = AuditFilter { resource_prefix: Some("tasks/".into()), limit: 9, ..AuditFilter::default() };
    assert_eq!(listed(all_pages(&pool, by_prefix).await), expect(&|r| r.resource.starts_with("tasks/")));
    // `%` and `_` are not patterns.
    let literal = AuditFilter { resource_prefix: Some("tasks/%".into()), ..AuditFilter::default() };
    assert!(audit::list(&pool, &literal).await.expect("list").records.is_empty());
    let combined = AuditFilter {
        principal: Some("api-key/2".into()),
        decision: Some(Decision::Allow),
        resource_prefix: Some("tasks/core/".into()),
        limit: 2,
        ..AuditFilter::default()
    };
    assert_eq!(
        listed(all_pages(&pool, combined).await),
        expect(&|r| r.principal == "api-key/2" && r.decision == "allow" && r.resource.starts_with("tasks/core/"))
    );

    // Times: since and until are inclusive.
    let times: BTreeSet<_> = all.iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 3, "one time per batch");
    let middle = *times.iter().nth(1).expect("middle");
    let at_middle = AuditFilter { since: Some(middle), until: Some(middle), limit: 6, ..AuditFilter::default() };
    assert_eq!(listed(all_pages(&pool, at_middle).await), expect(&|r| r.at == middle));
    let since = AuditFilter { since: Some(middle), ..AuditFilter::default() };
    assert_eq!(listed(all_pages(&pool, since).await), expect(&|r| r.at >= middle));
    let until = AuditFilter { until: Some(middle), ..AuditFilter::default() };
    assert_eq!(listed(all_pages(&pool, until).await), expect(&|r| r.at <= middle));

    // Limits: 0 is the default, larger than the maximum is capped.
    let default = audit::list(&pool, &AuditFilter { limit: 0, ..AuditFilter::default() }).await.expect("list");
    assert_eq!(default.records.len(), 60);
}

#[tokio::test]
async fn shutdown_appends_what_is_queued_then_refuses() {
    let db = TestDb::create().await;
    let pool = pool(&db).await;
    // Another transaction holds the head, so the writer's first batch waits while the rest queue.
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT last_id FROM audit_head FOR UPDATE").execute(&mut *holder).await.expect("lock head");
    let shutdown = CancellationToken::new();
    let (log, writer) = AuditLog::spawn(pool.clone(), 8, shutdown.clone());
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..100 {
        let log = log.clone();
        calls.spawn(async move { log.append(event(n)).await });
    }
    support::eventually("the writer waits for the head", Duration::from_secs(10), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .expect("activity");
        (waiting > 0).then_some(())
    })
    .await;
    shutdown.cancel();
    holder.commit().await.expect("release head");

    let mut appended = 0;
    while let Some(joined) = calls.join_next().await {
        match joined.expect("join") {
            Ok(()) => appended += 1,
            Err(Error::ShuttingDown) => {}
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    writer.await.expect("writer");
    assert!(appended >= 1, "the batch in progress is committed");
    assert!(appended < 100, "callers waiting for room are refused");
    assert_eq!(count(&pool).await, appended, "every answered append is committed");
    assert!(matches!(log.append(event(0)).await, Err(Error::ShuttingDown)));
    let v = audit::verify(&pool).await.expect("verify");
    assert_eq!((v.valid, v.checked), (true, appended));
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/legion_audit_unreachable")
        .expect("lazy pool");
    let shutdown = CancellationToken::new();
    let (log, writer) = AuditLog::spawn(pool.clone(), 10, shutdown.clone());
    let err = log.append(event(1)).await.expect_err("unreachable");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(matches!(audit::verify(&pool).await, Err(Error::Unavailable(_))));
    shutdown.cancel();
    writer.await.expect("writer");
}
