//! A consumer reads old events through the one upcasting path: the golden `DebtCaseCreated` of
//! schema version 1 (written before recoup recorded who created a case) lands in the case read
//! model with its creator named as version 2 guarantees.
#![allow(clippy::unwrap_used)]

use event_backbone::consumer::ReceivedEvent;
use projection::{CaseReadModel, Projection};
use recoup_proto::schema::UNKNOWN_CREATOR;
use tempfile::TempDir;

#[test]
fn a_version_one_creation_is_projected_with_its_creator() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../proto/golden/DebtCaseCreated.v1.bin");
    let dir = TempDir::new().unwrap();
    let model = CaseReadModel::open(dir.path()).unwrap();
    let message = ReceivedEvent {
        partition: 0,
        offset: 0,
        key: b"a-1".to_vec(),
        value: std::fs::read(golden).unwrap(),
    };
    let outcome = model
        .apply_batch("c1", "recoup.debt-cases.v1", &[message])
        .unwrap();
    assert_eq!((outcome.applied, outcome.rejected), (1, 0), "{outcome:?}");
    let case = model.case("acme", "a-1").unwrap().unwrap();
    assert_eq!(case.creator, UNKNOWN_CREATOR);
    assert_eq!(case.reference, "INV-1");
}
