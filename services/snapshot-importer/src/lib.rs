//! PAYGo account snapshots from files and an API: every row validated, accepted rows published
//! as `AccountSnapshotRecorded`, rejected rows kept with their reasons.
//!
//! - [`readers`]: CSV, XLSX and JSON files → rows, streaming.
//! - [`import`]: the import pipeline (validate, detect unchanged rows, publish, remember).
//! - [`upload`]: uploads spooled to disk and hashed; batches of rows as a reader.
//! - [`grpc`]: the gRPC service `recoup.v1.SnapshotImports`.
//! - [`http`]: the same over HTTP and JSON (axum), plus the errors of an import as CSV.
//! - [`limits`]: requests per minute per tenant, one budget for both front ends.
//! - [`reports`]: paging a report's errors, the same for both front ends.
//! - [`service`]: all of it started in a process, with its health while Kafka is away.
//! - [`store`]: what the importer remembers (content fingerprints, reports, errors) in sled.

pub mod admission;
pub mod filter;
pub mod grpc;
pub mod http;
pub mod import;
pub mod limits;
pub mod readers;
pub mod reports;
pub mod service;
pub mod store;
pub mod upload;
