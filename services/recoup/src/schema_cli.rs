//! `recoup schema export DIR`: the contract for Kafka consumers downstream — the `.proto` files,
//! their descriptor set, and `CONTRACT.md` (topics, keys, headers, event types and their schema
//! versions, the ordering and duplicate rules), written from the tables the code itself uses.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use event_backbone::topics;
use recoup_proto::contract::header;
use recoup_proto::schema::EVENTS;

/// The descriptor set's file name in the exported directory.
pub const DESCRIPTOR_SET: &str = "recoup.binpb";

#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Write the .proto files (DIR/recoup/v1/), their descriptor set (DIR/recoup.binpb) and
    /// CONTRACT.md (topics, keys, headers, event types and their schema versions, ordering and
    /// duplicate rules) into DIR.
    Export {
        /// Where to write; made if missing.
        dir: std::path::PathBuf,
    },
}

pub fn run(command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::Export { dir } => export(&dir),
    }
}

/// Writes the contract into `dir` (made if missing; files of the same names are replaced).
pub fn export(dir: &Path) -> anyhow::Result<()> {
    for (path, text) in recoup_proto::PROTO_FILES {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    let set = dir.join(DESCRIPTOR_SET);
    std::fs::write(&set, recoup_proto::FILE_DESCRIPTOR_SET)
        .with_context(|| format!("writing {}", set.display()))?;
    let contract = dir.join("CONTRACT.md");
    std::fs::write(&contract, contract_text())
        .with_context(|| format!("writing {}", contract.display()))?;
    println!(
        "wrote {} .proto files, {DESCRIPTOR_SET} and CONTRACT.md to {}",
        recoup_proto::PROTO_FILES.len(),
        dir.display()
    );
    Ok(())
}

/// `CONTRACT.md`.
pub fn contract_text() -> String {
    let mut out = String::from(
        "# recoup's events: the contract for consumers\n\n\
         Every message value is an encoded `recoup.v1.EventEnvelope` (`recoup/v1/envelope.proto`); \
         its `payload` is the message the table below names for its `event_type`. \
         `recoup.binpb` is the descriptor set of every file (protobuf's `FileDescriptorSet`).\n\n\
         ## Topics\n\n| topic | partitions | cleanup | retention | what it carries |\n|---|---|---|---|---|\n",
    );
    for t in topics::ALL {
        let retention = if t.retention_ms < 0 {
            "forever".to_owned()
        } else {
            format!("{} ms", t.retention_ms)
        };
        let cleanup = if t.compacted { "compact" } else { "delete" };
        let _ = writeln!(
            out,
            "| `{}` | {} | {cleanup} | {retention} | {} |",
            t.name, t.partitions, t.description
        );
    }
    let _ = write!(
        out,
        "\n## Headers\n\n\
         Every message carries `{}` (the envelope's `event_id`) and `{}` (its `event_type`): \
         route or drop a message without decoding it.\n\n\
         ## Event types\n\n\
         | event_type | payload (`recoup.v1`) | schema version | aggregate_type | topic |\n|---|---|---|---|---|\n",
        header::EVENT_ID,
        header::EVENT_TYPE
    );
    for e in EVENTS {
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} | `{}` | `{}` |",
            e.event_type, e.message, e.version, e.aggregate_type, e.topic
        );
    }
    out.push_str(RULES);
    out
}

const RULES: &str = "
## Rules

- **Keys and order.** The message key is the aggregate id (a case id; an `account_uid`; a
  deal's `{tenant}/{public_id}`; an import id or export stream for rejects; an API key id).
  Kafka keeps the order within a partition, so the events of one key arrive in the order they
  were written.
- **Duplicates.** Delivery is at least once: the same event can arrive twice (a producer's
  retry, a relay resending after a crash). Drop an `event_id` you have seen. For debt cases,
  `aggregate_version` is 1 for a case's first event and +1 per event: apply a case's events in
  that order, skip versions you have. Snapshots, deals and metrics carry a `revision` per
  account-day or row key: keep the highest.
- **Tenancy.** Every envelope names its `tenant`; keys are unique per tenant only.
- **Schema versions.** `schema_version` is the version of the payload's schema for its
  `event_type` (0 in events written before versions: read it as 1). A field is never
  renumbered, retyped or reused (CI runs `buf breaking`); a new version changes what a
  consumer may rely on and is listed in the table above. A consumer that meets a version newer
  than it knows should stop or set the message aside, not guess.
  `DebtCaseCreated` version 2: `creator` is never empty; in version 1 it may be (events written
  before recoup recorded who created a case): take the envelope's `actor`, or `unknown`.
- **Times** are UTC (`google.protobuf.Timestamp`); dates are `YYYY-MM-DD` strings; amounts
  are integers in minor units unless a field says otherwise.
";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_export_holds_every_proto_file_the_descriptor_set_and_the_tables() {
        let dir = tempfile::tempdir().unwrap();
        export(dir.path()).unwrap();
        let envelope =
            std::fs::read_to_string(dir.path().join("recoup/v1/envelope.proto")).unwrap();
        assert!(envelope.contains("message EventEnvelope"));
        let set = std::fs::read(dir.path().join(DESCRIPTOR_SET)).unwrap();
        assert_eq!(set, recoup_proto::FILE_DESCRIPTOR_SET);
        let contract = std::fs::read_to_string(dir.path().join("CONTRACT.md")).unwrap();
        for topic in topics::ALL {
            assert!(contract.contains(topic.name), "{}", topic.name);
        }
        assert!(
            contract.contains("| `ApiKeyRecorded` | `ApiKey` | 1 |"),
            "{contract}"
        );
        assert!(contract.contains("| `DebtCaseCreated` | `DebtCaseCreated` | 2 |"));
    }
}
