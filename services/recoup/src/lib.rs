//! The recoup binary's library half: the composition root ([`platform`]) that runs services in
//! one process, and the configuration it reads ([`settings`]). `main.rs` is the command line.

pub mod metrics;
pub mod platform;
pub mod settings;
