//! A PostgreSQL outage for tests: a guard that stops the machine's cluster (`pg_ctlcluster
//! --skip-systemctl-redirect <version> main stop`, fast mode, which closes every connection) and always
//! starts it again, like [`crate::rabbit::RabbitOutage`] does for RabbitMQ. Needs root (as `.ci/run`
//! does) and the exclusive service lock: every test database lives on this cluster.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::TestEnv;
use crate::lock::ServiceLock;
use crate::outage::{CommandError, Outage, Service, run_command};

/// The cluster's listener.
pub const PG_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 5432);
/// How long the cluster may take to accept connections again after `start`.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// Where Debian keeps one directory per installed PostgreSQL version.
pub const CLUSTERS_DIR: &str = "/etc/postgresql";

/// Outage failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No cluster to stop.
    #[error("no postgresql cluster under {CLUSTERS_DIR}")]
    NoCluster,
    /// `pg_ctlcluster` could not be started or exited with an error.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// An outage needs the exclusive service lock.
    #[error("stopping postgresql needs the exclusive service lock (TestEnv::start_exclusive)")]
    NotExclusive,
    /// The cluster did not accept a query in time.
    #[error("postgresql did not answer on {addr} within {timeout:?} after start")]
    NotBack {
        /// The listener.
        addr: SocketAddr,
        /// How long the harness waited.
        timeout: Duration,
    },
}

/// The newest installed version (`/etc/postgresql/<version>`), as `.ci/run` picks it.
///
/// # Errors
/// [`Error::NoCluster`].
pub fn cluster_version() -> Result<String, Error> {
    let entries = std::fs::read_dir(CLUSTERS_DIR).map_err(|_| Error::NoCluster)?;
    let mut versions: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|v| v.split('.').next().and_then(|major| major.parse().ok()).map(|major| (major, v)))
        .collect();
    versions.sort();
    versions.pop().map(|(_, v)| v).ok_or(Error::NoCluster)
}

/// Runs `pg_ctlcluster --skip-systemctl-redirect <version> main ACTION` to completion (`stop` uses the
/// fast mode: sessions are ended, open transactions roll back). Blocking.
///
/// # Errors
/// [`Error`] when it cannot run or fails.
pub fn pg_ctlcluster(action: &str) -> Result<(), Error> {
    let version = cluster_version()?;
    let args = ["--skip-systemctl-redirect", version.as_str(), "main", action];
    run_command("pg_ctlcluster", &args, "")?;
    Ok(())
}

/// While this guard lives, PostgreSQL is stopped. [`PostgresOutage::end`] or, failing that, `Drop`
/// starts it and waits until it accepts connections, so a panicking test never leaves it down; it
/// borrows the exclusive [`ServiceLock`], which is therefore released only after the cluster is back.
/// A SIGTERM or SIGINT during the outage starts the cluster before the process exits (code 130).
pub type PostgresOutage<'lock> = Outage<'lock, Error>;

/// How the outage stops and starts the cluster.
static POSTGRESQL: Service<Error> = Service {
    name: "postgresql",
    // `/etc/postgresql` is CLUSTERS_DIR.
    start_hint: "run `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
    not_exclusive: || Error::NotExclusive,
    stop: || pg_ctlcluster("stop"),
    restart,
};

impl<'lock> Outage<'lock, Error> {
    /// Stops the cluster (fast shutdown: sessions are ended, in-flight transactions roll back).
    ///
    /// # Errors
    /// [`Error::NotExclusive`] without the exclusive lock; [`Error`] when the stop fails (the guard is
    /// dropped then, which starts the cluster again).
    pub async fn begin(lock: &'lock ServiceLock) -> Result<Self, Error> {
        Outage::stop(lock, &POSTGRESQL).await
    }
}

impl TestEnv {
    /// Stops PostgreSQL until the returned guard ends or drops. Needs [`TestEnv::start_exclusive`].
    ///
    /// # Errors
    /// [`Error::NotExclusive`] under the shared lock, or `pg_ctlcluster` failures.
    pub async fn stop_postgres(&self) -> Result<PostgresOutage<'_>, Error> {
        PostgresOutage::begin(self.service_lock()).await
    }
}

/// `start` (a cluster already running makes it fail, which is fine when the port answers), then a TCP
/// connect to the listener until it succeeds, then `pg_isready` until the server accepts sessions.
fn restart() -> Result<(), Error> {
    let started = pg_ctlcluster("start");
    let addr = SocketAddr::from(PG_ADDR);
    let deadline = Instant::now() + RESTART_TIMEOUT;
    loop {
        let listening = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
        let ready = listening
            && Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-p", "5432", "-q"])
                .status()
                .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if Instant::now() >= deadline {
            started?;
            return Err(Error::NotBack { addr, timeout: RESTART_TIMEOUT });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_version_is_a_number_when_installed() {
        if std::path::Path::new(CLUSTERS_DIR).is_dir() {
            let version = cluster_version().expect("a version");
            assert!(version.split('.').next().is_some_and(|m| m.parse::<u32>().is_ok()), "{version}");
        }
    }
}
