//! Shared helpers of the control plane's integration tests: a database per test on the real
//! PostgreSQL (`LEGION_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), and
//! an `eventually` helper that replaces sleeps.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod openbao;
pub mod policies;
pub mod schedules;
pub mod stack;
pub mod tasks;

use std::future::Future;
use std::time::Duration;

use legion_common::settings::DataSettings;
use legion_control_plane::store::pg::{self, PgStore};
use sqlx::{Connection, PgConnection};

/// The maintenance database used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("LEGION_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database `legion_cp_test_<uuid>` that is dropped with this guard, even when the test panics.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = format!("legion_cp_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin).await.expect("connect to the test PostgreSQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin.rsplit_once('/').map(|(base, _)| base.to_owned()).expect("database url has a path");
        Self { url: format!("{base}/{name}"), name }
    }

    pub fn data_settings(&self) -> DataSettings {
        DataSettings { url: self.url.clone(), max_connections: 8, acquire_timeout_ms: 5000 }
    }

    /// A migrated store over this database.
    pub async fn store(&self) -> PgStore {
        let pool = pg::connect(&self.data_settings()).await.expect("connect");
        pg::migrate(&pool).await.expect("migrate");
        PgStore::new(pool)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop from a thread with its own runtime: Drop cannot await, and may run outside any runtime.
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
                        eprintln!("cannot drop test database {name}: {e}");
                    }
                }
            });
        });
        let _ = handle.join();
    }
}

/// Polls `check` until it returns `Some`, or panics after `deadline` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Registers node `node` with one extension `core` whose runner `util` offers `functions`, straight in
/// the store (no gRPC).
pub async fn register_core(store: &PgStore, node: &str, functions: &[&str]) {
    use legion_control_plane::store::{CatalogStore, ExtensionManifest, FunctionInfo, NodeRegistration, RunnerInfo};
    store
        .register_node(&NodeRegistration {
            name: node.into(),
            region: "default".into(),
            version: "0.1.0".into(),
            concurrency: 4,
            extensions: vec![ExtensionManifest {
                name: "core".into(),
                version: "0.1.0".into(),
                runners: vec![RunnerInfo {
                    name: "util".into(),
                    functions: functions
                        .iter()
                        .map(|f| FunctionInfo { name: (*f).to_owned(), description: String::new() })
                        .collect(),
                }],
            }],
        })
        .await
        .expect("register node");
}
