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

    /// Takes the latest record of a key: new, changed or revoked.
    pub fn upsert(&self, record: v1::ApiKey) {
        let principal = principal_of(&record);
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(record.id.clone(), Known { record, principal });
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
        let credential = bearer_credential(authorization)?;
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
        role,
    }))
}
