//! One fetched page → the events to publish: every row normalised, compared with the content
//! last published for its row key, and encoded in an envelope when it is new or changed; rows
//! that cannot be normalised become `ExportRowRejected` (once per distinct raw row).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use event_backbone::envelope::{EventMetadata, NewEnvelope, new_event_id};
use prost::Message;
use recoup_proto::{to_timestamp, v1};
use serde_json::value::RawValue;

use crate::dataset::Dataset;
use crate::normalise::{self, Normaliser, Row};
use crate::store::{Fingerprint, PullStore, StoreError, StreamId};

use recoup_proto::contract::aggregate::{
    COLLECTIONS_DEAL as DEAL_AGGREGATE, EXPORT_STREAM as EXPORT_AGGREGATE,
};
use recoup_proto::contract::event_type::{
    COLLECTIONS_DEAL_OBSERVED as DEAL_OBSERVED, EXPORT_ROW_REJECTED,
};

/// Field numbers of `CollectionsDealObserved.revision` and `.fetched_at`.
const REVISION_FIELD: u32 = 20;
const FETCHED_AT_FIELD: u32 = 21;

/// An event ready for the producer.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    /// The Kafka key.
    pub key: String,
    /// An encoded `EventEnvelope`.
    pub value: Vec<u8>,
    pub event_id: String,
    pub event_type: &'static str,
}

/// A deal to publish and what to remember once it is acknowledged.
#[derive(Debug, Clone)]
pub struct DealEvent {
    pub row_key: String,
    pub fingerprint: Fingerprint,
    pub event: EncodedEvent,
}

/// A rejected row to publish.
#[derive(Debug, Clone)]
pub struct RejectEvent {
    /// xxh3-128 of the raw row.
    pub hash: u128,
    pub event: EncodedEvent,
}

/// A page sorted out.
#[derive(Debug, Default)]
pub struct ClassifiedPage {
    pub deals: Vec<DealEvent>,
    pub rejects: Vec<RejectEvent>,
    /// Rows whose content was published before.
    pub unchanged: usize,
    /// Rejected rows published before (the same raw row again).
    pub rejects_repeated: usize,
    /// The largest cursor value among the page's normalised rows.
    pub max_cursor: Option<DateTime<Utc>>,
}

/// What a page is classified against.
#[derive(Debug, Clone, Copy)]
pub struct PageContext<'a> {
    pub stream: &'a StreamId,
    pub dataset: &'a Dataset,
    pub lender_public_id: &'a str,
    pub fetched_at: DateTime<Utc>,
    pub metadata: &'a EventMetadata,
    /// Rejects the stream published before this page.
    pub rejects_before: u64,
}

/// What is published but not yet in the store (the page before, still with Kafka).
#[derive(Debug, Default)]
pub struct Pending {
    /// Contents by row key.
    pub deals: HashMap<String, Fingerprint>,
    /// Hashes of rejected rows.
    pub rejects: HashSet<u128>,
}

/// Sorts out one page's rows, in page order, against the store and `pending`.
pub fn classify_page(
    ctx: &PageContext<'_>,
    store: &PullStore,
    pending: &Pending,
    rows: &[Box<RawValue>],
) -> Result<ClassifiedPage, StoreError> {
    let part = classify_part(ctx, store, pending, rows)?;
    // One part cannot collide with itself.
    Ok(merge(ctx, vec![part]).unwrap_or_default())
}

/// Some consecutive rows of a page, sorted out on their own (see [`merge`]).
#[derive(Debug, Default)]
pub struct ClassifiedPart {
    deals: Vec<DealEvent>,
    rejects: Vec<(u128, String, Vec<normalise::FieldError>)>,
    unchanged: usize,
    rejects_repeated: usize,
    max_cursor: Option<DateTime<Utc>>,
    /// Hashes of every row key the part saw, and of every raw row it rejected.
    keys: HashSet<u128>,
    reject_hashes: HashSet<u128>,
}

/// Sorts out consecutive rows of a page; parts of one page can be classified at once, on
/// several threads, and [`merge`]d.
pub fn classify_part(
    ctx: &PageContext<'_>,
    store: &PullStore,
    pending: &Pending,
    rows: &[Box<RawValue>],
) -> Result<ClassifiedPart, StoreError> {
    let normaliser = Normaliser::new(ctx.dataset);
    let mut part = ClassifiedPart::default();
    // Row keys of this part, should it repeat one.
    let mut seen: HashMap<String, Fingerprint> = HashMap::new();
    for raw in rows {
        match normaliser.row_json(raw) {
            Ok(row) => {
                part.max_cursor = part.max_cursor.max(Some(row.cursor));
                part.keys.insert(crate::store::row_key_hash(&row.key));
                let earlier = match seen.get(&row.key).or_else(|| pending.deals.get(&row.key)) {
                    Some(f) => Some(*f),
                    None => store.fingerprint(ctx.stream, &row.key)?,
                };
                match deal_event(ctx, row, earlier) {
                    Some(deal) if deal.event.value.len() > MAX_EVENT_BYTES => {
                        // Kafka would refuse it on every try and hold the stream back for good.
                        let error = normalise::FieldError {
                            field: String::new(),
                            value: String::new(),
                            rule: normalise::rule::TOO_LONG,
                            message: format!(
                                "the row's event would be {} bytes, more than {MAX_EVENT_BYTES}",
                                deal.event.value.len()
                            ),
                        };
                        reject(ctx, store, pending, &mut part, raw, vec![error])?;
                    }
                    Some(deal) => {
                        seen.insert(deal.row_key.clone(), deal.fingerprint);
                        part.deals.push(deal);
                    }
                    None => part.unchanged += 1,
                }
            }
            Err(errors) => reject(ctx, store, pending, &mut part, raw, errors)?,
        }
    }
    Ok(part)
}

/// The parts of one page, in page order, as one page; `None` if two parts share a row key or a
/// rejected row (then they were classified without each other and the page must be classified
/// whole).
pub fn merge(ctx: &PageContext<'_>, parts: Vec<ClassifiedPart>) -> Option<ClassifiedPage> {
    for (i, part) in parts.iter().enumerate() {
        for later in &parts[i + 1..] {
            if !part.keys.is_disjoint(&later.keys)
                || !part.reject_hashes.is_disjoint(&later.reject_hashes)
            {
                return None;
            }
        }
    }
    let mut page = ClassifiedPage::default();
    for part in parts {
        page.deals.extend(part.deals);
        page.unchanged += part.unchanged;
        page.rejects_repeated += part.rejects_repeated;
        page.max_cursor = page.max_cursor.max(part.max_cursor);
        for (hash, raw_json, errors) in part.rejects {
            // Versions count on in page order.
            let version = ctx.rejects_before + page.rejects.len() as u64 + 1;
            page.rejects.push(RejectEvent {
                hash,
                event: reject_event(ctx, raw_json, &errors, version),
            });
        }
    }
    Some(page)
}

/// A rejected row joins the part's rejects, unless the same raw row was published before.
fn reject(
    ctx: &PageContext<'_>,
    store: &PullStore,
    pending: &Pending,
    part: &mut ClassifiedPart,
    raw: &RawValue,
    errors: Vec<normalise::FieldError>,
) -> Result<(), StoreError> {
    let raw_json = normalise::text_of(raw);
    let hash = xxhash_rust::xxh3::xxh3_128(raw_json.as_bytes());
    if part.reject_hashes.contains(&hash)
        || pending.rejects.contains(&hash)
        || store.reject_published(ctx.stream, hash)?
    {
        part.rejects_repeated += 1;
        return Ok(());
    }
    part.reject_hashes.insert(hash);
    part.rejects.push((hash, raw_json, errors));
    Ok(())
}

/// The event of a row, or `None` when `earlier` is this very content.
fn deal_event(ctx: &PageContext<'_>, row: Row, earlier: Option<Fingerprint>) -> Option<DealEvent> {
    let (key, partition, cursor) = (row.key.clone(), row.partition.clone(), row.cursor);
    // Without revision and fetch time the encoding is the content, fingerprinted as it is; the
    // two fields are then appended (protobuf takes fields in any order): one encoding per row.
    let mut payload = row
        .into_deal(ctx.dataset, ctx.lender_public_id)
        .encode_to_vec();
    let hash = xxhash_rust::xxh3::xxh3_128(&payload);
    if earlier.is_some_and(|e| e.hash == hash) {
        return None;
    }
    let revision = earlier.map_or(1, |e| e.revision + 1);
    prost::encoding::uint64::encode(REVISION_FIELD, &revision, &mut payload);
    prost::encoding::message::encode(
        FETCHED_AT_FIELD,
        &to_timestamp(ctx.fetched_at),
        &mut payload,
    );
    let aggregate_id = format!("{}/{}", ctx.dataset.path(), key);
    let event_id = new_event_id();
    let value = NewEnvelope {
        tenant: &ctx.stream.tenant,
        aggregate_type: DEAL_AGGREGATE,
        aggregate_id: &aggregate_id,
        aggregate_version: revision,
        occurred_at: cursor,
        recorded_at: ctx.fetched_at,
        event_type: DEAL_OBSERVED,
        schema_version: recoup_proto::schema::current(DEAL_OBSERVED),
        payload,
        metadata: ctx.metadata,
    }
    .encode(&event_id);
    Some(DealEvent {
        row_key: key,
        fingerprint: Fingerprint {
            hash,
            revision,
            cursor_micros: cursor.timestamp_micros(),
        },
        event: EncodedEvent {
            key: deal_key(&ctx.stream.tenant, &partition),
            value,
            event_id,
            event_type: DEAL_OBSERVED,
        },
    })
}

fn reject_event(
    ctx: &PageContext<'_>,
    raw_json: String,
    errors: &[normalise::FieldError],
    version: u64,
) -> EncodedEvent {
    let rejected = v1::ExportRowRejected {
        dataset: ctx.dataset.path(),
        lender_public_id: ctx.lender_public_id.to_owned(),
        raw_json: cut_raw(raw_json),
        errors: errors.iter().map(normalise::FieldError::to_proto).collect(),
        fetched_at: Some(to_timestamp(ctx.fetched_at)),
    };
    let event_id = new_event_id();
    let aggregate_id = ctx.dataset.path();
    let value = NewEnvelope {
        tenant: &ctx.stream.tenant,
        aggregate_type: EXPORT_AGGREGATE,
        aggregate_id: &aggregate_id,
        aggregate_version: version,
        occurred_at: ctx.fetched_at,
        recorded_at: ctx.fetched_at,
        event_type: EXPORT_ROW_REJECTED,
        schema_version: recoup_proto::schema::current(EXPORT_ROW_REJECTED),
        payload: rejected.encode_to_vec(),
        metadata: ctx.metadata,
    }
    .encode(&event_id);
    EncodedEvent {
        key: format!("{}/{}", ctx.stream.tenant, ctx.dataset.path()),
        value,
        event_id,
        event_type: EXPORT_ROW_REJECTED,
    }
}

/// The Kafka key of a deal: every deal of one borrower-lender link in one partition, in order.
pub fn deal_key(tenant: &str, public_id: &str) -> String {
    format!("{tenant}/{public_id}")
}

/// Largest deal event published, bytes (brokers refuse messages over 1 MB by default).
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// Most bytes of a raw row a reject keeps.
pub const MAX_RAW_BYTES: usize = 64 * 1024;

fn cut_raw(mut raw: String) -> String {
    if raw.len() > MAX_RAW_BYTES {
        let mut end = MAX_RAW_BYTES;
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        raw.truncate(end);
    }
    raw
}
