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
    let consumer = readback_consumer(kafka)?;
    ends_of(&consumer, timeout)
}

/// A consumer of the deals topic outside every group and the process's metrics.
fn readback_consumer(kafka: &KafkaConfig) -> Result<EventConsumer, KafkaError> {
    EventConsumer::new(
        kafka,
        "recoup-export-puller-readback",
        COLLECTIONS_DEALS.name,
        None,
    )
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
    let consumer = readback_consumer(kafka)?;
    let (consumer, ends, stored, published_before) =
        starting_point(consumer, store, cluster, stream, timeout).await?;

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
    let pending = assign_from_marks(&consumer, &ends, &stored, &mut found.marks)?;
    let own = OwnEvents {
        tenant: &stream.tenant,
        dataset: stream.dataset.as_str(),
        prefix: format!("{}/", stream.dataset),
        lender_public_id,
    };
    let recovered = read_to_ends(&consumer, pending, timeout, &own, &mut found).await?;
    let fingerprints = newer_than_stored(store, stream, recovered).await?;
    found.recovered = fingerprints.len();
    commit(store, stream, cluster, fingerprints, &found.marks).await?;
    Ok(found)
}

/// The partitions' ends, the stream's stored marks on `cluster`, and whether it published
/// before; metadata calls and the store block, so off the async threads.
async fn starting_point(
    consumer: EventConsumer,
    store: &PullStore,
    cluster: &str,
    stream: &StreamId,
    timeout: Duration,
) -> Result<
    (
        EventConsumer,
        BTreeMap<i32, (i64, i64)>,
        Option<Marks>,
        bool,
    ),
    ReadBackError,
> {
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
    .map_err(|e| ReadBackError::Task(e.to_string()))?
}

/// Assigns every partition from its stored mark (or its first kept offset), raises `marks` to
/// those starts, and returns the last offset to read per partition with anything to read.
fn assign_from_marks(
    consumer: &EventConsumer,
    ends: &BTreeMap<i32, (i64, i64)>,
    stored: &Marks,
    marks: &mut Marks,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut start = Vec::new();
    for (partition, (low, high)) in ends {
        let from = stored.get(partition).copied().unwrap_or(*low).max(*low);
        if from < *high {
            pending.insert(*partition, high - 1);
        }
        // Every partition, even one whose named end is behind its mark (see `read_to_ends`).
        start.push((*partition, Some(from)));
        let mark = marks.entry(*partition).or_insert(from);
        *mark = (*mark).max(from);
    }
    consumer.assign(&start)?;
    Ok(pending)
}

/// Which events on the topic are the stream's own.
struct OwnEvents<'a> {
    tenant: &'a str,
    dataset: &'a str,
    /// `{dataset}/`, the start of the stream's aggregate ids.
    prefix: String,
    lender_public_id: &'a str,
}

/// Reads the assigned partitions past the ends the broker named, until nothing more comes for a
/// moment: a broker may name an end before its last records (tansu 0.6 answers the last batch's
/// first offset). Counts into `found` and returns the last fingerprint per row key of the
/// stream's own events.
async fn read_to_ends(
    consumer: &EventConsumer,
    mut pending: BTreeMap<i32, i64>,
    timeout: Duration,
    own: &OwnEvents<'_>,
    found: &mut ReadBack,
) -> Result<BTreeMap<String, Fingerprint>, ReadBackError> {
    let mut recovered: BTreeMap<String, Fingerprint> = BTreeMap::new();
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
            let Some((row_key, fingerprint)) = own.fingerprint_of(&message.value) else {
                continue;
            };
            found.own_events += 1;
            // The topic's order is the consumers' order: a later event of a row key wins.
            recovered.insert(row_key, fingerprint);
        }
    }
    Ok(recovered)
}

impl OwnEvents<'_> {
    /// The row key and fingerprint of a message that is one of the stream's deals; `None` for
    /// anything else (another tenant, dataset or lender, another aggregate, undecodable).
    fn fingerprint_of(&self, value: &[u8]) -> Option<(String, Fingerprint)> {
        let envelope = decode_envelope(value).ok()?;
        if envelope.tenant != self.tenant || envelope.aggregate_type != DEAL_AGGREGATE {
            return None;
        }
        let row_key = envelope.aggregate_id.strip_prefix(&self.prefix)?;
        let deal = v1::CollectionsDealObserved::decode(envelope.payload.as_slice()).ok()?;
        if deal.dataset != self.dataset || deal.lender_public_id != self.lender_public_id {
            return None;
        }
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
        Some((row_key.to_owned(), fingerprint))
    }
}

/// The recovered fingerprints the store does not have: a row key it does not know, a later
/// revision, or the same revision with other content (the store is read off the async threads).
async fn newer_than_stored(
    store: &PullStore,
    stream: &StreamId,
    recovered: BTreeMap<String, Fingerprint>,
) -> Result<Vec<(String, Fingerprint)>, ReadBackError> {
    let store = store.clone();
    let stream = stream.clone();
    let newer = tokio::task::spawn_blocking(move || {
        let mut newer = Vec::new();
        for (row_key, fingerprint) in recovered {
            let known = store.fingerprint(&stream, &row_key)?;
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
    Ok(newer)
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
