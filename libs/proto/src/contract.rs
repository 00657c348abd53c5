//! The names recoup's producers and consumers agree on: topics, event and aggregate types, Kafka
//! headers and request metadata. Each is written here once; every crate imports it from here.

/// Kafka topics. Their partitions and settings are `event_backbone::topics`.
pub mod topic {
    /// Debt collection case events; key = case id.
    pub const DEBT_CASES: &str = "recoup.debt-cases.v1";
    /// PAYGo account snapshots; key = account_uid.
    pub const PAYGO_SNAPSHOTS: &str = "recoup.paygo-snapshots.v1";
    /// Collections deals observed in a vendor's exports; key = `{tenant}/{public_id}`.
    pub const COLLECTIONS_DEALS: &str = "recoup.collections-deals.v1";
    /// Rows that were not accepted, with their raw values and reasons.
    pub const REJECTS: &str = "recoup.rejects.v1";
    /// API keys, latest record per key (compacted); key = key id. Every serving process
    /// follows it.
    pub const ACCESS: &str = "recoup.access.v1";
    /// recoup's PAYGo metrics of each account-day, computed from the snapshots; key =
    /// account_uid.
    pub const PAYGO_METRICS: &str = "recoup.paygo-metrics.v1";
}

/// The `aggregate_type` of an envelope: what kind of thing its `aggregate_id` names.
pub mod aggregate {
    /// A debt collection case, versioned by its event count.
    pub const DEBT_CASE: &str = "debt_case";
    /// One account on one day (`{account_uid}@{snapshot_date}`), versioned by revision.
    pub const PAYGO_ACCOUNT_SNAPSHOT: &str = "paygo_account_snapshot";
    /// A snapshot import (its rejects), versioned by row number.
    pub const SNAPSHOT_IMPORT: &str = "snapshot_import";
    /// One exported row key (`{dataset}/{public_id}|{created_at}`), versioned by revision.
    pub const COLLECTIONS_DEAL: &str = "collections_deal";
    /// One export stream (its rejects), versioned by its count of rejects.
    pub const EXPORT_STREAM: &str = "export_stream";
    /// An API key, versioned by its changes (created, revoked).
    pub const API_KEY: &str = "api_key";
    /// recoup's metrics of one account on one day (`{account_uid}@{snapshot_date}`), versioned
    /// by revision.
    pub const PAYGO_ACCOUNT_METRICS: &str = "paygo_account_metrics";
}

/// The `event_type` of an envelope: the name of its payload's message in `recoup.v1`.
pub mod event_type {
    pub const DEBT_CASE_CREATED: &str = "DebtCaseCreated";
    pub const DEBT_CASE_UPDATED: &str = "DebtCaseUpdated";
    pub const DEBT_CASE_REVIEWED: &str = "DebtCaseReviewed";
    pub const DEBT_CASE_PREPARED: &str = "DebtCasePrepared";
    pub const DEBT_CASE_PROCESSING_STARTED: &str = "DebtCaseProcessingStarted";
    pub const DEBT_CASE_PAYMENT_RECEIPT_ADDED: &str = "DebtCasePaymentReceiptAdded";
    pub const DEBT_CASE_CLOSED: &str = "DebtCaseClosed";
    pub const DEBT_CASE_FAILED: &str = "DebtCaseFailed";
    pub const DEBT_CASE_DELETED: &str = "DebtCaseDeleted";
    /// An accepted snapshot row: `AccountSnapshotRecorded`.
    pub const ACCOUNT_SNAPSHOT_RECORDED: &str = "AccountSnapshotRecorded";
    /// A snapshot row that failed validation: `RowRejected`.
    pub const ROW_REJECTED: &str = "RowRejected";
    /// A new or changed exported row: `CollectionsDealObserved`.
    pub const COLLECTIONS_DEAL_OBSERVED: &str = "CollectionsDealObserved";
    /// An exported row that could not be normalised: `ExportRowRejected`.
    pub const EXPORT_ROW_REJECTED: &str = "ExportRowRejected";
    /// The latest record of an API key (created, revoked): `ApiKey`.
    pub const API_KEY_RECORDED: &str = "ApiKeyRecorded";
    /// recoup's calculated fields of one account-day: `AccountMetricsCalculated`.
    pub const ACCOUNT_METRICS_CALCULATED: &str = "AccountMetricsCalculated";
}

/// The `actor` of an envelope when no principal caused the event (a principal's is its id:
/// `key:<API key id>`, `jwt:<token subject>`).
pub mod actor {
    /// A request to a process without credentials (`--insecure`).
    pub const ANONYMOUS: &str = "anonymous";
    /// The processing-timeout checks of case-lifecycle.
    pub const TIMEOUTS: &str = "recoup:timeouts";
    /// The export puller, pulling on its own schedule.
    pub const EXPORT_PULLER: &str = "recoup:export-puller";
    /// The PAYGo credit model, computing metrics from snapshots.
    pub const PAYGO_METRICS: &str = "recoup:paygo-metrics";
}

/// Kafka record headers every recoup event carries.
pub mod header {
    /// The envelope's `event_id`.
    pub const EVENT_ID: &str = "recoup-event-id";
    /// The envelope's `event_type`.
    pub const EVENT_TYPE: &str = "recoup-event-type";
}

/// gRPC metadata keys and HTTP headers of recoup's requests.
pub mod metadata {
    /// The tenant a request acts for.
    pub const TENANT: &str = "x-recoup-tenant";
    /// Traces one request through the events it causes.
    pub const CORRELATION_ID: &str = "x-correlation-id";
    /// The credential: `Bearer <API key>`.
    pub const AUTHORIZATION: &str = "authorization";
}
