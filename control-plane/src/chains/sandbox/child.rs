//! The sandbox process: `legion-control-plane sandbox --memory-bytes N --max-output-bytes N`.

use std::io::{self, BufRead, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

use rlimit::Resource;

use super::{MAX_REQUEST_BYTES, Reply, Request};
use crate::chains::transform::{Transformation, truncate};

/// Open file descriptors the sandbox process may hold (`RLIMIT_NOFILE`): stdin, stdout, stderr and a
/// few the runtime may need; it opens no file or socket itself.
pub const SANDBOX_MAX_FILES: u64 = 16;

/// How often the sandbox process checks that the control plane that started it is still its parent.
const ORPHAN_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// Characters of a request parse error kept in the reply.
const MAX_REASON_CHARS: usize = 500;

/// Body of the hidden `sandbox` subcommand. Sets its own resource limits (`RLIMIT_AS` =
/// `memory_bytes`, `RLIMIT_CORE` 0, `RLIMIT_FSIZE` 0, `RLIMIT_NOFILE` [`SANDBOX_MAX_FILES`]; soft and
/// hard alike, so they cannot be raised again), then answers one JSON line on stdout for each request
/// line on stdin (see [`super`]) until stdin closes. It loads no settings and opens no sockets. A
/// request line over [`MAX_REQUEST_BYTES`] gets an error reply; a transformation that panics gets an
/// error reply; running out of memory aborts the process, which the pool reports.
///
/// A watchdog thread ends the process as soon as its parent is gone (the control plane was killed):
/// a closed stdin is only noticed between evaluations, and a runaway evaluation would otherwise run on,
/// orphaned, with nobody left to enforce its timeout.
///
/// Exit status: 0 at the end of stdin, 1 when the limits cannot be set or stdout is gone, 2 when the
/// parent died.
pub fn serve_stdio(memory_bytes: u64, max_output_bytes: usize) -> ExitCode {
    if let Err(e) = set_limits(memory_bytes) {
        eprintln!("legion-control-plane sandbox: cannot set resource limits: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = watch_parent() {
        eprintln!("legion-control-plane sandbox: cannot start the parent watchdog: {e}");
        return ExitCode::FAILURE;
    }
    let mut input = io::stdin().lock();
    let mut output = io::BufWriter::new(io::stdout().lock());
    loop {
        let reply = match read_request(&mut input, MAX_REQUEST_BYTES) {
            Ok(None) => return ExitCode::SUCCESS,
            Ok(Some(Some(line))) => answer(&line, max_output_bytes),
            Ok(Some(None)) => Reply::Error(format!("transformation request exceeds {MAX_REQUEST_BYTES} bytes")),
            Err(e) => {
                eprintln!("legion-control-plane sandbox: cannot read stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        let written = serde_json::to_writer(&mut output, &reply)
            .map_err(io::Error::from)
            .and_then(|()| output.write_all(b"\n"))
            .and_then(|()| output.flush());
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
}

/// Exits the process (status 2) once its parent process changes, i.e. the control plane died and the
/// process was re-parented.
fn watch_parent() -> io::Result<()> {
    let parent = std::os::unix::process::parent_id();
    std::thread::Builder::new().name("parent-watchdog".into()).stack_size(64 * 1024).spawn(move || {
        loop {
            std::thread::sleep(ORPHAN_CHECK);
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(2);
            }
        }
    })?;
    Ok(())
}

fn set_limits(memory_bytes: u64) -> io::Result<()> {
    Resource::CORE.set(0, 0)?;
    Resource::FSIZE.set(0, 0)?;
    Resource::NOFILE.set(SANDBOX_MAX_FILES, SANDBOX_MAX_FILES)?;
    Resource::AS.set(memory_bytes, memory_bytes)
}

/// Evaluates one request line.
fn answer(line: &[u8], max_output_bytes: usize) -> Reply {
    let request: Request<Transformation, serde_json::Value> = match serde_json::from_slice(line) {
        Ok(request) => request,
        Err(e) => {
            return Reply::Error(format!(
                "invalid transformation request: {}",
                truncate(&e.to_string(), MAX_REASON_CHARS)
            ));
        }
    };
    let evaluated =
        catch_unwind(AssertUnwindSafe(|| request.transformation.evaluate(&request.context, max_output_bytes)));
    match evaluated {
        Ok(Ok(value)) => Reply::Ok(value),
        Ok(Err(reason)) => Reply::Error(reason),
        Err(_) => Reply::Error("transformation evaluation panicked".to_owned()),
    }
}

/// Reads one line of at most `limit` bytes without its newline: `None` at the end of input,
/// `Some(None)` for a longer line (skipped up to its newline), `Some(Some(line))` otherwise. A last line
/// without newline counts as a line.
fn read_request(input: &mut impl BufRead, limit: usize) -> io::Result<Option<Option<Vec<u8>>>> {
    let mut line = Vec::new();
    let read = input.by_ref().take(limit as u64 + 1).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Some(Some(line)));
    }
    if line.len() <= limit {
        return Ok(Some(Some(line)));
    }
    drop(line);
    loop {
        let (done, used) = {
            let chunk = input.fill_buf()?;
            match chunk.iter().position(|b| *b == b'\n') {
                _ if chunk.is_empty() => (true, 0),
                Some(newline) => (true, newline + 1),
                None => (false, chunk.len()),
            }
        };
        input.consume(used);
        if done {
            return Ok(Some(None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_up_to_the_limit() {
        let mut input = io::Cursor::new(b"short\n0123456789abc\nlast".to_vec());
        assert_eq!(read_request(&mut input, 10).expect("read"), Some(Some(b"short".to_vec())));
        assert_eq!(read_request(&mut input, 10).expect("read"), Some(None), "too long, skipped");
        assert_eq!(read_request(&mut input, 10).expect("read"), Some(Some(b"last".to_vec())));
        assert_eq!(read_request(&mut input, 10).expect("read"), None);
    }

    #[test]
    fn replies_are_one_json_object() {
        let line = br#"{"transformation":{"engine":"jq","expr":".a"},"context":{"a":[1]}}"#;
        assert_eq!(serde_json::to_string(&answer(line, 1024)).expect("json"), r#"{"ok":[1]}"#);
        let line = br#"{"transformation":{"engine":"jq","expr":"error(\"no\")"},"context":{}}"#;
        assert_eq!(serde_json::to_string(&answer(line, 1024)).expect("json"), r#"{"error":"no"}"#);
        let reply = serde_json::to_string(&answer(b"{", 1024)).expect("json");
        assert!(reply.starts_with(r#"{"error":"invalid transformation request: "#), "{reply}");
    }
}
