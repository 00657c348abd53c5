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
