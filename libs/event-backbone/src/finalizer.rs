//! Publish, wait for the broker's acknowledgements, hand back what Kafka has, in order.
//!
//! Every recoup publisher commits something once Kafka has its events: the outbox relay deletes
//! outbox records, the snapshot importer stores fingerprints, the export puller commits a page's
//! fingerprints and checkpoint. [`AckFinalizer`] is what they share: it enqueues events on a
//! producer, keeps one entry per event (what to commit for it), and settles them in the order
//! they were enqueued. Each publisher keeps only its own "what to commit".
//!
//! The first refusal closes a finalizer: nothing after a refused event is enqueued, so the
//! order per key survives a retry (the refused event and everything after it are sent again).

use std::collections::VecDeque;

use crate::producer::{Acknowledged, EventProducer, OutgoingEvent, PendingDelivery, PublishError};

/// Events handed to the producer, each with the entry to commit once Kafka acknowledged it.
#[must_use = "entries count as published only once the finalizer is settled"]
pub struct AckFinalizer<T> {
    pending: VecDeque<(T, PendingDelivery)>,
    /// Why enqueueing stopped; nothing was enqueued after it.
    refused: Option<PublishError>,
}

impl<T> Default for AckFinalizer<T> {
    fn default() -> Self {
        Self {
            pending: VecDeque::new(),
            refused: None,
        }
    }
}

impl<T> std::fmt::Debug for AckFinalizer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckFinalizer")
            .field("pending", &self.pending.len())
            .field("refused", &self.refused)
            .finish()
    }
}

impl<T> AckFinalizer<T> {
    /// An empty finalizer with room for `events`.
    pub fn with_capacity(events: usize) -> Self {
        Self {
            pending: VecDeque::with_capacity(events),
            refused: None,
        }
    }

    /// Enqueues `event` on `producer` (waiting for room, see [`EventProducer::enqueue`]) and
    /// keeps `entry` for it. Returns false, enqueueing nothing, once an event was refused:
    /// this one or an earlier one.
    pub async fn push(
        &mut self,
        producer: &EventProducer,
        event: OutgoingEvent<'_>,
        entry: T,
    ) -> bool {
        if self.refused.is_some() {
            return false;
        }
        match producer.enqueue(event).await {
            Ok(delivery) => {
                self.pending.push_back((entry, delivery));
                true
            }
            Err(error) => {
                self.refused = Some(error);
                false
            }
        }
    }

    /// Events enqueued and not yet settled.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// True once an event was refused at enqueue.
    pub fn is_refused(&self) -> bool {
        self.refused.is_some()
    }

    /// Waits for the broker's answer to every event enqueued.
    pub async fn settle(self) -> Settlement<T> {
        let mut outcomes = Vec::with_capacity(self.pending.len());
        let mut refusal = None;
        for (entry, delivery) in self.pending {
            match delivery.acknowledged().await {
                Ok(ack) => outcomes.push((entry, Some(ack))),
                Err(error) => {
                    refusal.get_or_insert(error);
                    outcomes.push((entry, None));
                }
            }
        }
        // A refused enqueue came after every event enqueued.
        Settlement {
            outcomes,
            refusal: refusal.or(self.refused),
        }
    }
}

/// The broker's answers, in the order the events were enqueued.
#[derive(Debug)]
pub struct Settlement<T> {
    /// Every entry enqueued, with where its event landed; `None`: Kafka did not take it (it
    /// may have been written all the same).
    pub outcomes: Vec<(T, Option<Acknowledged>)>,
    /// The first refusal, at delivery or at enqueue; `None` when Kafka took every event and
    /// every event given was enqueued.
    pub refusal: Option<PublishError>,
}

impl<T> Settlement<T> {
    /// True when Kafka took everything.
    pub fn is_complete(&self) -> bool {
        self.refusal.is_none()
    }

    /// The acknowledged prefix: the entries before the first one Kafka did not take, with
    /// where their events landed. What a publisher whose commits must stay in order (the
    /// outbox) may commit.
    pub fn prefix(self) -> (Vec<(T, Acknowledged)>, Option<PublishError>) {
        let prefix = self
            .outcomes
            .into_iter()
            .map_while(|(entry, ack)| ack.map(|ack| (entry, ack)))
            .collect();
        (prefix, self.refusal)
    }

    /// Every acknowledged entry, in order, also those after a refusal. What a publisher whose
    /// entries stand alone (a fingerprint per key) may commit.
    pub fn acknowledged(self) -> (Vec<(T, Acknowledged)>, Option<PublishError>) {
        let acknowledged = self
            .outcomes
            .into_iter()
            .filter_map(|(entry, ack)| ack.map(|ack| (entry, ack)))
            .collect();
        (acknowledged, self.refusal)
    }
}
