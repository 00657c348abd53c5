//! Waiting for a service's tasks at shutdown.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use recoup_runtime::shutdown::{join, until_stopped};
use tokio::sync::watch;

#[tokio::test]
async fn a_panicked_task_is_an_error_that_names_it() {
    let ended = join("relay", tokio::spawn(async { 7 })).await.unwrap();
    assert_eq!(ended, 7);

    let panicked = tokio::spawn(async move {
        if ended == 7 {
            panic!("boom");
        }
    });
    let error = join("outbox relay", panicked).await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the outbox relay task failed: "),
        "{error}"
    );
    assert_eq!(error.task, "outbox relay");
}

#[tokio::test]
async fn until_stopped_gives_up_when_told_to_stop() {
    let (stop, stopping) = watch::channel(false);
    assert_eq!(until_stopped(&stopping, async { 1 }).await, Some(1));
    let waiting = tokio::spawn(async move {
        until_stopped(&stopping, tokio::time::sleep(Duration::from_secs(3600))).await
    });
    stop.send(true).unwrap();
    assert_eq!(waiting.await.unwrap(), None);
}
