//! The lock that keeps tests which stop a shared service (RabbitMQ, PostgreSQL) away from every other
//! end-to-end test.
//!
//! Every ordinary test holds a shared `flock(2)` on [`LOCK_PATH`] for its whole duration; a test that
//! stops a service holds it exclusively. `flock` lets new shared holders in while an exclusive request
//! waits, so a steady stream of ordinary tests could starve the exclusive one; a second file,
//! [`INTENT_PATH`], makes the lock writer-preferring: the exclusive side holds it exclusively while it
//! waits, and the shared side passes through it (takes and releases it shared) before it locks.
//! `flock` locks belong to the open file, so they work between test processes (nextest) and between
//! threads of one process (`cargo test`) alike, and the kernel releases them when a process dies.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// The lock every end-to-end test takes, shared or exclusive.
pub const LOCK_PATH: &str = "/tmp/legion-e2e.lock";
/// Held exclusively by a test that waits for the exclusive lock, so that new shared holders queue.
pub const INTENT_PATH: &str = "/tmp/legion-e2e.intent.lock";

/// Failure to open or lock a lock file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lock file could not be opened or created.
    #[error("cannot open lock file {path}: {source}")]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `flock` failed.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Which side of the lock a holder has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ordinary tests: many at once.
    Shared,
    /// Tests that stop a shared service: alone.
    Exclusive,
}

/// A held service lock; released when dropped (the file is closed).
#[derive(Debug)]
pub struct ServiceLock {
    _file: File,
    mode: Mode,
}

impl ServiceLock {
    /// Blocks until the lock is held in `mode`. Blocking: call it from a blocking context
    /// (`tokio::task::spawn_blocking`) in async code.
    ///
    /// # Errors
    /// [`Error`] when a lock file cannot be opened or locked.
    pub fn acquire(mode: Mode) -> Result<Self, Error> {
        Self::acquire_at(Path::new(LOCK_PATH), Path::new(INTENT_PATH), mode)
    }

    /// [`ServiceLock::acquire`] with other files (unit tests use this).
    ///
    /// # Errors
    /// [`Error`] when a lock file cannot be opened or locked.
    pub fn acquire_at(lock: &Path, intent: &Path, mode: Mode) -> Result<Self, Error> {
        let intent_file = open(intent)?;
        let file = open(lock)?;
        let locked = |path: &Path, result: std::io::Result<()>| {
            result.map_err(|source| Error::Lock { path: path.to_path_buf(), source })
        };
        match mode {
            Mode::Shared => {
                // Queue behind a waiting exclusive holder, then let the next one in.
                locked(intent, intent_file.lock_shared())?;
                drop(intent_file);
                locked(lock, file.lock_shared())?;
            }
            Mode::Exclusive => {
                locked(intent, intent_file.lock())?;
                locked(lock, file.lock())?;
                drop(intent_file);
            }
        }
        Ok(Self { _file: file, mode })
    }

    /// The side of the lock held.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

fn open(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| Error::Open { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn shared_holders_coexist_and_exclusive_waits_for_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lock, intent) = (dir.path().join("l"), dir.path().join("i"));
        let a = ServiceLock::acquire_at(&lock, &intent, Mode::Shared).expect("first shared");
        let b = ServiceLock::acquire_at(&lock, &intent, Mode::Shared).expect("second shared");
        assert_eq!((a.mode(), b.mode()), (Mode::Shared, Mode::Shared));

        let (tx, rx) = mpsc::channel();
        let (l, i) = (lock, intent);
        let writer = std::thread::spawn(move || {
            let held = ServiceLock::acquire_at(&l, &i, Mode::Exclusive).expect("exclusive");
            tx.send(()).expect("send");
            held
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "exclusive must wait for shared holders");
        drop((a, b));
        rx.recv_timeout(Duration::from_secs(5)).expect("exclusive after shared holders left");
        let held = writer.join().expect("writer thread");
        assert_eq!(held.mode(), Mode::Exclusive);
    }

    #[test]
    fn a_waiting_exclusive_holder_keeps_new_shared_holders_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lock, intent) = (dir.path().join("l"), dir.path().join("i"));
        let first = ServiceLock::acquire_at(&lock, &intent, Mode::Shared).expect("shared");

        let (l, i) = (lock.clone(), intent.clone());
        let (wtx, wrx) = mpsc::channel();
        let writer = std::thread::spawn(move || {
            let held = ServiceLock::acquire_at(&l, &i, Mode::Exclusive).expect("exclusive");
            wtx.send(()).expect("send");
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        // Give the writer time to take the intent lock and queue on the main lock.
        std::thread::sleep(Duration::from_millis(200));
        let (l, i) = (lock, intent);
        let (rtx, rrx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let held = ServiceLock::acquire_at(&l, &i, Mode::Shared).expect("late shared");
            rtx.send(()).expect("send");
            drop(held);
        });
        assert!(rrx.recv_timeout(Duration::from_millis(300)).is_err(), "a late shared holder must queue");
        drop(first);
        wrx.recv_timeout(Duration::from_secs(5)).expect("writer runs first");
        rrx.recv_timeout(Duration::from_secs(5)).expect("late shared holder runs after the writer");
        writer.join().expect("writer thread");
        reader.join().expect("reader thread");
    }
}
