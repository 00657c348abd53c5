//! Cases by reference: the reference index (`r`: tenant, reference → case id) read in order,
//! so a prefix of references is one range of keys.

use std::ops::Bound;

use debt_cases::DebtCase;
use sled::IVec;

use super::{EventStore, StoreError};
use crate::keys;

/// A page of cases found by reference, and where the next page starts.
#[derive(Debug, Default)]
pub struct Found {
    pub cases: Vec<DebtCase>,
    /// The last reference read, when more may follow: the next page starts after it.
    pub after: Option<String>,
}

impl EventStore {
    /// Up to `limit` cases of `tenant` whose reference starts with `prefix`, in reference
    /// order (the bytes of the UTF-8 text), after reference `after`. At most `examine` index
    /// entries are read (a case deleted meanwhile is skipped), so a call costs the same
    /// whatever the index holds.
    pub fn search_references(
        &self,
        tenant: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        examine: usize,
    ) -> Result<Found, StoreError> {
        let (limit, examine) = (limit.max(1), examine.max(1));
        let wanted = keys::reference(tenant, prefix);
        // The reference is the key's last part: it starts where the prefix starts in `wanted`.
        let reference_at = wanted.len().saturating_sub(prefix.len());
        let reference_of = |key: &IVec| {
            String::from_utf8_lossy(key.get(reference_at..).unwrap_or_default()).into_owned()
        };
        let start = match after {
            Some(after) => Bound::Excluded(keys::reference(tenant, after)),
            None => Bound::Included(wanted.clone()),
        };
        let mut found = Found::default();
        let mut last: Option<IVec> = None;
        for (examined, entry) in self.tree.range((start, Bound::Unbounded)).enumerate() {
            let (key, case_id) = entry?;
            if !key.starts_with(&wanted) {
                return Ok(found);
            }
            if found.cases.len() == limit || examined == examine {
                found.after = last.as_ref().map(reference_of);
                return Ok(found);
            }
            if let Some(case) = self.get(tenant, &String::from_utf8_lossy(&case_id))?
                && case.deleted_on.is_none()
            {
                found.cases.push(case);
            }
            last = Some(key);
        }
        Ok(found)
    }
}
