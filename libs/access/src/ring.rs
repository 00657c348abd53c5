//! The keys a process knows, in memory: what every request is checked against.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use chrono::{DateTime, Utc};
use recoup_proto::v1;

use crate::api_key::{KeyToken, check_valid};
use crate::bearer::bearer_credential;
use crate::error::AccessError;
use crate::principal::Principal;
use crate::role::Role;

/// A key's latest record, and the principal it names (made once, when the record arrives).
#[derive(Debug)]
struct Known {
    record: v1::ApiKey,
    /// Why the record names no principal (no role this version knows, no tenant).
    principal: Result<Arc<Principal>, String>,
}

/// Every API key by id, latest record each (a revocation replaces the key's record).
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<String, Known>>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a record of a key: new, changed or revoked. A revocation is final: a record
    /// without one (an older record arriving late, a stale copy published again) does not
    /// bring a revoked key back, and a key revoked twice keeps its first time. Returns the
    /// record now kept when this changed it, `None` when the ring knew it already.
    pub fn upsert(&self, record: v1::ApiKey) -> Option<v1::ApiKey> {
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept = merge(keys.get(&record.id).map(|k| &k.record), record)?;
        let principal = principal_of(&kept);
        keys.insert(
            kept.id.clone(),
            Known {
                record: kept.clone(),
                principal,
            },
        );
        Some(kept)
    }

    /// Every key's latest record, in id order.
    pub fn records(&self) -> Vec<v1::ApiKey> {
        let mut records: Vec<v1::ApiKey> = self.read().values().map(|k| k.record.clone()).collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records
    }

    /// The latest record of key `id`.
    pub fn get(&self, id: &str) -> Option<v1::ApiKey> {
        self.read().get(id).map(|k| k.record.clone())
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The principal of an `authorization` value (`None`: no header) at `now`.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Arc<Principal>, AccessError> {
        self.check(bearer_credential(authorization)?, now)
    }

    /// The principal of an API key at `now`.
    pub fn check(
        &self,
        credential: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<Principal>, AccessError> {
        let token = KeyToken::parse(credential).ok_or_else(|| {
            AccessError::unauthenticated("the bearer credential is not an API key (rk1_…)")
        })?;
        let keys = self.read();
        let known = keys
            .get(token.id)
            .ok_or_else(|| AccessError::unauthenticated(format!("no API key {}", token.id)))?;
        if !token.matches(&known.record) {
            return Err(AccessError::unauthenticated(format!(
                "wrong secret for API key {}",
                token.id
            )));
        }
        check_valid(&known.record, now)?;
        known
            .principal
            .clone()
            .map_err(AccessError::unauthenticated)
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Known>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What `incoming` makes of a key known as `known`: the incoming record, with the earliest
/// revocation of the two. `None` when that is what is known already.
fn merge(known: Option<&v1::ApiKey>, mut incoming: v1::ApiKey) -> Option<v1::ApiKey> {
    let Some(known) = known else {
        return Some(incoming);
    };
    let earlier = |a: &v1::ApiKey, b: &v1::ApiKey| match (&a.revoked_at, &b.revoked_at) {
        (Some(x), Some(y)) => (x.seconds, x.nanos) <= (y.seconds, y.nanos),
        (x, _) => x.is_some(),
    };
    if earlier(known, &incoming) {
        incoming.revoked_at = known.revoked_at;
        incoming.revoked_by.clone_from(&known.revoked_by);
    }
    (incoming != *known).then_some(incoming)
}

fn principal_of(record: &v1::ApiKey) -> Result<Arc<Principal>, String> {
    let id = &record.id;
    let role = Role::from_proto(record.role)
        .ok_or_else(|| format!("API key {id} has no role this version knows"))?;
    if record.tenants.is_empty() {
        return Err(format!("API key {id} names no tenant"));
    }
    Ok(Arc::new(Principal {
        id: format!("key:{id}"),
        tenants: record.tenants.clone(),
        roles: vec![role],
    }))
}
