//! Helpers shared by the unit tests of the spool and of the reporter that spools: spool and replay
//! options for a temporary directory, and an `eventually` wait.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Options, replay};

/// A spool key: base64 of 32 bytes `byte`.
pub(crate) fn key(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

/// Spool options under `root` for node `exec-1`: key [`key`]`(7)`, 1 MiB files, 1 GiB in all, a
/// retention of an hour.
pub(crate) fn options(root: &Path) -> Options {
    Options {
        dir: root.join("spool/exec-1"),
        node: "exec-1".into(),
        key: Some(key(7)),
        file_bytes: 1 << 20,
        max_bytes: 1 << 30,
        retention: Duration::from_secs(3600),
    }
}

/// Replay options: batches of `max_batch`, retries from 5 ms up to 20 ms.
pub(crate) fn replay_options(max_batch: usize) -> replay::Options {
    replay::Options { max_batch, retry_initial: Duration::from_millis(5), retry_max: Duration::from_millis(20) }
}

/// Polls `condition` every 10 ms; panics naming `what` after 20 s.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
