//! Collections exports (ClearGrid-style, DOMAIN.md §1) into events (issue #4, in progress).
//!
//! - [`dataset`]: dataset descriptors (section, code, cursor field, row key, renames, formats);
//!   D16 "Collections Cases" built in.
//! - [`normalise`]: one exported JSON row → `CollectionsDealObserved`, or every reason it cannot
//!   be one.
//! - [`sim`]: a simulator of the export API (login, refresh, cursor-paginated D16 pages with the
//!   live quirks, rows changing while a client pages, injected faults) for the tests and, next,
//!   `recoup export-sim`.

pub mod client;
pub mod dataset;
pub mod normalise;
pub mod page;
pub mod pull;
pub mod readback;
pub mod schedule;
pub mod sim;
pub mod sources;
pub mod store;
