//! projection: consumes recoup's topics into sled read models and serves them over gRPC.
//!
//! [`consumer::Projector`] receives batches from Kafka and hands them to a [`Projection`]: the
//! [`kernel`] applies each message into staged changes and writes them with the consumer
//! offsets after the batch in one atomic `sled::Batch`, skipping what was applied before. The
//! read models: [`cases::CaseReadModel`] (debt cases), [`accounts::AccountReadModel`] (PAYGo
//! snapshots) and [`deals::DealReadModel`] (collections deals), each a tree of one database.
//! The account read model carries [`metrics::MetricsStage`], which computes recoup's PAYGo
//! metrics as the snapshots are applied and publishes them through an outbox. [`grpc::Queries`] serves `recoup.v1.Query`; [`service`] starts all of it
//! in a process.

pub mod accounts;
pub mod cases;
pub mod consumer;
pub mod deals;
pub mod generations;
pub mod grpc;
pub mod kernel;
pub mod metrics;
pub mod rebuild;
pub mod service;

pub use accounts::AccountReadModel;
pub use cases::{CaseReadModel, Totals};
pub use consumer::{ProjectionError, Projector};
pub use deals::DealReadModel;
pub use kernel::{BatchOutcome, Projection, ReadModelError};
pub use metrics::MetricsStage;
