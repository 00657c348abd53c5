//! snapshot-importer: PAYGo account snapshots from files (and, later, an API) into validated rows
//! and events. So far: the streaming readers ([`readers`]); events, the import report and the
//! APIs follow (issue #3).

pub mod readers;
