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
pub mod snapshots;
mod time;

pub use time::{from_timestamp, to_timestamp};

/// The encoded `FileDescriptorSet` of every recoup proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/recoup_descriptor.bin"));

pub mod tenant;
