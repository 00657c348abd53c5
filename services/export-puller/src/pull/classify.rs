//! A fetched page classified on blocking threads: every row normalised and compared with what
//! was published for its row key (and with the page still with Kafka).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use event_backbone::envelope::EventMetadata;

use super::PullError;
use crate::dataset::Dataset;
use crate::page::{ClassifiedPage, ClassifiedPart, PageContext, Pending, classify_part, merge};
use crate::store::{PullStore, StoreError, StreamId};

/// Rows of a page to classify, and what they are classified against. A page of more than
/// [`PARALLEL_ROWS`] rows is classified in two halves at once (classification is most of the
/// puller's CPU), and whole if the halves turn out to share a row key.
pub(super) struct Classify {
    pub store: PullStore,
    pub dataset: Arc<Dataset>,
    pub stream: StreamId,
    pub lender: String,
    pub metadata: EventMetadata,
    pub rejects_before: u64,
    pub fetched_at: DateTime<Utc>,
    pub pending: Arc<Pending>,
    pub rows: Arc<Vec<Box<serde_json::value::RawValue>>>,
}

/// Pages with more rows than this are classified in two halves at once.
const PARALLEL_ROWS: usize = 200;

impl Classify {
    fn context(&self) -> PageContext<'_> {
        PageContext {
            stream: &self.stream,
            dataset: &self.dataset,
            lender_public_id: &self.lender,
            fetched_at: self.fetched_at,
            metadata: &self.metadata,
            rejects_before: self.rejects_before,
        }
    }

    pub async fn run(self) -> Result<ClassifiedPage, PullError> {
        let work = Arc::new(self);
        let task = |range: std::ops::Range<usize>| {
            let work = work.clone();
            tokio::task::spawn_blocking(move || {
                classify_part(
                    &work.context(),
                    &work.store,
                    &work.pending,
                    &work.rows[range],
                )
            })
        };
        let joined = |r: Result<Result<ClassifiedPart, StoreError>, tokio::task::JoinError>| {
            r.map_err(|e| PullError::Task(e.to_string()))?
                .map_err(PullError::from)
        };
        let rows = work.rows.len();
        if rows > PARALLEL_ROWS {
            let (first, second) = tokio::join!(task(0..rows / 2), task(rows / 2..rows));
            let parts = vec![joined(first)?, joined(second)?];
            if let Some(page) = merge(&work.context(), parts) {
                return Ok(page);
            }
        }
        let whole = joined(task(0..rows).await)?;
        merge(&work.context(), vec![whole])
            .ok_or_else(|| PullError::Task("one part collided with itself".to_owned()))
    }
}
