//! recoup's wire contract, generated from `proto/` (package `recoup.v1`), and the conversions
//! between it and the domain types.

/// Generated messages and services of package `recoup.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::unwrap_used)]
    tonic::include_proto!("recoup.v1");
}

pub mod codec;
pub mod contract;
pub mod convert;
pub mod metrics;
pub mod schema;
pub mod snapshots;
mod time;

pub use time::{from_timestamp, to_timestamp};

/// The encoded `FileDescriptorSet` of every recoup proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/recoup_descriptor.bin"));

/// Every `.proto` file of the contract: its path below `proto/` and its text.
pub const PROTO_FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/proto_files.rs"));

pub mod tenant;
