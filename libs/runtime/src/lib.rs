//! What every recoup service is started with, and how it stops.

pub mod clock;

pub use clock::Clock;
