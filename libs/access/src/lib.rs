//! Who is calling, and what they may do.
//!
//! A request carries a credential in `authorization: Bearer …`. An API key (`rk1_<id>_<secret>`)
//! is looked up by its id in a [`KeyRing`] and its secret compared, in constant time, with the
//! SHA-256 recoup keeps (never the secret itself). A JWT of an identity provider is verified
//! against its JWKS ([`JwtVerifier`]). What the credential resolves to is a
//! [`Principal`]: an id for logs and audit, the tenants it acts for, and a [`Role`]. A request
//! then acts for the tenant the principal names ([`Principal::act`]); a tenant header that names
//! another one is refused, as is an [`Action`] the role does not allow.
//!
//! Failures are [`AccessError`]s: `Unauthenticated` (no credential, a malformed one, an unknown,
//! revoked or expired key, a wrong secret) or `PermissionDenied` (a valid credential without the
//! right). No message ever contains the secret.

pub mod api_key;
pub mod bearer;
pub mod error;
pub mod gate;
pub mod jwt;
pub mod principal;
pub mod ring;
pub mod role;
pub mod store;
pub mod throttle;

pub use api_key::{IssuedKey, KeySpec, KeyToken};
pub use error::AccessError;
pub use gate::{Access, Acting, Credentials};
pub use jwt::{JwtSettings, JwtVerifier};
pub use principal::Principal;
pub use ring::KeyRing;
pub use role::{Action, Role};
pub use store::KeyStore;
pub use throttle::{Throttle, ThrottleSettings};
