//! Waiting that ends when the process is told to stop.

use tokio::sync::watch;

/// Completes once `stop` is true; never, if its sender is gone without saying so.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `future`'s output, or `None` if `stop` turned true first.
pub async fn until_stopped<F: std::future::Future>(
    stop: &watch::Receiver<bool>,
    future: F,
) -> Option<F::Output> {
    let mut stop = stop.clone();
    if *stop.borrow() {
        return None;
    }
    tokio::select! {
        output = future => Some(output),
        _ = stopped(&mut stop) => None,
    }
}

/// A service's task that panicked (or was cancelled) instead of ending.
#[derive(Debug, thiserror::Error)]
#[error("the {task} task failed: {source}")]
pub struct TaskFailed {
    pub task: &'static str,
    #[source]
    source: tokio::task::JoinError,
}

/// What `handle`'s task returned; a panic becomes an error that names the task, so a
/// shutdown can finish its other steps and still report it.
pub async fn join<T>(
    task: &'static str,
    handle: tokio::task::JoinHandle<T>,
) -> Result<T, TaskFailed> {
    handle.await.map_err(|source| TaskFailed { task, source })
}
