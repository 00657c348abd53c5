//! Embedded mode, after a run that did not end cleanly: deals the dead in-memory broker
//! acknowledged but the deals read model never received are pulled again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use collections::DealKey;
use collections::d16::DATASET;

use crate::store::{PullStore, StoreError, StreamId};

/// What the deals read model applied: every deal of a tenant with its revision.
pub trait AppliedDeals {
    fn applied_revisions(
        &self,
        tenant: &str,
    ) -> Result<HashMap<DealKey, u64>, Box<dyn std::error::Error + Send + Sync>>;
}

impl<F, E> AppliedDeals for F
where
    F: Fn(&str) -> Result<HashMap<DealKey, u64>, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn applied_revisions(
        &self,
        tenant: &str,
    ) -> Result<HashMap<DealKey, u64>, Box<dyn std::error::Error + Send + Sync>> {
        self(tenant).map_err(Into::into)
    }
}

/// Why the recovery could not run.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the deals read model: {0}")]
    ReadModel(Box<dyn std::error::Error + Send + Sync>),
}

/// Deals the read model lacks are forgotten and their streams' `since` moved back before them,
/// so the next pull fetches and publishes them again; deals it holds at another revision than
/// the store (or that the store forgot) count on from the read model's revision, which it
/// would otherwise skip. Nothing happens after a clean end.
pub fn rewind_unprojected(
    store: &PullStore,
    applied: &dyn AppliedDeals,
) -> Result<(), RecoveryError> {
    if store.take_clean_mark()? {
        return Ok(());
    }
    let streams: Vec<StreamId> = store.streams().collect::<Result<_, _>>()?;
    for stream in streams.into_iter().filter(|s| s.dataset == DATASET) {
        let applied = applied
            .applied_revisions(&stream.tenant)
            .map_err(RecoveryError::ReadModel)?;
        let rewind = compare(store, &stream, &applied)?;
        if rewind.lost == 0 && rewind.raise.is_empty() {
            continue;
        }
        let since = if rewind.lost == 0 {
            store.checkpoint(&stream)?.since
        } else {
            rewind.earliest_lost
        };
        store.rewind(&stream, &rewind.forget, &rewind.raise, since)?;
        tracing::warn!(
            stream = %stream,
            deals = rewind.lost,
            since = ?rewind.earliest_lost,
            "the last run ended before these deals reached the read models; they are pulled again"
        );
    }
    Ok(())
}

/// What a stream must be put back for.
#[derive(Default)]
struct Rewind {
    /// Row keys the read model lacks.
    forget: Vec<String>,
    /// Row keys whose next content must count on from the read model's revision.
    raise: Vec<(String, u64)>,
    /// Deals the read model lacks or holds at an older revision than the store.
    lost: usize,
    earliest_lost: Option<DateTime<Utc>>,
}

fn compare(
    store: &PullStore,
    stream: &StreamId,
    applied: &HashMap<DealKey, u64>,
) -> Result<Rewind, StoreError> {
    let mut rewind = Rewind::default();
    let mut known = HashSet::new();
    for (row_key, fingerprint) in store.fingerprints(stream)? {
        let Some(key) = DealKey::parse(&row_key) else {
            continue;
        };
        let revision = applied.get(&key).copied();
        known.insert(key);
        match revision {
            Some(revision) if revision == fingerprint.revision => {}
            // The read model is ahead: count on from there.
            Some(revision) if revision > fingerprint.revision => {
                rewind.raise.push((row_key, revision))
            }
            _ => {
                rewind.lost += 1;
                rewind.earliest_lost = match (rewind.earliest_lost, fingerprint.cursor()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // Pulled again, counting on from what the read model has: a revision it
                // already applied would be skipped there.
                match revision {
                    Some(revision) => rewind.raise.push((row_key, revision)),
                    None => rewind.forget.push(row_key),
                }
            }
        }
    }
    // Deals the read model has that the store forgot (a crash took the commit of their page).
    for (key, revision) in applied {
        if !known.contains(key) {
            rewind.raise.push((key.row_key(), *revision));
        }
    }
    Ok(rewind)
}
