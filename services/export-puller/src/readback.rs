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
use crate::store::{Checkpoint, Fingerprint, Marks, PageCommit, PullStore, StoreError, StreamId};
use recoup_proto::contract::aggregate::COLLECTIONS_DEAL as DEAL_AGGREGATE;

/// How long the read-back waits for more once it reached the ends the broker named.
const QUIET: Duration = Duration::from_millis(300);

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

/// The first offset kept and the next offset to be written, per partition of the deals topic
/// (blocking: metadata calls).
pub fn partition_ends(
    kafka: &KafkaConfig,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>, KafkaError> {
    let consumer = EventConsumer::new(
        kafka,
        "recoup-export-puller-readback",
        COLLECTIONS_DEALS.name,
        None,
    )?;
    ends_of(&consumer, timeout)
}

fn ends_of(
    consumer: &EventConsumer,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>, KafkaError> {
    let mut ends = BTreeMap::new();
    for partition in consumer.partitions(timeout)? {
        ends.insert(partition, consumer.watermarks(partition, timeout)?);
    }
    Ok(ends)
}

/// Reads the stream's events at or after its marks on `cluster` and stores their fingerprints
/// where the store's are older; stores (durably) and returns the new marks. A stream without
/// marks on this cluster that published before (its marks lost, or another cluster's) is read
/// from the partitions' beginnings.
pub async fn read_back(
    kafka: &KafkaConfig,
    store: &PullStore,
    cluster: &str,
    stream: &StreamId,
    lender_public_id: &str,
    timeout: Duration,
) -> Result<ReadBack, ReadBackError> {
    let consumer = EventConsumer::new(
        kafka,
        "recoup-export-puller-readback",
        COLLECTIONS_DEALS.name,
        None,
    )?;
    // Metadata calls and the store block: off the async threads.
    let (consumer, ends, stored, published_before) = {
        let store = store.clone();
        let cluster = cluster.to_owned();
        let stream = stream.clone();
        tokio::task::spawn_blocking(move || {
            let ends = ends_of(&consumer, timeout)?;
            let stored = store.marks(&cluster, &stream)?;
            let published_before = store.checkpoint(&stream)? != Checkpoint::default();
            Ok::<_, ReadBackError>((consumer, ends, stored, published_before))
        })
        .await
        .map_err(|e| ReadBackError::Task(e.to_string()))??
    };

    let mut found = ReadBack {
        marks: ends.iter().map(|(p, (_, high))| (*p, *high)).collect(),
        ..ReadBack::default()
    };
    let stored = match stored {
        Some(marks) => marks,
        // Everything on the topic may be this stream's.
        None if published_before => Marks::new(),
        // Never published: nothing to look for.
        None => {
            commit(store, stream, cluster, Vec::new(), &found.marks).await?;
            return Ok(found);
        }
    };
    // Per partition: where to start, and the last offset to read.
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut start = Vec::new();
    for (partition, (low, high)) in &ends {
        let from = stored.get(partition).copied().unwrap_or(*low).max(*low);
        if from < *high {
            pending.insert(*partition, high - 1);
        }
        // Every partition, even one whose named end is behind its mark (see below).
        start.push((*partition, Some(from)));
        let mark = found.marks.entry(*partition).or_insert(from);
        *mark = (*mark).max(from);
    }
    consumer.assign(&start)?;
    let dataset = stream.dataset.as_str();
    let prefix = format!("{dataset}/");
    let mut recovered: BTreeMap<String, Fingerprint> = BTreeMap::new();
    // Past the ends the broker named, until nothing more comes for a moment: a broker may name
    // an end before its last records (tansu 0.6 answers the last batch's first offset).
    loop {
        let wait = if pending.is_empty() { QUIET } else { timeout };
        let batch = match tokio::time::timeout(wait, consumer.recv_batch(2000)).await {
            Ok(batch) => batch?,
            Err(_) if pending.is_empty() => break,
            Err(_) => return Err(ReadBackError::Stalled(timeout)),
        };
        for message in batch {
            found.messages += 1;
            let mark = found.marks.entry(message.partition).or_insert(0);
            *mark = (*mark).max(message.offset + 1);
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
    let store_now = store.clone();
    let stream_now = stream.clone();
    let fingerprints = tokio::task::spawn_blocking(move || {
        let mut newer = Vec::new();
        for (row_key, fingerprint) in recovered {
            let known = store_now.fingerprint(&stream_now, &row_key)?;
            let differs = known.is_none_or(|k| {
                k.revision < fingerprint.revision
                    || (k.revision == fingerprint.revision && k.hash != fingerprint.hash)
            });
            if differs {
                newer.push((row_key, fingerprint));
            }
        }
        Ok::<_, StoreError>(newer)
    })
    .await
    .map_err(|e| ReadBackError::Task(e.to_string()))??;
    found.recovered = fingerprints.len();
    commit(store, stream, cluster, fingerprints, &found.marks).await?;
    Ok(found)
}

/// Stores recovered fingerprints and the new marks, and flushes: nothing may be published
/// under marks that a crash could take back.
async fn commit(
    store: &PullStore,
    stream: &StreamId,
    cluster: &str,
    fingerprints: Vec<(String, Fingerprint)>,
    marks: &Marks,
) -> Result<(), ReadBackError> {
    let store = store.clone();
    let stream = stream.clone();
    let cluster = cluster.to_owned();
    let marks = marks.clone();
    tokio::task::spawn_blocking(move || {
        store.commit(
            &stream,
            &PageCommit {
                fingerprints: fingerprints
                    .iter()
                    .map(|(key, f)| (key.as_str(), *f))
                    .collect(),
                marks: Some((&cluster, &marks)),
                ..PageCommit::default()
            },
        )?;
        store.flush()
    })
    .await
    .map_err(|e| ReadBackError::Task(e.to_string()))??;
    Ok(())
}
