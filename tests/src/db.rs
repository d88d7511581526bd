//! A PostgreSQL database per test, created on 127.0.0.1:5432 as `postgres` and dropped
//! `WITH (FORCE)` when the handle drops, also during a panic.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// The server every test database lives on (trust auth).
pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Prefix of every test database name; `.ci/run` drops leftovers by it.
pub const NAME_PREFIX: &str = "legion_e2e_";

/// Database setup failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL refused a connection or a statement.
    #[error("postgresql at {SERVER_URL}: {0} (is it running? .ci/run starts it)")]
    Sql(#[from] sqlx::Error),
    /// A database name outside `[a-z0-9_]`.
    #[error("database name {0:?} must hold only a-z, 0-9 and _")]
    Name(String),
}

/// `template` with its `{}` replaced by `name`. An identifier cannot be a bind parameter, so DDL on a
/// database is built from its name, which is checked to hold only `[a-z0-9_]` (generated names do).
fn ddl(template: &str, name: &str) -> Result<AssertSqlSafe<String>, Error> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(Error::Name(name.to_owned()));
    }
    Ok(AssertSqlSafe(template.replacen("{}", name, 1)))
}

/// A database that exists until this handle drops.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    /// Creates `legion_e2e_<uuid>`.
    ///
    /// # Errors
    /// [`Error::Sql`] when the server is unreachable or refuses.
    pub async fn create() -> Result<Self, Error> {
        let name = format!("{NAME_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(SERVER_URL).await?;
        sqlx::query(ddl("CREATE DATABASE \"{}\"", &name)?).execute(&mut conn).await?;
        conn.close().await?;
        Ok(Self { name })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:5432/<name>`, for `data.url`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// A small pool on the database, for assertions on the stored state.
    ///
    /// # Errors
    /// [`Error::Sql`] when the database cannot be reached.
    pub async fn pool(&self) -> Result<PgPool, Error> {
        let options: PgConnectOptions = self.url().parse()?;
        Ok(PgPoolOptions::new().max_connections(2).connect_with(options).await?)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a Tokio runtime, which cannot block on a future; a thread with its own
        // runtime can, and joining it only waits for the DROP.
        let dropped = std::thread::spawn(move || {
            let statement = ddl("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", &name)?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(SERVER_URL).await?;
                sqlx::query(statement).execute(&mut conn).await?;
                conn.close().await
            })?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("legion-tests: cannot drop database {}: {e}", self.name),
            Err(_) => eprintln!("legion-tests: dropping database {} panicked", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_accepts_generated_names_only() {
        let name = format!("{NAME_PREFIX}{}", uuid::Uuid::new_v4().simple());
        assert_eq!(ddl("CREATE DATABASE \"{}\"", &name).expect("safe").0, format!("CREATE DATABASE \"{name}\""));
        for bad in ["", "a\"; DROP DATABASE postgres; --", "Upper", "with space"] {
            assert!(matches!(ddl("DROP DATABASE \"{}\"", bad), Err(Error::Name(_))), "{bad}");
        }
    }
}
