//! projection: consumes recoup's topics into sled read models and serves them over gRPC.
//!
//! [`consumer::Projector`] receives batches from Kafka and hands them to [`read_model::ReadModel`],
//! which applies them and records the consumer offsets in the same atomic batch, skipping any
//! version already applied. [`accounts::AccountReadModel`] and [`deals::DealReadModel`] keep
//! their trees in the same database. [`grpc::Queries`] serves `recoup.v1.Query`.

pub mod accounts;
pub mod consumer;
pub mod deals;
pub mod grpc;
pub mod read_model;

pub use accounts::AccountReadModel;
pub use consumer::{Projection, ProjectionError, Projector};
pub use deals::DealReadModel;
pub use read_model::{ReadModel, ReadModelError};
