//! The recoup binary's library half: the composition root ([`platform`]) that runs services in
//! one process, and the configuration it reads ([`settings`]). `main.rs` is the command line.

pub mod certs;
pub mod connections;
mod kafka;
pub mod metrics;
pub mod platform;
mod serve;
mod services;
pub mod settings;
mod throttle;
pub mod tls;
