//! The `ScheduleService` side of the `schedule` scenario: a client on its own HTTP/2 connection, and a
//! driver that makes N calls (creates, then deletes) with `concurrency` in flight. Calls are not
//! retried: a failure is counted by gRPC code and reported.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use legion_proto::v1::schedule_service_client::ScheduleServiceClient;
use legion_proto::v1::{CreateScheduleRequest, DeleteScheduleRequest, Schedule};

use crate::client::{self, AuthChannel, ClientOptions};

/// Client of `legion.v1.ScheduleService`, sending the caller's credential.
pub type ScheduleClient = ScheduleServiceClient<AuthChannel>;

/// A lazily connected `ScheduleService` client with the TLS settings, window sizes and credential of
/// [`client::connect`].
///
/// # Errors
/// [`client::Error`] naming the flag at fault.
pub fn connect(options: &ClientOptions) -> Result<ScheduleClient, client::Error> {
    let channel = client::endpoint(options)?.connect_lazy();
    Ok(ScheduleServiceClient::with_interceptor(channel, client::credential(options)?))
}

/// What a round of calls did.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    /// Round trips of the calls that succeeded.
    pub ok: Vec<Duration>,
    /// Calls that succeeded and returned a schedule, by index (creates only).
    pub schedules: BTreeMap<usize, Schedule>,
    /// Failed calls by gRPC code name.
    pub failures: BTreeMap<String, u64>,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// From the first call to the last answer.
    pub elapsed: Duration,
}

impl Calls {
    /// Calls that failed.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn record(&mut self, outcome: Result<(Duration, Option<(usize, Schedule)>), tonic::Status>) {
        match outcome {
            Ok((rpc, schedule)) => {
                self.ok.push(rpc);
                if let Some((index, schedule)) = schedule {
                    self.schedules.insert(index, schedule);
                }
            }
            Err(status) => {
                *self.failures.entry(format!("{:?}", status.code())).or_default() += 1;
                self.first_error.get_or_insert_with(|| status.message().to_owned());
            }
        }
    }
}

/// Creates `schedules` (index → schedule) with `concurrency` calls in flight, logging progress every
/// two seconds; the returned schedules are the control plane's answers (with `next_fires`).
pub async fn create_all(client: &ScheduleClient, schedules: Vec<Schedule>, concurrency: usize) -> Calls {
    let total = schedules.len();
    drive("creating schedules", total, concurrency, schedules.into_iter().enumerate(), |(index, schedule)| {
        let mut client = client.clone();
        async move {
            let reply = client.create_schedule(CreateScheduleRequest { schedule: Some(schedule) }).await?;
            Ok(Some((index, reply.into_inner())))
        }
    })
    .await
}

/// Deletes the schedules `names` with `concurrency` calls in flight.
pub async fn delete_all(client: &ScheduleClient, names: Vec<String>, concurrency: usize) -> Calls {
    let total = names.len();
    drive("deleting schedules", total, concurrency, names.into_iter(), |name| {
        let mut client = client.clone();
        async move {
            client.delete_schedule(DeleteScheduleRequest { name }).await?;
            Ok(None)
        }
    })
    .await
}

async fn drive<I, F, Fut>(what: &'static str, total: usize, concurrency: usize, items: I, call: F) -> Calls
where
    I: Iterator,
    F: Fn(I::Item) -> Fut,
    Fut: Future<Output = Result<Option<(usize, Schedule)>, tonic::Status>>,
{
    let done = Arc::new(AtomicUsize::new(0));
    let progress = tokio::spawn(log_progress(what, Arc::clone(&done), total));
    let started = Instant::now();
    let mut calls = Calls::default();
    let mut answers = futures_util::stream::iter(items)
        .map(|item| {
            let t0 = Instant::now();
            let answer = call(item);
            async move { answer.await.map(|schedule| (t0.elapsed(), schedule)) }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(outcome) = answers.next().await {
        done.fetch_add(1, Ordering::Relaxed);
        calls.record(outcome);
    }
    calls.elapsed = started.elapsed();
    progress.abort();
    if let Some(error) = &calls.first_error {
        tracing::warn!(what, failures = ?calls.failures, first_error = %error, "some calls failed");
    }
    calls
}

async fn log_progress(what: &'static str, done: Arc<AtomicUsize>, total: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tick.tick().await;
        tracing::info!(done = done.load(Ordering::Relaxed), total, "{what}");
    }
}
