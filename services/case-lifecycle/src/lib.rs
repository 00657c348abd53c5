//! case-lifecycle: debt collection cases as an event-sourced aggregate behind gRPC.
//!
//! Commands arrive over gRPC ([`grpc`]), are decided by the pure aggregate (`debt-cases`) inside
//! the event store's single writer ([`store`]), which appends events and outbox records in one
//! atomic, flushed batch; the [`relay`] publishes the outbox to Kafka and deletes what the broker
//! acknowledged; [`timeouts`] fails cases whose processing outlived its timeout. [`service`]
//! starts all of it in a process.

pub mod grpc;
mod keys;
pub mod relay;
pub mod service;
pub mod store;
pub mod timeouts;

pub use store::{CaseCommand, CommandError, EventStore, StoreError, StoreSettings};
