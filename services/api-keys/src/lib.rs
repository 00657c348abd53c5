//! API keys across processes.
//!
//! Where keys live: the compacted topic `recoup.access.v1` carries the latest record of every
//! key (its secret only as SHA-256), keyed by key id. Every process that serves requests
//! follows it from its start into its [`recoup_access::KeyRing`], so a key created or revoked
//! through any process reaches the others within a second or two. Each process also keeps what
//! it took in a [`recoup_access::KeyStore`] in its data dir, so it checks credentials from its
//! first request on; in embedded mode (the broker lives and dies with the process) that store
//! is the record, published to the topic again at every start.
//!
//! - [`registry`]: the keys of a process — a change is published first, then taken.
//! - [`follow`]: the topic into the registry: caught up at start, then followed.
//! - [`grpc`]: `recoup.v1.ApiKeys` for admins.
//! - [`jwks`]: the identity provider's keys for bearer tokens, kept fresh.
//! - [`service`]: the service's start and stop, and the first admin key.

pub mod follow;
pub mod grpc;
pub mod jwks;
pub mod registry;
pub mod service;

pub use registry::{Registry, RegistryError};
