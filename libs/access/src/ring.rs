//! The keys a process knows, in memory: what every request is checked against.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use recoup_proto::v1;

use crate::api_key::{KeyToken, check_valid};
use crate::bearer::bearer_credential;
use crate::error::AccessError;
use crate::principal::Principal;
use crate::role::Role;

/// Every API key by id, latest record each (a revocation replaces the key's record).
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: RwLock<HashMap<String, v1::ApiKey>>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the latest record of a key: new, changed or revoked.
    pub fn upsert(&self, record: v1::ApiKey) {
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(record.id.clone(), record);
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
    ) -> Result<Principal, AccessError> {
        let credential = bearer_credential(authorization)?;
        let token = KeyToken::parse(credential).ok_or_else(|| {
            AccessError::unauthenticated("the bearer credential is not an API key (rk1_…)")
        })?;
        let keys = self.read();
        let record = keys
            .get(token.id)
            .ok_or_else(|| AccessError::unauthenticated(format!("no API key {}", token.id)))?;
        if !token.matches(record) {
            return Err(AccessError::unauthenticated(format!(
                "wrong secret for API key {}",
                token.id
            )));
        }
        check_valid(record, now)?;
        let role = Role::from_proto(record.role).ok_or_else(|| {
            AccessError::unauthenticated(format!(
                "API key {} has no role this version knows",
                record.id
            ))
        })?;
        if record.tenants.is_empty() {
            return Err(AccessError::unauthenticated(format!(
                "API key {} names no tenant",
                record.id
            )));
        }
        Ok(Principal {
            id: format!("key:{}", record.id),
            tenants: record.tenants.clone(),
            role,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, v1::ApiKey>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
