//! PAYGo account snapshots from files and an API: every row validated, accepted rows published
//! as `AccountSnapshotRecorded`, rejected rows kept with their reasons (issue #3).
//!
//! - [`readers`]: CSV, XLSX and JSON files → rows, streaming.
//! - [`import`]: the import pipeline (validate, detect unchanged rows, publish, remember).
//! - [`upload`]: uploads spooled to disk and hashed; batches of rows as a reader.
//! - [`grpc`]: the gRPC service `recoup.v1.SnapshotImports`.
//! - [`store`]: what the importer remembers (content fingerprints, reports, errors) in sled.

pub mod grpc;
pub mod import;
pub mod readers;
pub mod store;
pub mod upload;
