//! Reading a stream's own events back from the deals topic when a puller starts, so that
//! nothing acknowledged before a crash is published a second time.
//!
//! A page's fingerprints are stored only after every event of the page was acknowledged. A
//! puller killed between the acknowledgements and that commit (or with events on the wire) has
//! published contents its store does not know; fetched again, they would be published again.
//! Each stream therefore keeps, per partition, a mark below which all its events are known to
//! the store ([`crate::store::Marks`], advanced with every commit). At start the puller reads
//! the partitions from the marks to their ends, takes the fingerprints of its own events, and
//! only then publishes anything.

use std::collections::BTreeMap;
use std::time::Duration;

use event_backbone::KafkaConfig;
use event_backbone::consumer::EventConsumer;
use event_backbone::envelope::decode_envelope;
use event_backbone::topics::COLLECTIONS_DEALS;
use prost::Message;
use rdkafka::error::KafkaError;
use recoup_proto::{from_timestamp, v1};

use crate::normalise;
use crate::page::DEAL_AGGREGATE;
use crate::store::{Fingerprint, Marks, PageCommit, PullStore, StoreError, StreamId};

/// What a read-back found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// The marks from now on: the partitions' ends when the read-back began.
    pub marks: Marks,
    /// Messages read.
    pub messages: usize,
    /// Events of this stream among them.
    pub own_events: usize,
    /// Fingerprints the store did not have (published, never committed).
    pub recovered: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error("reading back {topic}: {0}", topic = COLLECTIONS_DEALS.name)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "reading back {topic} stalled: no message within {0:?} before the partitions' ends",
        topic = COLLECTIONS_DEALS.name
    )]
    Stalled(Duration),
    #[error("reading back: {0}")]
    Task(String),
}

/// Reads the stream's events at or after its marks on `cluster` and stores their fingerprints
/// where the store's are older; stores and returns the new marks.
pub async fn read_back(
    kafka: &KafkaConfig,
    store: &PullStore,
    cluster: &str,
    stream: &StreamId,
    lender_public_id: &str,
    timeout: Duration,
) -> Result<ReadBack, ReadBackError> {
    let stored = store.marks(cluster, stream)?;
    let consumer = EventConsumer::new(
        kafka,
        "recoup-export-puller-readback",
        COLLECTIONS_DEALS.name,
        None,
    )?;
    // Metadata calls block: off the async threads.
    let (consumer, ends) = tokio::task::spawn_blocking(move || {
        let partitions = consumer.partitions(timeout)?;
        let mut ends = BTreeMap::new();
        for partition in partitions {
            ends.insert(partition, consumer.watermarks(partition, timeout)?);
        }
        Ok::<_, KafkaError>((consumer, ends))
    })
    .await
    .map_err(|e| ReadBackError::Task(e.to_string()))??;

    let mut found = ReadBack {
        marks: ends.iter().map(|(p, (_, high))| (*p, *high)).collect(),
        ..ReadBack::default()
    };
    let Some(stored) = stored else {
        // Never published on this cluster: nothing to look for.
        commit_marks(store, stream, cluster, &found.marks)?;
        return Ok(found);
    };
    // Per partition: where to start, and the last offset to read.
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut start = Vec::new();
    for (partition, (low, high)) in &ends {
        let from = stored.get(partition).copied().unwrap_or(*low).max(*low);
        if from < *high {
            pending.insert(*partition, high - 1);
            start.push((*partition, Some(from)));
        }
    }
    if pending.is_empty() {
        commit_marks(store, stream, cluster, &found.marks)?;
        return Ok(found);
    }
    consumer.assign(&start)?;
    let dataset = stream.dataset.as_str();
    let prefix = format!("{dataset}/");
    let mut recovered: BTreeMap<String, Fingerprint> = BTreeMap::new();
    while !pending.is_empty() {
        let batch = tokio::time::timeout(timeout, consumer.recv_batch(2000))
            .await
            .map_err(|_| ReadBackError::Stalled(timeout))??;
        for message in batch {
            found.messages += 1;
            if pending
                .get(&message.partition)
                .is_some_and(|last| message.offset >= *last)
            {
                pending.remove(&message.partition);
            }
            let Ok(envelope) = decode_envelope(&message.value) else {
                continue;
            };
            if envelope.tenant != stream.tenant || envelope.aggregate_type != DEAL_AGGREGATE {
                continue;
            }
            let Some(row_key) = envelope.aggregate_id.strip_prefix(&prefix) else {
                continue;
            };
            let Ok(deal) = v1::CollectionsDealObserved::decode(envelope.payload.as_slice()) else {
                continue;
            };
            if deal.dataset != dataset || deal.lender_public_id != lender_public_id {
                continue;
            }
            found.own_events += 1;
            let cursor_micros = deal
                .updated_at
                .as_ref()
                .and_then(from_timestamp)
                .map_or(0, |at| at.timestamp_micros());
            let fingerprint = Fingerprint {
                hash: normalise::fingerprint(&deal),
                revision: deal.revision,
                cursor_micros,
            };
            // The topic's order is the consumers' order: a later event of a row key wins.
            recovered.insert(row_key.to_owned(), fingerprint);
        }
    }
    let mut fingerprints = Vec::new();
    for (row_key, fingerprint) in &recovered {
        let known = store.fingerprint(stream, row_key)?;
        if known.is_none_or(|k| {
            k.revision < fingerprint.revision
                || (k.revision == fingerprint.revision && k.hash != fingerprint.hash)
        }) {
            fingerprints.push((row_key.as_str(), *fingerprint));
        }
    }
    found.recovered = fingerprints.len();
    store.commit(
        stream,
        &PageCommit {
            fingerprints,
            marks: Some((cluster, &found.marks)),
            ..PageCommit::default()
        },
    )?;
    Ok(found)
}

fn commit_marks(
    store: &PullStore,
    stream: &StreamId,
    cluster: &str,
    marks: &Marks,
) -> Result<(), StoreError> {
    store.commit(
        stream,
        &PageCommit {
            marks: Some((cluster, marks)),
            ..PageCommit::default()
        },
    )
}
