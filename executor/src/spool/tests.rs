use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use legion_proto::v1::{
    CompleteTaskRequest, CompleteTaskResponse, CompletionAck, Failure, FailureKind, HeartbeatRequest,
    HeartbeatResponse, RegisterNodeRequest, RegisterNodeResponse, StartTaskRequest, StartTaskResponse, completion,
};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::testing::{eventually, key, options, replay_options};
use super::*;
use crate::client::ControlPlane;

fn completion(n: u32) -> Completion {
    Completion {
        task_id: format!("0190f5c8-0000-7000-8000-{n:012}"),
        attempt: n % 3 + 1,
        outcome: Some(match n % 3 {
            0 => completion::Outcome::ResultJson(format!("{{\"n\":{n}}}").into_bytes()),
            1 => completion::Outcome::Failure(Failure {
                kind: FailureKind::Permanent as i32,
                message: format!("no {n}"),
            }),
            _ => completion::Outcome::ResultJson(vec![0xff, 0xfe, b'x']),
        }),
        duration_ms: u64::from(n) * 10,
    }
}

async fn append_each(spool: &Spool, items: &[Completion]) {
    for item in items {
        let results = spool.append(std::slice::from_ref(item)).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
}

/// Every completion the spool would replay now, in order, without deleting anything.
async fn read_all(spool: &Spool) -> Vec<Completion> {
    let mut out = Vec::new();
    for seq in spool.seal() {
        out.extend(spool.read(seq, Utc::now()).await.expect("read").into_iter().map(|s| s.completion));
    }
    out
}

fn data_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn completions_round_trip_through_encrypted_lines() {
    let root = tempfile::tempdir().expect("tempdir");
    let metrics = Metrics::default();
    let spool = Spool::open(options(root.path()), metrics.clone()).expect("open");
    let items: Vec<Completion> = (0..6).map(completion).collect();
    let results = spool.append(&items).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(read_all(&spool).await, items);
    assert_eq!(metrics.spool_spooled.get(), 6);
    assert_eq!(metrics.spool_bytes.get(), i64::try_from(spool.bytes()).expect("fits"));
    // Nothing of a completion is stored in the clear.
    let file = spool.dir().join(&data_files(spool.dir())[0]);
    let text = fs::read_to_string(file).expect("read");
    assert!(!text.contains("no 1") && !text.contains("0190f5c8"), "{text}");
    assert_eq!(text.lines().count(), 6);
    let mode = fs::metadata(spool.dir()).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[tokio::test]
async fn order_holds_across_rotated_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(Options { file_bytes: 1024, ..options(root.path()) }, Metrics::default()).expect("open");
    let items: Vec<Completion> = (0..40).map(completion).collect();
    append_each(&spool, &items).await;
    let files = data_files(spool.dir());
    assert!(files.len() > 3, "1 KiB files must rotate: {files:?}");
    assert_eq!(files[0], "00000000000000000001.jsonl");
    for name in &files {
        let size = fs::metadata(spool.dir().join(name)).expect("file").len();
        assert!(size <= 1024, "{name} holds {size} bytes");
    }
    assert_eq!(read_all(&spool).await, items);
}

#[test]
fn every_line_gets_its_own_nonce() {
    let codec = Codec::new(&[1; 32], "exec-1");
    let mut nonces = HashSet::new();
    let mut lines = HashSet::new();
    for _ in 0..2000 {
        let line = codec.seal(b"same plaintext");
        let raw = STANDARD.decode(line.trim_ascii_end()).expect("base64");
        nonces.insert(raw[..codec::NONCE_BYTES].to_vec());
        lines.insert(line);
    }
    assert_eq!((nonces.len(), lines.len()), (2000, 2000));
}

#[test]
fn lines_are_bound_to_the_key_and_the_node() {
    let line = Codec::new(&[1; 32], "exec-1").seal(b"payload");
    let body = line.trim_ascii_end();
    assert_eq!(Codec::new(&[1; 32], "exec-1").open(body).expect("opens"), b"payload");
    assert_eq!(Codec::new(&[2; 32], "exec-1").open(body), Err(codec::Error::Decrypt));
    assert_eq!(Codec::new(&[1; 32], "exec-2").open(body), Err(codec::Error::Decrypt));
    assert_eq!(Codec::new(&[1; 32], "exec-1").open(b"%%%"), Err(codec::Error::Encoding));
}

#[tokio::test]
async fn tampered_and_torn_lines_are_skipped_and_counted() {
    let root = tempfile::tempdir().expect("tempdir");
    let metrics = Metrics::default();
    let spool = Spool::open(options(root.path()), metrics.clone()).expect("open");
    let items: Vec<Completion> = (0..3).map(completion).collect();
    append_each(&spool, &items).await;
    let path = spool.dir().join(&data_files(spool.dir())[0]);
    let text = fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Flip one base64 character of the middle line (tampering) and leave a torn line at the end (a
    // crash in the middle of a write).
    let flipped = if lines[1].as_bytes()[20] == b'A' { "B" } else { "A" };
    lines[1].replace_range(20..21, flipped);
    let torn = lines[2][..lines[2].len() / 2].to_owned();
    fs::write(&path, format!("{}\n{}\n{}\n{torn}", lines[0], lines[1], lines[2])).expect("write");
    assert_eq!(read_all(&spool).await, vec![items[0].clone(), items[2].clone()]);
    assert_eq!(metrics.spool_corrupt.get(), 2);
}

#[tokio::test]
async fn a_key_that_does_not_open_the_spool_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let opts = options(root.path());
    {
        let spool = Spool::open(opts.clone(), Metrics::default()).expect("open");
        append_each(&spool, &[completion(1)]).await;
    }
    let other_key = Options { key: Some(key(8)), ..opts.clone() };
    let Err(Error::Settings(message)) = Spool::open(other_key, Metrics::default()) else { panic!("another key") };
    assert!(message.starts_with("executor.spool_key: does not open the spool in "), "{message}");
    let other_node = Options { node: "exec-2".into(), ..opts.clone() };
    assert!(matches!(Spool::open(other_node, Metrics::default()), Err(Error::Settings(_))));
    let Err(Error::Settings(message)) =
        Spool::open(Options { key: Some(STANDARD.encode([1u8; 16])), ..opts.clone() }, Metrics::default())
    else {
        panic!("short key")
    };
    assert_eq!(message, "executor.spool_key: must be base64 of exactly 32 bytes, got 16");
    let Err(Error::Settings(message)) =
        Spool::open(Options { key: Some("not base64!".into()), ..opts.clone() }, Metrics::default())
    else {
        panic!("not base64")
    };
    assert!(message.starts_with("executor.spool_key: must be base64"), "{message}");
    // The right key still opens it, and its completion is still there.
    let spool = Spool::open(opts, Metrics::default()).expect("reopen");
    assert_eq!(read_all(&spool).await, vec![completion(1)]);
}

#[tokio::test]
async fn an_empty_spool_accepts_a_new_key() {
    let root = tempfile::tempdir().expect("tempdir");
    drop(Spool::open(options(root.path()), Metrics::default()).expect("open"));
    let spool = Spool::open(Options { key: Some(key(9)), ..options(root.path()) }, Metrics::default())
        .expect("nothing to lose: the new key replaces the old one");
    append_each(&spool, &[completion(2)]).await;
    drop(spool);
    assert!(Spool::open(options(root.path()), Metrics::default()).is_err(), "now the old key is the wrong one");
}

#[tokio::test]
async fn without_a_configured_key_one_is_created_once_with_mode_0600() {
    let root = tempfile::tempdir().expect("tempdir");
    let opts = Options { key: None, ..options(root.path()) };
    let spool = Spool::open(opts.clone(), Metrics::default()).expect("open");
    append_each(&spool, &[completion(3)]).await;
    let key_path = spool.dir().join(KEY_FILE);
    let key_text = fs::read_to_string(&key_path).expect("key file");
    assert_eq!(codec::decode_key(&key_text).expect("a key").len(), 32);
    assert_eq!(fs::metadata(&key_path).expect("key").permissions().mode() & 0o777, 0o600);
    drop(spool);
    let spool = Spool::open(opts, Metrics::default()).expect("reopen with the same key file");
    assert_eq!(fs::read_to_string(&key_path).expect("key file"), key_text, "created once");
    assert_eq!(read_all(&spool).await, vec![completion(3)]);
}

#[tokio::test]
async fn lines_past_the_retention_are_dropped_and_counted() {
    let root = tempfile::tempdir().expect("tempdir");
    let metrics = Metrics::default();
    let spool = Spool::open(options(root.path()), metrics.clone()).expect("open");
    let now = Utc::now();
    let old = Record::new(&completion(1), now - chrono::Duration::hours(2));
    let fresh = Record::new(&completion(2), now - chrono::Duration::minutes(59));
    let results = spool.append_records(vec![old, fresh]).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(read_all(&spool).await, vec![completion(2)]);
    assert_eq!(metrics.spool_expired.get(), 1);
}

#[tokio::test]
async fn a_completion_that_does_not_fit_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let line = Codec::new(&[7; 32], "exec-1").seal_record(&Record::new(&completion(0), Utc::now())).len() as u64;
    let metrics = Metrics::default();
    let spool =
        Spool::open(Options { max_bytes: 2 * line + line / 2, ..options(root.path()) }, metrics.clone()).expect("open");
    let results = spool.append(&[completion(0), completion(3), completion(6)]).await;
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(matches!(results[2], Err(Error::Full { .. })), "{results:?}");
    assert_eq!(spool.bytes(), 2 * line);
    assert_eq!(metrics.spool_spooled.get(), 2);
    // Replaying frees the room again.
    for seq in spool.seal() {
        spool.remove(seq).expect("remove");
    }
    assert_eq!(spool.bytes(), 0);
    assert!(spool.append(&[completion(6)]).await[0].is_ok());
}

/// A control plane that is down while `down` is set, answers every item otherwise (stale for task
/// ids in `stale`), and records every call.
#[derive(Default)]
pub(crate) struct Flaky {
    pub(crate) down: AtomicBool,
    pub(crate) calls: Mutex<Vec<Vec<Completion>>>,
    pub(crate) answered: Mutex<Vec<Completion>>,
}

#[async_trait]
impl ControlPlane for Flaky {
    async fn register(&self, _r: RegisterNodeRequest) -> Result<RegisterNodeResponse, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn heartbeat(&self, _r: HeartbeatRequest, _t: Duration) -> Result<HeartbeatResponse, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn start_tasks(&self, _r: StartTaskRequest) -> Result<StartTaskResponse, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn complete_tasks(&self, r: CompleteTaskRequest) -> Result<CompleteTaskResponse, Status> {
        self.calls.lock().expect("lock").push(r.items.clone());
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("control plane down"));
        }
        let acks = r
            .items
            .iter()
            .map(|c| CompletionAck { task_id: c.task_id.clone(), accepted: true, reason: String::new() })
            .collect();
        self.answered.lock().expect("lock").extend(r.items);
        Ok(CompleteTaskResponse { acks })
    }
}

#[tokio::test]
async fn a_file_is_deleted_only_after_every_line_was_answered() {
    let root = tempfile::tempdir().expect("tempdir");
    let metrics = Metrics::default();
    let spool = Spool::open(options(root.path()), metrics.clone()).expect("open");
    let items: Vec<Completion> = (0..5).map(completion).collect();
    append_each(&spool, &items).await;
    let cp = Arc::new(Flaky::default());
    cp.down.store(true, Ordering::SeqCst);
    let stop = CancellationToken::new();
    let task = tokio::spawn(replay::run(spool.clone(), cp.clone(), replay_options(2), stop.clone()));
    eventually("retries while down", || cp.calls.lock().expect("lock").len() >= 3).await;
    assert_eq!(data_files(spool.dir()).len(), 1, "nothing answered: the file stays");
    cp.down.store(false, Ordering::SeqCst);
    eventually("the spool emptied", || spool.is_empty()).await;
    assert!(data_files(spool.dir()).is_empty());
    assert_eq!(*cp.answered.lock().expect("lock"), items, "replayed in order");
    let sizes: Vec<usize> = cp.calls.lock().expect("lock").iter().map(Vec::len).collect();
    assert!(sizes.iter().all(|n| *n <= 2), "batches of at most 2: {sizes:?}");
    assert_eq!(metrics.spool_replayed.get(), 5);
    assert_eq!(metrics.spool_bytes.get(), 0);
    stop.cancel();
    task.await.expect("join");
}

#[tokio::test]
async fn a_new_process_replays_what_the_old_one_left() {
    let root = tempfile::tempdir().expect("tempdir");
    let items: Vec<Completion> = (0..30).map(completion).collect();
    {
        let spool =
            Spool::open(Options { file_bytes: 2048, ..options(root.path()) }, Metrics::default()).expect("first run");
        append_each(&spool, &items[..20]).await;
    }
    let metrics = Metrics::default();
    let spool = Spool::open(Options { file_bytes: 2048, ..options(root.path()) }, metrics.clone()).expect("restart");
    assert!(spool.bytes() > 0);
    assert_eq!(metrics.spool_bytes.get(), i64::try_from(spool.bytes()).expect("fits"));
    let before = data_files(spool.dir());
    append_each(&spool, &items[20..]).await;
    let after = data_files(spool.dir());
    assert!(after.len() > before.len(), "a new process appends to a new file");
    let cp = Arc::new(Flaky::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(replay::run(spool.clone(), cp.clone(), replay_options(256), stop.clone()));
    eventually("every completion replayed", || cp.answered.lock().expect("lock").len() == 30).await;
    assert_eq!(*cp.answered.lock().expect("lock"), items);
    eventually("the spool emptied", || spool.is_empty()).await;
    // Appended later: replayed as it comes.
    append_each(&spool, &[completion(99)]).await;
    eventually("the late completion", || cp.answered.lock().expect("lock").len() == 31).await;
    stop.cancel();
    task.await.expect("join");
}
