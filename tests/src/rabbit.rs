//! RabbitMQ for tests: a vhost per test (`rabbitmqctl add_vhost`, deleted when the handle drops) and a
//! guard that stops the broker's application and always starts it again.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::lock::ServiceLock;
use crate::outage::{CommandError, Outage, Service, run_command};

/// Prefix of every test vhost name; `.ci/run` deletes leftovers by it.
pub const NAME_PREFIX: &str = "legion-e2e-";
/// The broker's AMQP listener.
pub const AMQP_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 5672);
/// How long the broker may take to accept connections again after `start_app`.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(90);

/// `rabbitmqctl` failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `rabbitmqctl` could not be started or exited with an error.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A broker outage needs the exclusive service lock.
    #[error("stopping rabbitmq needs the exclusive service lock (TestEnv::start_exclusive)")]
    NotExclusive,
    /// The broker did not accept connections in time.
    #[error("rabbitmq did not accept connections on {addr} within {timeout:?} after start_app")]
    NotBack {
        /// The AMQP address.
        addr: SocketAddr,
        /// How long the harness waited.
        timeout: Duration,
    },
}

/// Runs `rabbitmqctl -q ARGS` to completion and returns its stdout. Blocking (a few hundred ms).
///
/// # Errors
/// [`Error::Command`].
pub fn rabbitmqctl(args: &[&str]) -> Result<String, Error> {
    let args: Vec<&str> = std::iter::once("-q").chain(args.iter().copied()).collect();
    Ok(run_command("rabbitmqctl", &args, " (is rabbitmq-server installed? .ci/run installs it)")?)
}

/// One queue of a vhost as `rabbitmqctl list_queues` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCounts {
    /// The queue name (`legion.ext.core`, …).
    pub name: String,
    /// Messages ready for delivery.
    pub ready: u64,
    /// Messages delivered and not yet acked.
    pub unacked: u64,
}

/// Every queue of `vhost` with its ready and unacked message counts (`rabbitmqctl list_queues -p
/// VHOST name messages_ready messages_unacknowledged`). Blocking (a few hundred ms); the broker's
/// counts lag the truth by up to a second or so, so callers poll.
///
/// # Errors
/// [`Error`] when `rabbitmqctl` fails.
pub fn queue_counts(vhost: &str) -> Result<Vec<QueueCounts>, Error> {
    let text = rabbitmqctl(&["list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged"])?;
    Ok(parse_queue_counts(&text))
}

/// The rows of `list_queues … name messages_ready messages_unacknowledged` output (tab- or
/// space-separated); header and informational lines, whose counts are not numbers, are skipped.
pub fn parse_queue_counts(text: &str) -> Vec<QueueCounts> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [name, ready, unacked] => Some(QueueCounts {
                    name: (*name).to_owned(),
                    ready: ready.parse().ok()?,
                    unacked: unacked.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect()
}

/// A vhost that exists, with full permissions for `guest`, until this handle drops.
#[derive(Debug)]
pub struct TestVhost {
    name: String,
}

impl TestVhost {
    /// Creates `legion-e2e-<uuid>` and grants `guest` configure, write and read on it. Blocking.
    ///
    /// # Errors
    /// [`Error`] when `rabbitmqctl` fails.
    pub fn create() -> Result<Self, Error> {
        let name = format!("{NAME_PREFIX}{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Self { name };
        rabbitmqctl(&["set_permissions", "-p", &vhost.name, "guest", ".*", ".*", ".*"])?;
        Ok(vhost)
    }

    /// The vhost name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@127.0.0.1:5672/<vhost>`, for `transport.url` (the name needs no escaping).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("legion-tests: cannot delete vhost {}: {e}", self.name);
        }
    }
}

/// While this guard lives, RabbitMQ's application is stopped (`rabbitmqctl stop_app`): every
/// connection is closed and no new one is accepted. [`RabbitOutage::end`] or, failing that, `Drop`
/// starts it again and waits until it accepts AMQP connections, so a panicking test never leaves the
/// broker down. It borrows the exclusive [`ServiceLock`], so the lock is released only after the
/// broker is back. A SIGTERM or SIGINT during the outage (nextest's timeout, Ctrl-C), which would end
/// the process without unwinding, starts the broker before the process exits (code 130).
pub type RabbitOutage<'lock> = Outage<'lock, Error>;

/// How the outage stops and starts the broker application.
static RABBITMQ: Service<Error> = Service {
    name: "rabbitmq",
    start_hint: "run `rabbitmqctl start_app`",
    not_exclusive: || Error::NotExclusive,
    stop: || rabbitmqctl(&["stop_app"]).map(drop),
    restart,
};

impl<'lock> Outage<'lock, Error> {
    /// Stops the broker application (a few seconds).
    ///
    /// # Errors
    /// [`Error::NotExclusive`] without the exclusive lock; [`Error`] when `stop_app` fails (the guard
    /// is dropped then, which starts the application again).
    pub async fn begin(lock: &'lock ServiceLock) -> Result<Self, Error> {
        Outage::stop(lock, &RABBITMQ).await
    }
}

/// `start_app`, `await_startup`, then a TCP connect to the AMQP port until it succeeds.
fn restart() -> Result<(), Error> {
    rabbitmqctl(&["start_app"])?;
    rabbitmqctl(&["await_startup"])?;
    wait_for_amqp(RESTART_TIMEOUT)
}

/// Waits until the AMQP port accepts TCP connections. Blocking.
///
/// # Errors
/// [`Error::NotBack`] after `timeout`.
pub fn wait_for_amqp(timeout: Duration) -> Result<(), Error> {
    let addr = SocketAddr::from(AMQP_ADDR);
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        if Instant::now() >= deadline {
            return Err(Error::NotBack { addr, timeout });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_counts_skip_headers_and_parse_rows() {
        let text = "Timeout: 60.0 seconds ...\nname\tmessages_ready\tmessages_unacknowledged\n\
                    legion.ext.core\t3\t1\nlegion.ext.fault\t0\t0\n";
        assert_eq!(
            parse_queue_counts(text),
            vec![
                QueueCounts { name: "legion.ext.core".into(), ready: 3, unacked: 1 },
                QueueCounts { name: "legion.ext.fault".into(), ready: 0, unacked: 0 },
            ]
        );
        assert!(parse_queue_counts("").is_empty());
    }
}
