//! Leader election among control-plane replicas through a lease row in PostgreSQL
//! (`migrations/0006_leases.sql`), for the work that must run on one replica at a time (the scheduler
//! tick of issue 5).
//!
//! A replica takes the lease when it is free or expired and renews it every third of its length, in
//! one statement that PostgreSQL decides with its own clock (so replicas' clocks never disagree about
//! expiry). Every change of holder increments the lease's **epoch**, a fencing token: work done under
//! a lease carries its epoch, and the database refuses work of an older epoch. A leader considers
//! itself leader only until `started + lease × 9/10`, where `started` is when it sent the renewal that
//! succeeded, measured on its own monotonic clock: PostgreSQL set the expiry at least that late, so the
//! leader steps down before any other replica can take over, even if it cannot reach the database. A
//! replica that stops cleanly releases the lease, so another one takes over at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::Result;

/// The lease of the scheduler tick.
pub const SCHEDULER_LEASE: &str = "scheduler";

/// A lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The replica holding it.
    pub holder: String,
    /// The fencing token: incremented on every change of holder, from 1.
    pub epoch: i64,
    /// When the current holder took it (PostgreSQL's clock).
    pub acquired_at: DateTime<Utc>,
    /// When it lapses unless renewed (PostgreSQL's clock).
    pub expires_at: DateTime<Utc>,
}

/// Storage of leases.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes lease `name` for `holder` for `ttl` if it is free, expired or already `holder`'s, and
    /// returns it; returns `None` when another holder's lease is still valid.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// Ends `holder`'s lease `name` now (no effect if another replica holds it).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// The lease `name`, if it was ever taken.
    async fn lease(&self, name: &str) -> Result<Option<Lease>>;
}

/// This replica's leadership: `Some` while it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The epoch of the lease it holds.
    pub epoch: i64,
}

/// Until when a replica that sent a successful renewal at `started` may act as leader: nine tenths of
/// the lease, leaving a tenth for the drift between its clock and PostgreSQL's.
pub fn valid_until(started: Instant, ttl: Duration) -> Instant {
    started + ttl.mul_f64(0.9)
}

/// A unique name for this replica: `<host>/<gRPC listen address>/<random>`, e.g.
/// `cp-0/10.0.0.7:50051/3fa2c1d0`, so an operator can tell which process leads, and two processes never
/// share a name (not even one restarted on the same address).
pub fn holder_name(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control-plane".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{listen}/{}", &random[..8])
}

/// Runs the election for lease `name` until `shutdown`, publishing this replica's leadership on the
/// returned receiver; releases the lease when it stops.
pub fn spawn(
    store: Arc<dyn LeaseStore>,
    name: &'static str,
    holder: String,
    ttl: Duration,
    shutdown: CancellationToken,
) -> (watch::Receiver<Option<Leadership>>, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = watch::channel(None);
    let task = tokio::spawn(elect(store, name, holder, ttl, sender, shutdown));
    (receiver, task)
}

async fn elect(
    store: Arc<dyn LeaseStore>,
    name: &'static str,
    holder: String,
    ttl: Duration,
    leadership: watch::Sender<Option<Leadership>>,
    shutdown: CancellationToken,
) {
    let renew = ttl / 3;
    let mut until: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let attempt = tokio::time::timeout(renew, store.acquire_lease(name, &holder, ttl)).await;
        let now = Instant::now();
        match attempt {
            Ok(Ok(Some(lease))) if lease.holder == holder => {
                until = Some(valid_until(started, ttl));
                let led = leadership.send_replace(Some(Leadership { epoch: lease.epoch }));
                if led.map(|l| l.epoch) != Some(lease.epoch) {
                    tracing::info!(lease = name, epoch = lease.epoch, holder = %holder, "leading");
                }
            }
            Ok(Ok(_)) => {
                until = None;
                if leadership.send_replace(None).is_some() {
                    // Rare (a takeover while this replica believed it led): name the new holder.
                    let leader = store.lease(name).await.ok().flatten().map(|l| l.holder).unwrap_or_default();
                    tracing::warn!(lease = name, replica = %holder, new_holder = %leader, "lease taken by another replica; no longer leading");
                }
            }
            Ok(Err(e)) => tracing::warn!(lease = name, error = %e, "cannot renew the lease"),
            Err(_) => tracing::warn!(lease = name, "renewing the lease timed out"),
        }
        if until.is_some_and(|u| now >= u) {
            until = None;
            if leadership.send_replace(None).is_some() {
                tracing::warn!(lease = name, "lease not renewed in time; no longer leading");
            }
        }
        // Wake for the next renewal, or earlier to step down when the lease runs out unrenewed.
        let next = until.map_or(started + renew, |u| (started + renew).min(u));
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shutdown.cancelled() => break,
        }
    }
    if leadership.send_replace(None).is_some() {
        match store.release_lease(name, &holder).await {
            Ok(()) => tracing::info!(lease = name, holder = %holder, "lease released"),
            Err(e) => tracing::warn!(lease = name, error = %e, "cannot release the lease; it lapses by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_steps_down_before_its_lease_can_be_taken() {
        let started = Instant::now();
        let ttl = Duration::from_secs(10);
        assert_eq!(valid_until(started, ttl), started + Duration::from_secs(9));
        assert!(valid_until(started, ttl) < started + ttl);
    }

    #[test]
    fn holder_names_are_unique() {
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 50051));
        assert_ne!(holder_name(listen), holder_name(listen));
        let name = holder_name(listen);
        assert!(name.contains("/127.0.0.1:50051/"), "{name}");
    }
}
