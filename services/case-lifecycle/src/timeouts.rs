//! Fails cases whose processing outlived their collector's timeout, through the same command
//! path as every client (so version checks and events are the usual ones).

use std::time::Duration;

use chrono::{DateTime, Utc};
use debt_cases::{CaseState, Command};
use event_backbone::envelope::{EventMetadata, new_event_id};
use recoup_runtime::Clock;
use tokio::sync::watch;

use crate::store::{CaseCommand, CommandError, EventStore, StoreError};

/// The failure reason written on timed-out cases.
pub const PROCESSING_TIMEOUT_REASON: &str = "processing timeout";

/// Fails every case whose processing timeout has passed; returns how many were failed.
pub async fn fail_timed_out(store: &EventStore, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let mut failed = 0;
    for (tenant, case_id) in store.due_timeouts(now)? {
        let Some(case) = store.get(&tenant, &case_id)? else {
            continue;
        };
        let due = case.state == CaseState::Processing
            && case.processing_timeout_on.is_some_and(|t| t <= now);
        if !due {
            continue;
        }
        let command = CaseCommand::Existing {
            case_id: case_id.clone(),
            expected_version: case.version,
            command: Command::Fail {
                reason: PROCESSING_TIMEOUT_REASON.to_owned(),
            },
        };
        let metadata = EventMetadata {
            correlation_id: new_event_id(),
            causation_id: "processing-timeout".to_owned(),
            actor: recoup_proto::contract::actor::TIMEOUTS.to_owned(),
        };
        match store.execute(&tenant, command, metadata).await {
            Ok(_) => {
                tracing::info!(%tenant, %case_id, "case failed: processing timeout");
                failed += 1;
            }
            // Someone changed the case meanwhile: the next round looks again.
            Err(CommandError::Rejected(reason)) => {
                tracing::debug!(%tenant, %case_id, %reason, "processing timeout not applied")
            }
            Err(CommandError::Failed(e)) => return Err(e),
        }
    }
    Ok(failed)
}

/// Checks for timed-out cases every `interval` until `shutdown` turns true.
pub async fn run(
    store: EventStore,
    clock: Clock,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // A sender gone without a word means the process is going away: stop too.
            changed = shutdown.changed() => if changed.is_err() { return },
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(error) = fail_timed_out(&store, clock()).await {
            tracing::warn!(%error, "processing timeout check failed");
        }
    }
}
