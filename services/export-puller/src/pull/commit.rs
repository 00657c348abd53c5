//! A page's events handed to Kafka and, once acknowledged, committed: its fingerprints, the
//! hashes of its rejects, the stream's checkpoint and the read-back marks, in one sled batch.

use event_backbone::finalizer::{AckFinalizer, Settlement};
use event_backbone::producer::OutgoingEvent;
use event_backbone::topics::{COLLECTIONS_DEALS, REJECTS};

use super::{CycleReport, PullError, Puller};
use crate::page::{ClassifiedPage, EncodedEvent, Pending};
use crate::store::{Checkpoint, Marks, PageCommit, StreamId};

/// What one event of a page is: its deal or its reject, by index in the classified page.
#[derive(Debug, Clone, Copy)]
pub(super) enum PageEvent {
    Deal(usize),
    Reject(usize),
}

/// A page whose events were handed to the producer, not yet committed.
pub(super) struct InFlight {
    pub classified: ClassifiedPage,
    pub rows: usize,
    pub finalizer: AckFinalizer<PageEvent>,
    /// The stream's checkpoint once this page is committed.
    pub checkpoint: Checkpoint,
    /// Its chain ended with it.
    pub chain_done: bool,
    /// Every event of the page was handed to the producer and no page before it failed: only
    /// then may its checkpoint be committed.
    pub complete: bool,
}

impl InFlight {
    /// The page's contents by row key, for classifying the next page before this one is
    /// committed.
    pub fn pending(&self) -> Pending {
        Pending {
            deals: self
                .classified
                .deals
                .iter()
                .map(|d| (d.row_key.clone(), d.fingerprint))
                .collect(),
            rejects: self.classified.rejects.iter().map(|r| r.hash).collect(),
        }
    }
}

fn outgoing<'a>(topic: &'a str, event: &'a EncodedEvent) -> OutgoingEvent<'a> {
    OutgoingEvent {
        topic,
        key: &event.key,
        value: &event.value,
        event_id: &event.event_id,
        event_type: event.event_type,
    }
}

impl Puller {
    /// Hands every event of the page to the producer, in page order: deals, then rejects. The
    /// first refusal stops it.
    pub(super) async fn publish(
        &self,
        page: &ClassifiedPage,
        finalizer: &mut AckFinalizer<PageEvent>,
    ) {
        for (i, deal) in page.deals.iter().enumerate() {
            let event = outgoing(COLLECTIONS_DEALS.name, &deal.event);
            if !finalizer.push(&self.deals, event, PageEvent::Deal(i)).await {
                return;
            }
        }
        for (i, reject) in page.rejects.iter().enumerate() {
            let event = outgoing(REJECTS.name, &reject.event);
            if !finalizer
                .push(&self.rejects, event, PageEvent::Reject(i))
                .await
            {
                return;
            }
        }
    }

    /// Awaits every acknowledgement of a page and commits it: fingerprints, reject hashes,
    /// its checkpoint and the read-back marks. If Kafka refused an event, what it acknowledged
    /// is remembered, the checkpoint is not moved, and the refusal is returned.
    pub(super) async fn settle(
        &self,
        id: &StreamId,
        page: InFlight,
        marks: &mut Marks,
        report: &mut CycleReport,
    ) -> Result<(), PullError> {
        let Settlement { outcomes, refusal } = page.finalizer.settle().await;
        let mut acked_deals = Vec::with_capacity(outcomes.len());
        let mut acked_rejects = Vec::new();
        let mut landed = Vec::with_capacity(outcomes.len());
        for (event, ack) in outcomes {
            match (event, ack) {
                (PageEvent::Deal(i), Some(ack)) => {
                    landed.push((ack.partition, ack.offset));
                    acked_deals.push(i);
                }
                (PageEvent::Reject(i), Some(_)) => acked_rejects.push(i),
                (_, None) => {}
            }
        }
        // A delivery reported failed may still have been written, anywhere: then the marks stay
        // where they were, so the next read-back finds it.
        if refusal.is_none() {
            for (partition, offset) in landed {
                let next = offset + 1;
                let mark = marks.entry(partition).or_insert(next);
                *mark = (*mark).max(next);
            }
        }
        let whole = refusal.is_none() && page.complete;
        let store = self.store.clone();
        let id = id.clone();
        let cluster = self.cluster_id.clone();
        let marks_now = marks.clone();
        let classified = page.classified;
        let checkpoint = page.checkpoint;
        let committed = tokio::task::spawn_blocking(move || {
            let commit = PageCommit {
                fingerprints: acked_deals
                    .iter()
                    .map(|i| {
                        let deal = &classified.deals[*i];
                        (deal.row_key.as_str(), deal.fingerprint)
                    })
                    .collect(),
                rejects: acked_rejects
                    .iter()
                    .map(|i| classified.rejects[*i].hash)
                    .collect(),
                // A page only partly acknowledged is fetched again: its checkpoint waits.
                checkpoint: whole.then_some(&checkpoint),
                marks: Some((&cluster, &marks_now)),
                published: acked_deals
                    .iter()
                    .map(|i| classified.deals[*i].event.value.as_slice())
                    .collect(),
            };
            store.commit(&id, &commit).map(|()| classified)
        })
        .await
        .map_err(|e| PullError::Task(e.to_string()))??;
        if let Some(error) = refusal {
            return Err(error.into());
        }
        if whole {
            count(report, &committed, page.rows, page.chain_done);
        }
        // Not whole: not all of it was enqueued, and the caller knows why.
        Ok(())
    }

    /// After a cycle that committed everything it published: the stream's marks move to the
    /// partitions' ends, so that a later read-back reads only what came after (best effort).
    pub(super) async fn advance_marks(&self, id: &StreamId, marks: &Marks) {
        let known = marks.clone();
        let kafka = self.kafka.clone();
        let store = self.store.clone();
        let cluster = self.cluster_id.clone();
        let id = id.clone();
        let timeout = self.settings.readback_timeout;
        let result = tokio::task::spawn_blocking(move || {
            let ends =
                crate::readback::partition_ends(&kafka, timeout).map_err(|e| e.to_string())?;
            // Never back: a broker may name an end before its last records.
            let mut marks = known;
            for (partition, (_, high)) in ends {
                let mark = marks.entry(partition).or_insert(high);
                *mark = (*mark).max(high);
            }
            store
                .commit(
                    &id,
                    &PageCommit {
                        marks: Some((&cluster, &marks)),
                        ..PageCommit::default()
                    },
                )
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(error) = result {
            tracing::debug!(%error, "the read-back marks stay where they were");
        }
    }
}

/// Counts a committed page into the cycle's report and the process's metrics.
fn count(report: &mut CycleReport, page: &ClassifiedPage, rows: usize, chain_done: bool) {
    report.pages += 1;
    report.rows += rows as u64;
    report.published += page.deals.len() as u64;
    report.unchanged += page.unchanged as u64;
    report.rejected += page.rejects.len() as u64;
    report.rejects_repeated += page.rejects_repeated as u64;
    if chain_done {
        report.chains += 1;
    }
    let metric = &recoup_metrics::metrics().pull_rows;
    for (outcome, n) in [
        ("published", page.deals.len()),
        ("unchanged", page.unchanged),
        ("rejected", page.rejects.len()),
    ] {
        metric
            .get_or_create(&recoup_metrics::OutcomeLabel { outcome })
            .inc_by(n as u64);
    }
}
