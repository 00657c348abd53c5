//! Reports, their errors, and the list of a tenant's imports (`r`, `e` and `l` entries).

use prost::Message;
use recoup_proto::v1;

use super::keys::{
    LISTED_MARKER, error_key, errors_prefix, list_key, list_prefix, parse_list_key,
    parse_report_key, report_key,
};
use super::{ImportStore, StoreError};

/// When an import finished, as its list entry orders it: microseconds since the epoch
/// (0 for a report without the time, or before 1970).
pub(super) fn finished_micros(report: &v1::ImportReport) -> u64 {
    report
        .finished_at
        .as_ref()
        .map(|t| t.seconds.saturating_mul(1_000_000) + i64::from(t.nanos / 1000))
        .and_then(|micros| u64::try_from(micros).ok())
        .unwrap_or(0)
}

/// Where a page of the list of imports ends: the (finished micros, import id) of its last
/// import; the next page lists those before it.
pub type ListPosition = (u64, String);

impl ImportStore {
    /// The finished report of an import, without its errors.
    pub fn report(
        &self,
        tenant: &str,
        import_id: &str,
    ) -> Result<Option<v1::ImportReport>, StoreError> {
        match self.tree.get(report_key(tenant, import_id))? {
            Some(bytes) => Ok(Some(v1::ImportReport::decode(bytes.as_ref())?)),
            None => Ok(None),
        }
    }

    /// Keeps a finished report (its errors are stored separately) and its place in the list of
    /// the tenant's imports, and makes everything durable.
    pub async fn finish(&self, tenant: &str, report: &v1::ImportReport) -> Result<(), StoreError> {
        let mut summary = report.clone();
        summary.errors.clear();
        summary.next_errors_page_token.clear();
        summary.duplicate = false;
        let key = report_key(tenant, &report.import_id);
        let mut batch = sled::Batch::default();
        // An import finished again (after it was forgotten) moves to its new place.
        if let Some(earlier) = self.tree.get(&key)?
            && let Ok(earlier) = v1::ImportReport::decode(earlier.as_ref())
        {
            batch.remove(list_key(
                tenant,
                finished_micros(&earlier),
                &report.import_id,
            ));
        }
        batch.insert(
            list_key(tenant, finished_micros(&summary), &report.import_id),
            &[],
        );
        batch.insert(key, summary.encode_to_vec());
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Up to `limit` reports of `tenant` (without their errors), the most recent first, from
    /// before `before` (the first page: `None`); and the position to go on from when more
    /// follow.
    pub fn imports(
        &self,
        tenant: &str,
        before: Option<&ListPosition>,
        limit: usize,
    ) -> Result<(Vec<v1::ImportReport>, Option<ListPosition>), StoreError> {
        let prefix = list_prefix(tenant);
        let end = match before {
            Some((micros, id)) => list_key(tenant, *micros, id),
            None => prefix.prefix_end(),
        };
        let mut reports = Vec::new();
        let mut last: Option<ListPosition> = None;
        for entry in self.tree.range(prefix.as_bytes()..end.as_slice()).rev() {
            let (key, _) = entry?;
            let Some((micros, import_id)) = parse_list_key(&key, tenant) else {
                continue;
            };
            if reports.len() == limit {
                return Ok((reports, last));
            }
            if let Some(report) = self.report(tenant, import_id)? {
                reports.push(report);
                last = Some((micros, import_id.to_owned()));
            }
        }
        Ok((reports, None))
    }

    /// Puts every report into the list of its tenant's imports once: stores of earlier
    /// versions kept reports without a list.
    pub(super) fn list_earlier_reports(&self) -> Result<(), StoreError> {
        if self.tree.contains_key(LISTED_MARKER)? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let (mut listed, mut unreadable) = (0u64, 0u64);
        for entry in self.tree.scan_prefix(b"r") {
            let (key, value) = entry?;
            let report = v1::ImportReport::decode(value.as_ref());
            match (parse_report_key(&key), report) {
                (Some((tenant, import_id)), Ok(report)) => {
                    batch.insert(list_key(&tenant, finished_micros(&report), &import_id), &[]);
                    listed += 1;
                }
                _ => unreadable += 1,
            }
        }
        batch.insert(LISTED_MARKER, &[1u8]);
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        if listed + unreadable > 0 {
            tracing::info!(listed, unreadable, "importer store: earlier imports listed");
        }
        Ok(())
    }

    /// Up to `limit` errors of an import from sequence `from` on, and the sequence after them
    /// when more follow.
    pub fn errors(
        &self,
        tenant: &str,
        import_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<v1::RowError>, Option<u64>), StoreError> {
        let prefix = errors_prefix(tenant, import_id).into_vec();
        let start = error_key(tenant, import_id, from);
        let mut errors = Vec::new();
        for entry in self.tree.range(start..) {
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let sequence = key
                .get(prefix.len()..)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if errors.len() == limit {
                return Ok((errors, Some(sequence)));
            }
            errors.push(v1::RowError::decode(value.as_ref())?);
        }
        Ok((errors, None))
    }
}
