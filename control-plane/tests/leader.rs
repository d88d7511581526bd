//! Leader election through the PostgreSQL lease: one leader among contending replicas, takeover with a
//! new epoch after the leader stops renewing (a crash) or releases (a clean stop), and a leader that
//! steps down before its lease can be taken.

#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use legion_control_plane::leader::{self, Leadership, LeaseStore};
use support::{TestDb, eventually};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_millis(1500);

struct Replica {
    leadership: watch::Receiver<Option<Leadership>>,
    task: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

fn replica(store: Arc<dyn LeaseStore>, name: &str) -> Replica {
    let shutdown = CancellationToken::new();
    let (leadership, task) = leader::spawn(store, "test-lease", name.to_owned(), TTL, shutdown.clone());
    Replica { leadership, task, shutdown }
}

fn leaders(replicas: &[&Replica]) -> Vec<i64> {
    replicas.iter().filter_map(|r| *r.leadership.borrow()).map(|l| l.epoch).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over_with_a_new_epoch() {
    let db = TestDb::create().await;
    let store: Arc<dyn LeaseStore> = Arc::new(db.store().await);
    let a = replica(store.clone(), "a");
    let b = replica(store.clone(), "b");
    let c = replica(store.clone(), "c");
    let first = eventually("a leader", Duration::from_secs(10), || async {
        let epochs = leaders(&[&a, &b, &c]);
        (epochs.len() == 1).then(|| epochs[0])
    })
    .await;
    assert_eq!(first, 1);
    // For a few renewals, still exactly one leader, the same epoch.
    for _ in 0..6 {
        tokio::time::sleep(TTL / 3).await;
        assert_eq!(leaders(&[&a, &b, &c]), [1]);
    }

    // The leader crashes: its task stops without releasing. Another replica leads once the lease
    // lapses, with epoch 2; never two leaders at once.
    let replicas = [a, b, c];
    let crashed = replicas.iter().position(|r| r.leadership.borrow().is_some()).unwrap();
    replicas[crashed].task.abort();
    let others: Vec<&Replica> = replicas.iter().enumerate().filter(|(i, _)| *i != crashed).map(|(_, r)| r).collect();
    let started = std::time::Instant::now();
    let second = eventually("a new leader", Duration::from_secs(10), || async {
        let epochs = leaders(&others);
        assert!(epochs.len() <= 1, "two leaders: {epochs:?}");
        (epochs.len() == 1).then(|| epochs[0])
    })
    .await;
    assert_eq!(second, 2);
    assert!(started.elapsed() >= TTL / 2, "took over after {:?}, before the lease could lapse", started.elapsed());
    let lease = store.lease("test-lease").await.unwrap().unwrap();
    assert_eq!(lease.epoch, 2);

    // A clean stop releases the lease: the last replica takes over without waiting for it to lapse.
    let leading = others.iter().position(|r| r.leadership.borrow().is_some()).unwrap();
    others[leading].shutdown.cancel();
    let last = others[1 - leading];
    let third =
        eventually("the last replica leads", Duration::from_secs(5), || async { *last.leadership.borrow() }).await;
    assert_eq!(third.epoch, 3);
    for r in &replicas {
        r.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_judged_by_the_database() {
    let db = TestDb::create().await;
    let store = db.store().await;
    let a = store.acquire_lease("l", "a", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!((a.holder.as_str(), a.epoch), ("a", 1));
    // Held: another holder is refused; the holder renews without a new epoch.
    assert_eq!(store.acquire_lease("l", "b", Duration::from_secs(60)).await.unwrap(), None);
    assert_eq!(store.acquire_lease("l", "a", Duration::from_secs(60)).await.unwrap().unwrap().epoch, 1);
    // Released: the next holder gets epoch 2; releasing someone else's lease does nothing.
    store.release_lease("l", "b").await.unwrap();
    assert_eq!(store.acquire_lease("l", "b", Duration::from_secs(60)).await.unwrap(), None);
    store.release_lease("l", "a").await.unwrap();
    let b = store.acquire_lease("l", "b", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!((b.holder.as_str(), b.epoch), ("b", 2));
}
