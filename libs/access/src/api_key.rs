//! API keys: `rk1_<id>_<secret>`, the id public (16 hex digits), the secret 32 random bytes
//! (base64url). recoup keeps the SHA-256 of the secret and compares in constant time.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use recoup_proto::tenant::validate_tenant;
use recoup_proto::to_timestamp;
use recoup_proto::v1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AccessError;
use crate::role::Role;

/// How every API key of this format starts (secret scanners can look for it).
pub const KEY_PREFIX: &str = "rk1_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const ID_LEN: usize = ID_BYTES * 2;
const SECRET_LEN: usize = 43;
/// Longest key name.
pub const MAX_NAME_LEN: usize = 128;
/// Most tenants one key may act for.
pub const MAX_TENANTS: usize = 64;

/// What a new key is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    /// The first is the tenant of requests that name none.
    pub tenants: Vec<String>,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
    /// Who creates it (a principal id, or "bootstrap").
    pub created_by: String,
}

/// A key just made: its record, and the key itself, which is shown once and kept nowhere.
pub struct IssuedKey {
    pub record: v1::ApiKey,
    pub key: String,
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("id", &self.record.id)
            .field("key", &"<secret>")
            .finish()
    }
}

/// The two parts of a presented key.
#[derive(PartialEq, Eq)]
pub struct KeyToken<'a> {
    pub id: &'a str,
    secret: &'a str,
}

impl fmt::Debug for KeyToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyToken").field("id", &self.id).finish()
    }
}

impl<'a> KeyToken<'a> {
    /// `None` when `credential` is not of this format.
    pub fn parse(credential: &'a str) -> Option<Self> {
        let rest = credential.strip_prefix(KEY_PREFIX)?;
        let (id, rest) = rest.split_at_checked(ID_LEN)?;
        let secret = rest.strip_prefix('_')?;
        let id_ok = id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        (id_ok && secret.len() == SECRET_LEN).then_some(Self { id, secret })
    }

    /// Whether the secret is the one `record` was made with (constant time).
    pub fn matches(&self, record: &v1::ApiKey) -> bool {
        let presented = Sha256::digest(self.secret.as_bytes());
        presented.as_slice().ct_eq(&record.secret_sha256).into()
    }
}

/// Makes a key for `spec` at `now`.
pub fn issue(spec: &KeySpec, now: DateTime<Utc>) -> Result<IssuedKey, String> {
    check(spec, now)?;
    let mut random = [0u8; ID_BYTES + SECRET_BYTES];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let id: String = random[..ID_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret = URL_SAFE_NO_PAD.encode(&random[ID_BYTES..]);
    let record = v1::ApiKey {
        id: id.clone(),
        name: spec.name.clone(),
        tenants: spec.tenants.clone(),
        role: spec.role.to_proto() as i32,
        created_at: Some(to_timestamp(now)),
        expires_at: spec.expires_at.map(to_timestamp),
        revoked_at: None,
        secret_sha256: Sha256::digest(secret.as_bytes()).to_vec(),
        created_by: spec.created_by.clone(),
        revoked_by: String::new(),
    };
    Ok(IssuedKey {
        record,
        key: format!("{KEY_PREFIX}{id}_{secret}"),
    })
}

/// `record` revoked at `now` by `by`; a key revoked before keeps its first revocation.
pub fn revoked(mut record: v1::ApiKey, now: DateTime<Utc>, by: &str) -> v1::ApiKey {
    if record.revoked_at.is_none() {
        record.revoked_at = Some(to_timestamp(now));
        by.clone_into(&mut record.revoked_by);
    }
    record
}

fn check(spec: &KeySpec, now: DateTime<Utc>) -> Result<(), String> {
    if spec.name.len() > MAX_NAME_LEN || spec.name.chars().any(char::is_control) {
        return Err(format!(
            "a key name is at most {MAX_NAME_LEN} bytes without control characters"
        ));
    }
    if spec.tenants.is_empty() || spec.tenants.len() > MAX_TENANTS {
        return Err(format!("a key acts for 1 to {MAX_TENANTS} tenants"));
    }
    for tenant in &spec.tenants {
        validate_tenant(tenant)?;
    }
    if spec.expires_at.is_some_and(|at| at <= now) {
        return Err("a key cannot expire before it is made".to_owned());
    }
    Ok(())
}

/// Refuses a key that is revoked or expired at `now`.
pub(crate) fn check_valid(record: &v1::ApiKey, now: DateTime<Utc>) -> Result<(), AccessError> {
    let id = &record.id;
    if record.revoked_at.is_some() {
        return Err(AccessError::unauthenticated(format!(
            "API key {id} was revoked"
        )));
    }
    // An expiry this version cannot read counts as passed.
    let expired = record
        .expires_at
        .as_ref()
        .is_some_and(|at| recoup_proto::from_timestamp(at).is_none_or(|at| at <= now));
    if expired {
        return Err(AccessError::unauthenticated(format!(
            "API key {id} has expired"
        )));
    }
    Ok(())
}
