//! Asking for pages: the next page is requested while the current one is published, and every
//! wait ends early when the cycle is told to stop.

use tokio::task::JoinHandle;

use super::Stream;
use super::chain::Request;
use crate::client::{FetchError, Page, PageRequest};

/// One page of `stream`.
pub(super) async fn fetch(stream: Stream, request: Request) -> Result<Page, FetchError> {
    stream
        .client
        .fetch_page(PageRequest {
            dataset: &stream.dataset,
            since: request.since,
            until: request.until,
            cursor: request.cursor.as_deref(),
            limit: request.limit,
        })
        .await
}

/// The next page, asked for while the current one is published; dropped, it is abandoned.
pub(super) struct Prefetch {
    request: Request,
    task: Option<JoinHandle<Result<Page, FetchError>>>,
}

impl Prefetch {
    pub(super) fn start(stream: &Stream, request: Request) -> Self {
        let task = tokio::spawn(fetch(stream.clone(), request.clone()));
        Self {
            request,
            task: Some(task),
        }
    }

    /// The page `request` asks for: the one fetched ahead if it is that one, else fetched now.
    pub(super) async fn take_or_fetch(
        ahead: Option<Prefetch>,
        stream: &Stream,
        request: &Request,
    ) -> Result<Page, FetchError> {
        match ahead {
            Some(p) if p.request == *request => p.join().await,
            _ => fetch(stream.clone(), request.clone()).await,
        }
    }

    async fn join(mut self) -> Result<Page, FetchError> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(FetchError::Exhausted {
                    attempts: 0,
                    last: format!("the page request's task failed: {e}"),
                })
            }),
            None => Err(FetchError::Exhausted {
                attempts: 0,
                last: "the page request was already taken".to_owned(),
            }),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
