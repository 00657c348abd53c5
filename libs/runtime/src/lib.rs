//! What every recoup service is started with, and how it stops.
//!
//! Each service crate has one way to start: `service::start(&Context, Settings) -> Running`,
//! with its own recovery at start and its own metrics and health, and an ordered
//! `Running::shutdown`. The `recoup` binary builds the [`Context`] (embedded or external Kafka,
//! the data directory, the clock) and only wires the services together.

pub mod clock;
pub mod context;
pub mod process;
pub mod shutdown;

pub use clock::Clock;
pub use context::{Context, KafkaLink, StartError, Starting};
