//! Admission of imports: at most [`ImportSettings::max_running`](super::ImportSettings) run at
//! once on this server (uploads being received count), each within a deadline, and all of them
//! cancellable when the server stops. An import stopped early keeps what Kafka acknowledged;
//! the same upload sent again imports the rest.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::{ImportError, Importer};

/// Seconds a client refused for a full server is told to wait.
pub const BUSY_RETRY_AFTER_SECS: u64 = 5;

/// Why an admitted import stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// It ran past its deadline.
    Deadline(Duration),
    /// The server is stopping.
    Shutdown,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Deadline(deadline) => write!(
                f,
                "the import ran past its deadline of {} s (--import-deadline-seconds)",
                deadline.as_secs()
            ),
            Stop::Shutdown => f.write_str("the server is stopping"),
        }
    }
}

/// The right to run one import: held from before the upload is received until the import
/// ends, whether or not its client waits.
#[derive(Debug)]
pub struct ImportPermit {
    _slot: OwnedSemaphorePermit,
    deadline: Instant,
    budget: Duration,
    stopping: Option<watch::Receiver<bool>>,
}

impl ImportPermit {
    /// Resolves when the import must stop, and says why; pending otherwise.
    pub async fn stopped(&mut self) -> Stop {
        let deadline = tokio::time::sleep_until(self.deadline);
        let shutdown = async {
            match self.stopping.as_mut() {
                Some(stopping) => recoup_runtime::shutdown::stopped(stopping).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => Stop::Deadline(self.budget),
            () = shutdown => Stop::Shutdown,
        }
    }

    /// Why the import must stop now, if it must.
    fn stop_now(&self) -> Option<Stop> {
        if Instant::now() >= self.deadline {
            return Some(Stop::Deadline(self.budget));
        }
        let stopping = self.stopping.as_ref().is_some_and(|s| *s.borrow());
        stopping.then_some(Stop::Shutdown)
    }

    /// Runs `work` unless the import must stop first. The stop is looked at before the work
    /// (work that is always ready, batches queued up, must not hide it), and waited for only
    /// while the work waits: on the hot path, where work is ready at once, no timer is made.
    pub async fn within<F: std::future::Future>(&mut self, work: F) -> Result<F::Output, Stop> {
        if let Some(stop) = self.stop_now() {
            return Err(stop);
        }
        let stop = std::pin::pin!(self.stopped());
        tokio::select! {
            biased;
            output = work => Ok(output),
            stop = stop => Err(stop),
        }
    }
}

/// The slots of imports running at once, and the signal that cancels them.
#[derive(Clone, Debug)]
pub(super) struct Slots {
    semaphore: Arc<Semaphore>,
    max: usize,
    deadline: Duration,
    stopping: Option<watch::Receiver<bool>>,
}

impl Slots {
    pub(super) fn new(max: usize, deadline: Duration) -> Self {
        let max = max.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            deadline,
            stopping: None,
        }
    }
}

impl Importer {
    /// A slot for one import, or [`ImportError::Busy`] when every slot is taken. The deadline
    /// starts now.
    pub fn admit(&self) -> Result<ImportPermit, ImportError> {
        let slots = &self.slots;
        let slot = slots.semaphore.clone().try_acquire_owned().map_err(|_| {
            recoup_metrics::metrics().imports_refused_busy.inc();
            ImportError::Busy {
                running: slots.max,
                retry_after_secs: BUSY_RETRY_AFTER_SECS,
            }
        })?;
        Ok(ImportPermit {
            _slot: slot,
            deadline: Instant::now() + slots.deadline,
            budget: slots.deadline,
            stopping: slots.stopping.clone(),
        })
    }

    /// Imports stop, keeping what Kafka acknowledged, once `stopping` turns true.
    pub fn cancelled_by(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.slots.stopping = Some(stopping);
        self
    }

    /// Imports running (or being received) now.
    pub fn running(&self) -> usize {
        self.slots.max - self.slots.semaphore.available_permits()
    }
}
