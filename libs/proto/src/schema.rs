//! Versions of the event payloads, and the one place where an event written at an older version
//! is brought to the current shape (upcasting).
//!
//! Every envelope carries `schema_version`: the version of its payload's schema for its
//! `event_type`, as [`current`] gives it when the event is written. A payload changes version when
//! what a consumer may rely on changes (a field's meaning, a guarantee); a change of the wire
//! (a field renumbered, retyped, removed without being reserved) is never allowed, and
//! `buf breaking` refuses it in CI. Every consumer in recoup decodes envelopes through
//! `event_backbone::envelope::decode_envelope`, which calls [`upcast`]: the read models, the
//! event store's replay, the key followers never see an older shape.
//!
//! | event type | version | what changed |
//! |---|---|---|
//! | `DebtCaseCreated` | 2 | `creator` is never empty: version 1 left it empty in events written before recoup recorded actors; upcast, it is the envelope's `actor`, or `unknown` |
//! | every other type | 1 | |
//!
//! Version 0 (the field unset) reads as 1. An event of a version newer than this build knows is
//! refused with its reason (a consumer keeps it among its rejects), never guessed at.
//!
//! Golden files of events as each version wrote them are in `proto/golden/`: the tests decode
//! every one with the code of every later change.

use prost::Message;

use crate::contract::event_type as types;
use crate::contract::{aggregate, topic};
use crate::v1;

/// The creator of a case created before recoup recorded who created it.
pub const UNKNOWN_CREATOR: &str = "unknown";

/// What a consumer needs to know of one event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSchema {
    /// The envelope's `event_type` and the `recoup-event-type` header.
    pub event_type: &'static str,
    /// The payload's message in `recoup.v1`.
    pub message: &'static str,
    /// The schema version this build writes.
    pub version: u32,
    /// The envelope's `aggregate_type`.
    pub aggregate_type: &'static str,
    /// The topic it is published on.
    pub topic: &'static str,
}

const fn event(
    event_type: &'static str,
    message: &'static str,
    version: u32,
    aggregate_type: &'static str,
    topic: &'static str,
) -> EventSchema {
    EventSchema {
        event_type,
        message,
        version,
        aggregate_type,
        topic,
    }
}

/// Every event type recoup writes, with the version of its payload's schema.
pub const EVENTS: &[EventSchema] = &[
    event(
        types::DEBT_CASE_CREATED,
        "DebtCaseCreated",
        2,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::DEBT_CASE_UPDATED,
        "DebtCaseUpdated",
        1,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::DEBT_CASE_REVIEWED,
        "DebtCaseReviewed",
        1,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::DEBT_CASE_PREPARED,
        "DebtCasePrepared",
        1,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::DEBT_CASE_PROCESSING_STARTED,
        "DebtCaseProcessingStarted",
        1,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::DEBT_CASE_PAYMENT_RECEIPT_ADDED,
        "DebtCasePaymentReceiptAdded",
        1,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::DEBT_CASE_CLOSED,
        "DebtCaseClosed",
        1,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::DEBT_CASE_FAILED,
        "DebtCaseFailed",
        1,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::DEBT_CASE_DELETED,
        "DebtCaseDeleted",
        1,
        aggregate::DEBT_CASE,
        topic::DEBT_CASES,
    ),
    event(
        types::ACCOUNT_SNAPSHOT_RECORDED,
        "AccountSnapshotRecorded",
        1,
        aggregate::PAYGO_ACCOUNT_SNAPSHOT,
        topic::PAYGO_SNAPSHOTS,
    ),
    event(
        types::ROW_REJECTED,
        "RowRejected",
        1,
        aggregate::SNAPSHOT_IMPORT,
        topic::REJECTS,
    ),
    event(
        types::COLLECTIONS_DEAL_OBSERVED,
        "CollectionsDealObserved",
        1,
        aggregate::COLLECTIONS_DEAL,
        topic::COLLECTIONS_DEALS,
    ),
    event(
        types::EXPORT_ROW_REJECTED,
        "ExportRowRejected",
        1,
        aggregate::EXPORT_STREAM,
        topic::REJECTS,
    ),
    event(
        types::API_KEY_RECORDED,
        "ApiKey",
        1,
        aggregate::API_KEY,
        topic::ACCESS,
    ),
    event(
        types::ACCOUNT_METRICS_CALCULATED,
        "AccountMetricsCalculated",
        1,
        aggregate::PAYGO_ACCOUNT_METRICS,
        topic::PAYGO_METRICS,
    ),
];

/// The schema of `event_type`, when recoup writes it.
pub fn of(event_type: &str) -> Option<&'static EventSchema> {
    EVENTS.iter().find(|e| e.event_type == event_type)
}

/// The version `event_type` is written at; 1 for a type recoup does not write.
pub fn current(event_type: &str) -> u32 {
    of(event_type).map_or(1, |e| e.version)
}

/// Why an event cannot be brought to the current shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    #[error(
        "{event_type} of schema version {version} is newer than this recoup reads ({current}): \
         upgrade the consumer"
    )]
    Newer {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("{event_type} of schema version {version}: the payload does not decode: {reason}")]
    Payload {
        event_type: String,
        version: u32,
        reason: String,
    },
}

/// One step: an envelope of `event_type` at `from` into `from + 1`.
type Step = fn(&mut v1::EventEnvelope) -> Result<(), prost::DecodeError>;

const STEPS: &[(&str, u32, Step)] = &[(types::DEBT_CASE_CREATED, 1, created_names_its_creator)];

/// Brings `envelope` to the current version of its event type, step by step; its
/// `schema_version` is the current one afterwards.
pub fn upcast(envelope: &mut v1::EventEnvelope) -> Result<(), UpcastError> {
    let current = current(&envelope.event_type);
    let mut version = envelope.schema_version.max(1);
    if version > current {
        return Err(UpcastError::Newer {
            event_type: envelope.event_type.clone(),
            version,
            current,
        });
    }
    while version < current {
        let step = STEPS
            .iter()
            .find(|(t, from, _)| *t == envelope.event_type && *from == version);
        if let Some((_, _, step)) = step {
            step(envelope).map_err(|e| UpcastError::Payload {
                event_type: envelope.event_type.clone(),
                version,
                reason: e.to_string(),
            })?;
        }
        version += 1;
    }
    envelope.schema_version = current;
    Ok(())
}

/// `DebtCaseCreated` 1 → 2: an empty `creator` becomes the envelope's actor, or
/// [`UNKNOWN_CREATOR`] when that is empty too.
fn created_names_its_creator(envelope: &mut v1::EventEnvelope) -> Result<(), prost::DecodeError> {
    let mut created = v1::DebtCaseCreated::decode(envelope.payload.as_slice())?;
    if created.creator.is_empty() {
        created.creator = if envelope.actor.is_empty() {
            UNKNOWN_CREATOR.to_owned()
        } else {
            envelope.actor.clone()
        };
        envelope.payload = created.encode_to_vec();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn created(version: u32, creator: &str, actor: &str) -> v1::EventEnvelope {
        v1::EventEnvelope {
            event_type: types::DEBT_CASE_CREATED.to_owned(),
            schema_version: version,
            actor: actor.to_owned(),
            payload: v1::DebtCaseCreated {
                creator: creator.to_owned(),
                ..Default::default()
            }
            .encode_to_vec(),
            ..Default::default()
        }
    }

    fn creator(envelope: &v1::EventEnvelope) -> String {
        v1::DebtCaseCreated::decode(envelope.payload.as_slice())
            .unwrap()
            .creator
    }

    #[test]
    fn a_version_one_creation_gets_its_creator_from_the_actor_or_unknown() {
        for (version, given, actor, expected) in [
            (1, "", "key:k1", "key:k1"),
            (0, "", "", UNKNOWN_CREATOR),
            (1, "key:k2", "key:k3", "key:k2"),
            (2, "key:k4", "", "key:k4"),
        ] {
            let mut envelope = created(version, given, actor);
            upcast(&mut envelope).unwrap();
            assert_eq!(envelope.schema_version, 2);
            assert_eq!(
                creator(&envelope),
                expected,
                "{version} {given:?} {actor:?}"
            );
        }
    }

    #[test]
    fn a_newer_version_is_refused_and_a_broken_payload_named() {
        let newer = upcast(&mut created(3, "", "")).unwrap_err();
        assert!(newer.to_string().contains("version 3 is newer"), "{newer}");
        let mut broken = created(1, "", "");
        broken.payload = vec![0xff, 0xff];
        let error = upcast(&mut broken).unwrap_err();
        assert!(
            matches!(error, UpcastError::Payload { version: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn every_type_written_has_a_version_and_unknown_types_read_as_one() {
        assert_eq!(current(types::DEBT_CASE_CREATED), 2);
        assert_eq!(current(types::ROW_REJECTED), 1);
        assert_eq!(current("SomethingElse"), 1);
        let mut other = v1::EventEnvelope {
            event_type: types::DEBT_CASE_CLOSED.to_owned(),
            ..Default::default()
        };
        upcast(&mut other).unwrap();
        assert_eq!(other.schema_version, 1);
    }
}
