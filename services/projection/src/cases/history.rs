//! The audit trail's entries under `h`, in chunks: the entries one batch applied to one case,
//! under the key of the last version among them, so a case's events applied together are
//! written once.
//!
//! A chunk's value is a 0 byte, then each `recoup.v1.CaseHistoryEntry` length-delimited, in
//! version order. A value that does not start with a 0 byte is one entry, as read models wrote
//! them before chunks (an encoded entry starts with the tag of its version, never 0).

use prost::Message;
use recoup_proto::v1;

/// The first byte of a chunk.
const CHUNK: u8 = 0;

/// Appends the entry of an applied event to a chunk's entries.
pub(super) fn append(entries: &mut Vec<u8>, envelope: &v1::EventEnvelope) {
    let entry = v1::CaseHistoryEntry {
        version: envelope.aggregate_version,
        event_type: envelope.event_type.clone(),
        occurred_at: envelope.occurred_at,
        actor: envelope.actor.clone(),
        correlation_id: envelope.correlation_id.clone(),
        event_id: envelope.event_id.clone(),
    };
    // Writing into a Vec cannot fail.
    let _ = entry.encode_length_delimited(entries);
}

/// The stored value of a chunk of appended entries.
pub(super) fn chunk(entries: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(entries.len() + 1);
    value.push(CHUNK);
    value.extend_from_slice(entries);
    value
}

/// The entries of a stored value, chunk or single entry.
pub(super) fn entries(value: &[u8]) -> Result<Vec<v1::CaseHistoryEntry>, prost::DecodeError> {
    let Some(mut rest) = value.strip_prefix(&[CHUNK]) else {
        return Ok(vec![v1::CaseHistoryEntry::decode(value)?]);
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        out.push(v1::CaseHistoryEntry::decode_length_delimited(&mut rest)?);
    }
    Ok(out)
}

/// An `h` entry as the entries it holds, each under the key of its own version: the audit trail
/// as it reads, whatever batches wrote it (two read models fed the same events in different
/// batches compare equal this way). `None` for a key that is not the audit trail's.
pub fn entries_by_version(key: &[u8], value: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut reader = recoup_keys::KeyReader::new(key, b'h')?;
    let (tenant, case_id) = (reader.str()?, reader.str()?);
    let entries = entries(value).ok()?;
    Some(
        entries
            .into_iter()
            .map(|e| {
                let k = super::keys::history_key(tenant, case_id, e.version).into_vec();
                (k, e.encode_to_vec())
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn envelope(version: u64) -> v1::EventEnvelope {
        v1::EventEnvelope {
            aggregate_version: version,
            event_type: format!("Event{version}"),
            actor: "key:a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_chunk_reads_back_its_entries_in_order() {
        let mut entries_of_batch = Vec::new();
        for version in 3..=5 {
            append(&mut entries_of_batch, &envelope(version));
        }
        let read = entries(&chunk(&entries_of_batch)).unwrap();
        let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
        assert_eq!(versions, [3, 4, 5]);
        assert_eq!(read[2].event_type, "Event5");
        assert_eq!(read[0].actor, "key:a");
    }

    #[test]
    fn an_entry_written_before_chunks_reads_as_itself() {
        let old = v1::CaseHistoryEntry {
            version: 7,
            event_type: "Closed".into(),
            ..Default::default()
        };
        let read = entries(&old.encode_to_vec()).unwrap();
        assert_eq!(read, [old]);
    }

    #[test]
    fn a_torn_chunk_is_an_error_not_a_panic() {
        let mut one = Vec::new();
        append(&mut one, &envelope(1));
        let mut value = chunk(&one);
        value.truncate(value.len() - 2);
        assert!(entries(&value).is_err());
    }
}
