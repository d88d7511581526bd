//! Waiting for a started process to become ready, failing early when it exits.

use std::time::Instant;

use crate::env::{Error, LOG_TAIL_LINES, READY_TIMEOUT};
use crate::process::Service;
use crate::wait;

/// Polls `url` until it answers 200; fails at once if the process exits.
pub(crate) async fn wait_http_ready(http: &reqwest::Client, service: &mut Service, url: &str) -> Result<(), Error> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = service.exited() {
            return Err(not_ready(service, format!("exited with {status}")));
        }
        let last = match http.get(url).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => format!("{url} answered {}", r.status()),
            Err(e) => format!("{url}: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(not_ready(service, format!("{last} after {READY_TIMEOUT:?}")));
        }
        tokio::time::sleep(wait::POLL_INTERVAL).await;
    }
}

/// A [`Error::NotReady`] for `service` with the tail of its log.
pub(crate) fn not_ready(service: &Service, reason: String) -> Error {
    Error::NotReady {
        what: service.name().to_owned(),
        reason,
        log: service.log().display().to_string(),
        tail: service.log_tail(LOG_TAIL_LINES),
    }
}
