//! Collections exports (ClearGrid-style, docs/domain.md §1) into events: every exported row
//! published once per content, checkpointed only after Kafka acknowledged it.
//!
//! - [`dataset`]: dataset descriptors (section, code, cursor field, row key, renames, formats);
//!   D16 "Collections Cases" built in.
//! - [`normalise`]: one exported JSON row → `CollectionsDealObserved`, or every reason it cannot
//!   be one.
//! - [`client`]: login, refresh and pages, with the vendor's error policy.
//! - [`page`]: a page classified against what was published and encoded as events.
//! - [`pull`]: one cycle of one stream, from the committed `since` to the end of its chain.
//! - [`store`]: checkpoints, fingerprints, read-back marks (sled).
//! - [`readback`]: a stream's own events read back from the topic at start.
//! - [`schedule`]: many streams, once or continuously, with a bound.
//! - [`sources`]: the sources file.
//! - [`recovery`]: after a crash in embedded mode, what the read models lack is pulled again.
//! - [`service`]: all of it started in a process.

pub mod client;
pub mod dataset;
pub mod normalise;
pub mod page;
pub mod pull;
pub mod readback;
pub mod recovery;
pub mod schedule;
pub mod service;
pub mod sources;
pub mod store;
