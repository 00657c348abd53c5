//! Running many streams: one pass over every stream ([`Mode::Once`], `recoup pull --once`) or
//! each stream again every interval ([`Mode::Every`], the `export-puller` service), with at most
//! a given number of cycles running at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use recoup_runtime::shutdown::stopped;

use crate::pull::{CycleReport, PullError, Puller, Stream};
use crate::store::StreamId;

/// How often streams are pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One cycle per stream, then return.
    Once,
    /// A cycle per stream, then the next one this long after the last ended, until stopped.
    Every(Duration),
}

/// How one stream's last cycle ended.
#[derive(Debug)]
pub struct StreamOutcome {
    pub stream: StreamId,
    pub result: Result<CycleReport, PullError>,
}

/// Runs the streams as `mode` says, at most `max_concurrent` cycles at a time (at least 1).
/// Returns the last outcome of every stream: in [`Mode::Once`] when all are done, in
/// [`Mode::Every`] once `stop` turned true and the cycles in flight stopped at a page boundary.
///
/// In [`Mode::Every`] a stream whose cycle failed for a reason that cannot pass by itself
/// (credentials, a dataset the lender does not have: [`PullError::is_permanent`]) is not pulled
/// again; other failures are logged and the stream is pulled again at the next interval,
/// resuming where it stopped.
pub async fn run(
    puller: Arc<Puller>,
    streams: Vec<Stream>,
    mode: Mode,
    max_concurrent: usize,
    stop: watch::Receiver<bool>,
) -> Vec<StreamOutcome> {
    let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut tasks = JoinSet::new();
    for stream in streams {
        let puller = puller.clone();
        let permits = permits.clone();
        let mut stop = stop.clone();
        tasks.spawn(async move {
            let id = stream.id();
            loop {
                let result = {
                    let _permit = permits.acquire().await;
                    puller.pull(&stream, &stop).await
                };
                match &result {
                    Ok(report) => tracing::info!(
                        stream = %id,
                        pages = report.pages,
                        rows = report.rows,
                        published = report.published,
                        unchanged = report.unchanged,
                        rejected = report.rejected,
                        since = ?report.since,
                        "pull cycle done"
                    ),
                    Err(error) if error.is_permanent() => {
                        tracing::error!(stream = %id, %error, "pull failed; this stream is not pulled again until the configuration changes")
                    }
                    Err(error) => tracing::warn!(stream = %id, %error, "pull cycle failed; the next cycle resumes where it stopped"),
                }
                let Mode::Every(interval) = mode else {
                    return StreamOutcome { stream: id, result };
                };
                if result.as_ref().is_ok_and(|r| r.stopped)
                    || *stop.borrow()
                    || result.as_ref().err().is_some_and(PullError::is_permanent)
                {
                    return StreamOutcome { stream: id, result };
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped(&mut stop) => return StreamOutcome { stream: id, result },
                }
            }
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => tracing::error!(%error, "a pull task failed"),
        }
    }
    outcomes.sort_by(|a, b| a.stream.cmp(&b.stream));
    outcomes
}
