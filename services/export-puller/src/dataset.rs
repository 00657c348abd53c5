//! Dataset descriptors: what the puller needs to know about one export dataset to page through
//! it, normalise its rows and tell them apart. D16 "Collections Cases" is built in ([`d16`]);
//! other datasets are described in configuration (JSON, the same shape as [`Dataset`]).

use collections::d16::{CODE as D16_CODE, SECTION as D16_SECTION};
use serde::{Deserialize, Serialize};

/// How one field's exported value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// A JSON string, kept as it is.
    String,
    /// A JSON boolean.
    Boolean,
    /// An amount in minor units (fils, cents): a JSON integer; never a fraction.
    MinorAmount,
    /// A calendar day written `DD/MM/YYYY` (D16's `dpd_due_date`, `last_due_date`).
    DateDmy,
    /// A calendar day written `YYYY-MM-DD`.
    DateIso,
    /// An ISO-8601 / RFC 3339 instant; one without an offset is taken as UTC.
    Timestamp,
}

/// One field of a dataset, under its current (canonical) name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
    /// A row without it (or with null) is rejected. Key fields and the cursor field are
    /// required whether marked or not.
    #[serde(default)]
    pub required: bool,
}

/// A field the export emits under another name than its canonical one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rename {
    /// The name in the export (`dpd_due_date_timestamp`, `case_public_id`).
    pub from: String,
    /// The canonical name (`dpd_due_date`, `public_id`).
    pub to: String,
}

/// Everything the puller knows about one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Section code in the export path, e.g. `S3`.
    pub section: String,
    /// Dataset code in the export path, e.g. `D16`.
    pub code: String,
    /// A name for logs and docs, e.g. "Collections Cases".
    pub title: String,
    /// The field `since`/`until` filter on and pages are ordered by (an instant).
    pub cursor_field: String,
    /// The fields that identify a row (canonical names), e.g. `public_id`, `created_at`.
    pub key_fields: Vec<String>,
    /// The field whose value, with the tenant, keys the Kafka message: every row sharing it
    /// lands in one partition, in order.
    pub partition_field: String,
    pub renames: Vec<Rename>,
    pub fields: Vec<Field>,
}

impl Dataset {
    /// `S3/D16`: how the dataset is named in paths, logs and events.
    pub fn path(&self) -> String {
        format!("{}/{}", self.section, self.code)
    }

    /// The field named `name` (canonical).
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether a row must carry this field.
    pub fn is_required(&self, field: &Field) -> bool {
        field.required
            || field.name == self.cursor_field
            || field.name == self.partition_field
            || self.key_fields.contains(&field.name)
    }

    /// What is wrong with this descriptor (a configured one), if anything: the cursor, key and
    /// partition fields must be declared, the cursor an instant, no field declared twice, no
    /// rename onto an undeclared field.
    pub fn check(&self) -> Result<(), String> {
        let name = self.path();
        for (i, field) in self.fields.iter().enumerate() {
            if self.fields[..i].iter().any(|f| f.name == field.name) {
                return Err(format!(
                    "dataset {name}: field `{}` is declared twice",
                    field.name
                ));
            }
        }
        match self.field(&self.cursor_field) {
            Some(f) if f.kind == FieldKind::Timestamp => {}
            Some(_) => {
                return Err(format!(
                    "dataset {name}: cursor field `{}` must be a timestamp",
                    self.cursor_field
                ));
            }
            None => {
                return Err(format!(
                    "dataset {name}: cursor field `{}` is not among its fields",
                    self.cursor_field
                ));
            }
        }
        if self.key_fields.is_empty() {
            return Err(format!("dataset {name}: no key fields"));
        }
        for key in self.key_fields.iter().chain([&self.partition_field]) {
            if self.field(key).is_none() {
                return Err(format!(
                    "dataset {name}: key field `{key}` is not among its fields"
                ));
            }
        }
        for rename in &self.renames {
            if self.field(&rename.to).is_none() {
                return Err(format!(
                    "dataset {name}: rename `{}` → `{}` names no field",
                    rename.from, rename.to
                ));
            }
        }
        Ok(())
    }
}

/// D16 "Collections Cases" (docs/domain.md §1; the vendor document is in
/// `tests/data/cleargrid-export-d16-collections-cases.txt`).
pub fn d16() -> Dataset {
    let field = |name: &str, kind| Field {
        name: name.to_owned(),
        kind,
        required: false,
    };
    let rename = |from: &str, to: &str| Rename {
        from: from.to_owned(),
        to: to.to_owned(),
    };
    use FieldKind::*;
    Dataset {
        section: D16_SECTION.to_owned(),
        code: D16_CODE.to_owned(),
        title: "Collections Cases".to_owned(),
        cursor_field: "updated_at".to_owned(),
        // `public_id` is the borrower × lender link, not unique per row.
        key_fields: vec!["public_id".to_owned(), "created_at".to_owned()],
        partition_field: "public_id".to_owned(),
        renames: vec![
            // Emitted under the wrong name until a service-side fix ships.
            rename("dpd_due_date_timestamp", "dpd_due_date"),
            // The name before v1.2.
            rename("case_public_id", "public_id"),
        ],
        fields: vec![
            field("public_id", String),
            field("deal_stage_id", String),
            field("pipeline", String),
            field("comms_pipeline", String),
            field("amount", MinorAmount),
            field("assigned_user_name", String),
            field("dpd_due_date", DateDmy),
            field("last_due_date", DateDmy),
            field("ptp_date_human", Timestamp),
            field("ptp_date_ai", Timestamp),
            field("broken_ptp_date_human", Timestamp),
            field("broken_ptp_date_ai", Timestamp),
            field("hasReachedRpcOrBeyond", Boolean),
            field("do_not_contact", Boolean),
            field("created_at", Timestamp),
            field("updated_at", Timestamp),
        ],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn d16_is_a_valid_descriptor_with_every_seed_field() {
        let d16 = d16();
        assert_eq!(d16.check(), Ok(()));
        assert_eq!(d16.path(), "S3/D16");
        let seed = include_str!("../tests/data/cleargrid-export-d16-collections-cases.txt");
        let sample = &seed[seed.find("Sample row").unwrap()..];
        let json = &sample[sample.find('{').unwrap()..=sample.find('}').unwrap()];
        let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).unwrap();
        for name in row.keys() {
            assert!(
                d16.field(name).is_some(),
                "seed field {name} is in the descriptor"
            );
        }
        assert_eq!(row.len(), d16.fields.len());
    }

    #[test]
    fn a_configured_descriptor_is_checked() {
        let mut broken = d16();
        broken.cursor_field = "amount".to_owned();
        assert!(broken.check().unwrap_err().contains("must be a timestamp"));
        let mut broken = d16();
        broken.key_fields.push("nope".to_owned());
        assert!(broken.check().unwrap_err().contains("`nope`"));
        let json = serde_json::to_string(&d16()).unwrap();
        let back: Dataset = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d16());
    }
}
