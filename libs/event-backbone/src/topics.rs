//! Every topic recoup writes, with the settings it is created with (the names are
//! `recoup_proto::contract::topic`).

use recoup_proto::contract::topic;

/// A topic with the settings it is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
    /// Keyed by entity, so compaction keeps the latest record per key.
    pub compacted: bool,
    /// Retention on real clusters, milliseconds; -1 keeps everything.
    pub retention_ms: i64,
    /// What the topic carries, for `--help` texts and docs.
    pub description: &'static str,
}

/// Domain events of debt collection cases; key = case id, value = `recoup.v1.EventEnvelope`.
pub const DEBT_CASES: TopicSpec = TopicSpec {
    name: topic::DEBT_CASES,
    partitions: 6,
    // An event stream, not a changelog: every event matters, so no compaction.
    compacted: false,
    retention_ms: -1,
    description: "debt collection case events (EventEnvelope; key = case id)",
};

/// PAYGo account snapshots; key = account_uid, value = `EventEnvelope` carrying
/// `AccountSnapshotRecorded`.
pub const PAYGO_SNAPSHOTS: TopicSpec = TopicSpec {
    name: topic::PAYGO_SNAPSHOTS,
    partitions: 6,
    // One key holds an account's snapshots of many days: compaction would keep only the last.
    compacted: false,
    retention_ms: -1,
    description: "PAYGo account snapshots (AccountSnapshotRecorded; key = account_uid)",
};

/// Collections deals observed in a vendor's exports (D16 "Collections Cases"); key =
/// `{tenant}/{public_id}`, value = `EventEnvelope` carrying `CollectionsDealObserved`.
pub const COLLECTIONS_DEALS: TopicSpec = TopicSpec {
    name: topic::COLLECTIONS_DEALS,
    partitions: 6,
    // One key (a borrower-lender link) holds several deals: compaction would keep only one.
    compacted: false,
    retention_ms: -1,
    description: "collections deals from vendor exports (CollectionsDealObserved; key = tenant/public_id)",
};

/// Rows that were not accepted, with their raw values and reasons; key = import id (snapshot
/// imports) or `{tenant}/{dataset}` (exports).
pub const REJECTS: TopicSpec = TopicSpec {
    name: topic::REJECTS,
    partitions: 3,
    compacted: false,
    retention_ms: -1,
    description: "rejected rows with raw values and reasons (RowRejected, key = import id; ExportRowRejected, key = tenant/dataset)",
};

/// API keys: the latest record of each key; key = key id, value = `EventEnvelope` carrying
/// `ApiKey` (its secret only as SHA-256). Every process that serves requests follows it.
pub const ACCESS: TopicSpec = TopicSpec {
    name: topic::ACCESS,
    // Few records, read whole by every process: one partition keeps them in order.
    partitions: 1,
    // A changelog: the latest record of a key is the key (a revocation replaces it).
    compacted: true,
    retention_ms: -1,
    description: "API keys, latest record per key (ApiKey, secrets only as SHA-256; key = key id)",
};

/// recoup's PAYGo metrics: `AccountMetricsCalculated` per account-day, keyed by account_uid.
pub const PAYGO_METRICS: TopicSpec = TopicSpec {
    name: topic::PAYGO_METRICS,
    partitions: 6,
    // One key holds an account's results of many days: compaction would keep only the last.
    compacted: false,
    retention_ms: -1,
    description: "recoup's PAYGo metrics per account-day (AccountMetricsCalculated; key = account_uid)",
};

/// Every recoup topic.
pub const ALL: &[TopicSpec] = &[
    DEBT_CASES,
    PAYGO_SNAPSHOTS,
    COLLECTIONS_DEALS,
    REJECTS,
    ACCESS,
    PAYGO_METRICS,
];
