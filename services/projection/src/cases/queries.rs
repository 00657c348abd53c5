//! Reading the case read model.

use debt_cases::{CaseState, DebtCase};
use prost::Message;
use recoup_keys::KeyReader;
use recoup_proto::convert::case_from_proto;
use recoup_proto::v1;

use super::keys::{
    case_key, history_key, history_prefix, state_key, state_prefix, tenant_and_case, tenant_prefix,
};
use super::{CaseReadModel, Totals, history};
use crate::kernel::{Counters, ReadModelError};

impl CaseReadModel {
    /// The last version of a case this read model applied (0: none).
    pub fn applied_version(&self, tenant: &str, case_id: &str) -> Result<u64, ReadModelError> {
        if let Some(case) = self.case(tenant, case_id)? {
            return Ok(case.version);
        }
        self.deleted_version(tenant, case_id)
    }

    /// A case as the read model holds it; `None` when unknown or deleted.
    pub fn case(&self, tenant: &str, case_id: &str) -> Result<Option<DebtCase>, ReadModelError> {
        let Some(proto) = self.case_proto(tenant, case_id)? else {
            return Ok(None);
        };
        case_from_proto(proto)
            .map(Some)
            .map_err(|e| corrupt_case(tenant, case_id, e.to_string()))
    }

    /// A case as `Query` answers it, straight from its stored encoding (no domain round trip).
    pub fn case_proto(
        &self,
        tenant: &str,
        case_id: &str,
    ) -> Result<Option<v1::DebtCase>, ReadModelError> {
        let Some(bytes) = self.tree.get(case_key(tenant, case_id))? else {
            return Ok(None);
        };
        v1::DebtCase::decode(bytes.as_ref())
            .map(Some)
            .map_err(|e| corrupt_case(tenant, case_id, e.to_string()))
    }

    /// Cases of a tenant ordered by id (ids of one length sort by their bytes), optionally of
    /// one state, starting after `after`.
    pub fn list_cases(
        &self,
        tenant: &str,
        state: Option<CaseState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DebtCase>, ReadModelError> {
        let (prefix, after) = match state {
            Some(state) => (
                state_prefix(tenant, state),
                after.map(|a| state_key(tenant, state, a)),
            ),
            None => (
                tenant_prefix(b'c', tenant),
                after.map(|a| case_key(tenant, a)),
            ),
        };
        let start = match after {
            // The smallest key after the last one listed.
            Some(after) => after.u8(0).into_vec(),
            None => prefix.as_bytes().to_vec(),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in self.tree.range(start..prefix.prefix_end()) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            if state.is_some() {
                let case_id = KeyReader::tail(&k[prefix.len()..])
                    .last_str()
                    .ok_or_else(|| ReadModelError::corrupt(&k, "state index key"))?;
                if let Some(c) = self.case(tenant, case_id)? {
                    out.push(c);
                }
            } else {
                out.push(decode_case(&k, &v)?);
            }
        }
        Ok(out)
    }

    /// Up to `limit` entries of a case's audit trail after version `after`, oldest first.
    pub fn history(
        &self,
        tenant: &str,
        case_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<v1::CaseHistoryEntry>, ReadModelError> {
        let prefix = history_prefix(tenant, case_id);
        // Chunks are keyed by their last version: the first one wanted may begin before it.
        let start = history_key(tenant, case_id, after.saturating_add(1)).into_vec();
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in self.tree.range(start..prefix.prefix_end()) {
            let (k, v) = entry?;
            let entries =
                history::entries(&v).map_err(|e| ReadModelError::corrupt(&k, &e.to_string()))?;
            for entry in entries.into_iter().filter(|e| e.version > after) {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(entry);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Count and totals per state and currency of a tenant.
    pub fn stats(&self, tenant: &str) -> Result<Vec<(CaseState, String, Totals)>, ReadModelError> {
        let prefix = tenant_prefix(b't', tenant);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (k, v) = entry?;
            let mut rest = KeyReader::tail(&k[prefix.len()..]);
            let (Some(code), Some(currency)) = (rest.u8(), rest.last_str()) else {
                return Err(ReadModelError::corrupt(&k, "totals key"));
            };
            let Some(state) = recoup_proto::convert::state_from_proto(i32::from(code)) else {
                continue;
            };
            out.push((state, currency.to_owned(), Totals::decode(&v)));
        }
        Ok(out)
    }

    /// Every (tenant, case id, applied version) this read model knows: held cases and deleted
    /// ones.
    pub fn applied_versions(&self) -> Result<Vec<(String, String, u64)>, ReadModelError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(b"c") {
            let (k, v) = entry?;
            let Some((tenant, case_id)) = tenant_and_case(&k) else {
                continue;
            };
            let version = v1::DebtCase::decode(v.as_ref())
                .map_err(|e| ReadModelError::corrupt(&k, &e.to_string()))?
                .version;
            out.push((tenant, case_id, version));
        }
        for entry in self.tree.scan_prefix(b"v") {
            let (k, v) = entry?;
            let (Some((tenant, case_id)), Ok(version)) =
                (tenant_and_case(&k), <[u8; 8]>::try_from(v.as_ref()))
            else {
                continue;
            };
            out.push((tenant, case_id, u64::from_be_bytes(version)));
        }
        Ok(out)
    }
}

fn decode_case(key: &[u8], value: &[u8]) -> Result<DebtCase, ReadModelError> {
    let proto =
        v1::DebtCase::decode(value).map_err(|e| ReadModelError::corrupt(key, &e.to_string()))?;
    case_from_proto(proto).map_err(|e| ReadModelError::corrupt(key, &e.to_string()))
}

fn corrupt_case(tenant: &str, case_id: &str, reason: String) -> ReadModelError {
    ReadModelError::Corrupt {
        key: format!("case {tenant}/{case_id}"),
        reason,
    }
}
