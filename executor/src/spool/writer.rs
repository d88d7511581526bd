//! The spool's writer: appends lines with rotation and the size cap, one fsync per file and group
//! of requests (see the parent module).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Current, Error, Request, Shared, State, file_name, io_error, sync_dir};

impl Shared {
    /// Appends `lines` in order and fsyncs every file written; blocking.
    fn write(&self, lines: &[Vec<u8>]) -> Vec<Result<(), Error>> {
        let mut state = self.lock();
        let mut results = Vec::with_capacity(lines.len());
        // Indexes of the lines written to the file being appended to, since its last fsync.
        let mut unsynced: Vec<usize> = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let len = line.len() as u64;
            if state.total + len > self.options.max_bytes {
                results.push(Err(Error::Full { held: state.total, line: len, max: self.options.max_bytes }));
                continue;
            }
            let size = state.current.as_ref().map(|c| state.files.get(&c.seq).copied().unwrap_or(0));
            if size.is_some_and(|size| size > 0 && size + len > self.options.file_bytes) {
                self.sync_current(&mut state, &mut unsynced, &mut results);
                state.current = None;
            }
            if state.current.is_none()
                && let Err(e) = self.create_file(&mut state)
            {
                results.push(Err(e));
                continue;
            }
            let Some(current) = state.current.as_mut() else {
                results.push(Err(Error::Io { path: self.options.dir.clone(), reason: "no file to append to".into() }));
                continue;
            };
            let seq = current.seq;
            match current.file.write_all(line) {
                Ok(()) => {
                    *state.files.entry(seq).or_default() += len;
                    state.total += len;
                    unsynced.push(i);
                    results.push(Ok(()));
                }
                Err(e) => {
                    let error = io_error(&self.options.dir.join(file_name(seq)), &e);
                    tracing::error!(error = %error, "spool write failed, sealing the file");
                    // What was written of the line is a torn line, skipped at replay.
                    if let Ok(meta) = current.file.metadata() {
                        let old = state.files.insert(seq, meta.len()).unwrap_or(0);
                        state.total = (state.total + meta.len()).saturating_sub(old);
                    }
                    self.sync_current(&mut state, &mut unsynced, &mut results);
                    state.current = None;
                    results.push(Err(error));
                }
            }
        }
        self.sync_current(&mut state, &mut unsynced, &mut results);
        self.metrics.spool_bytes.set(i64::try_from(state.total).unwrap_or(i64::MAX));
        results
    }

    /// Fsyncs the file being appended to; on failure, turns the answers of its unsynced lines into
    /// errors (their completions then wait for the control plane; a replay of them later is stale).
    fn sync_current(&self, state: &mut State, unsynced: &mut Vec<usize>, results: &mut [Result<(), Error>]) {
        if unsynced.is_empty() {
            return;
        }
        let Some(current) = state.current.as_ref() else { return };
        if let Err(e) = current.file.sync_data() {
            let error = io_error(&self.options.dir.join(file_name(current.seq)), &e);
            tracing::error!(error = %error, "spool fsync failed");
            for i in unsynced.iter() {
                results[*i] = Err(error.clone());
            }
            state.current = None;
        }
        unsynced.clear();
    }

    fn create_file(&self, state: &mut State) -> Result<(), Error> {
        let seq = state.next_seq;
        let path = self.options.dir.join(file_name(seq));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, &e))?;
        sync_dir(&self.options.dir)?;
        state.next_seq = seq + 1;
        state.files.insert(seq, 0);
        state.current = Some(Current { seq, file });
        Ok(())
    }
}

/// The writer task: takes every request that arrived together, writes them with one fsync per file
/// and answers each.
pub(super) async fn write_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while let Ok(request) = rx.try_recv() {
            group.push(request);
        }
        let mut lines = Vec::new();
        let mut answers = Vec::with_capacity(group.len());
        for request in group {
            answers.push((request.lines.len(), request.tx));
            lines.extend(request.lines);
        }
        let count = lines.len();
        let writer = shared.clone();
        let mut results = tokio::task::spawn_blocking(move || writer.write(&lines))
            .await
            .unwrap_or_else(|e| vec![Err(Error::Io { path: shared.options.dir.clone(), reason: e.to_string() }); count])
            .into_iter();
        let written = results.len();
        let mut spooled = 0u64;
        for (n, tx) in answers {
            let part: Vec<Result<(), Error>> = results.by_ref().take(n).collect();
            spooled += part.iter().filter(|r| r.is_ok()).count() as u64;
            let _ = tx.send(part);
        }
        if spooled > 0 {
            shared.metrics.spool_spooled.inc_by(spooled);
            shared.appended.notify_one();
        }
        debug_assert_eq!(written, count);
    }
}
