//! What the projection tests share: debt-case event streams, encoded the way the relay publishes
//! them, and Kafka-like messages of them (no Kafka needed).
#![allow(dead_code, clippy::unwrap_used)]

pub mod deals;

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use debt_cases::{
    BillingAddress, CaseChanges, CaseState, DebtCase, DebtCaseEvent, Environment, LineItem,
    NewCase, PaymentReceipt,
};
use event_backbone::consumer::ReceivedEvent;
use event_backbone::envelope::{EventMetadata, NewEnvelope};
use prost::Message;
use recoup_proto::convert::event_to_payload;

pub const TOPIC: &str = "recoup.debt-cases";
pub const CLUSTER: &str = "c1";

/// A fixed instant `minutes` after the test epoch (with sub-second digits, so that precision is
/// checked too).
pub fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap()
        + Duration::nanoseconds(123_456_789)
        + Duration::minutes(minutes)
}

/// One case's event stream, version `n` being `events[n - 1]`.
#[derive(Debug, Clone)]
pub struct Case {
    pub tenant: String,
    pub id: String,
    pub events: Vec<DebtCaseEvent>,
}

impl Case {
    /// A case created in `REVIEWING` with one line item per amount.
    pub fn new(tenant: &str, id: &str, currency: &str, amounts: &[i64]) -> Self {
        let content = NewCase {
            external_id: format!("ext-{id}"),
            reference: format!("REF-{id}"),
            collector_configuration_id: None,
            environment: Environment::Test,
            currency: currency.into(),
            line_items: line_items(amounts),
            due_date: NaiveDate::from_ymd_opt(2025, 1, 15).unwrap(),
            contract_date: NaiveDate::from_ymd_opt(2024, 6, 1),
            language: "de-CH".into(),
            billing_address: BillingAddress {
                given_name: "Erika".into(),
                family_name: "Muster".into(),
                street: "Bahnhofstrasse 1".into(),
                postcode: "8001".into(),
                city: "Zürich".into(),
                country: "CH".into(),
                email_address: "erika@example.org".into(),
                ..BillingAddress::default()
            },
            labels: vec!["b2c".into()],
        };
        Self {
            tenant: tenant.into(),
            id: id.into(),
            events: vec![DebtCaseEvent::Created {
                case_id: id.into(),
                tenant: tenant.into(),
                content,
                collector_configuration_id: "default".into(),
                state: CaseState::Reviewing,
                creator: actor(1),
                at: at(0),
            }],
        }
    }

    fn next_at(&self) -> DateTime<Utc> {
        at(self.events.len() as i64)
    }

    pub fn push(mut self, event: DebtCaseEvent) -> Self {
        self.events.push(event);
        self
    }

    pub fn update(self, changes: CaseChanges) -> Self {
        let at = self.next_at();
        self.push(DebtCaseEvent::Updated { changes, at })
    }

    pub fn review(self) -> Self {
        let at = self.next_at();
        let reviewer = actor(self.version() + 1);
        self.push(DebtCaseEvent::Reviewed { reviewer, at })
    }

    pub fn prepare(self) -> Self {
        let at = self.next_at();
        self.push(DebtCaseEvent::Prepared { at })
    }

    pub fn start(self) -> Self {
        let at = self.next_at();
        self.push(DebtCaseEvent::ProcessingStarted {
            at,
            timeout_on: at + Duration::days(30),
        })
    }

    pub fn receipt(self, external_id: &str, amount_minor: i64) -> Self {
        let recorded_on = self.next_at();
        self.push(DebtCaseEvent::PaymentReceiptAdded {
            receipt: PaymentReceipt {
                external_id: external_id.into(),
                amount_minor,
                recorded_on,
            },
        })
    }

    pub fn close(self) -> Self {
        let at = self.next_at();
        self.push(DebtCaseEvent::Closed { at })
    }

    pub fn fail(self, reason: &str) -> Self {
        let at = self.next_at();
        self.push(DebtCaseEvent::Failed {
            reason: reason.into(),
            at,
        })
    }

    pub fn delete(self) -> Self {
        let at = self.next_at();
        self.push(DebtCaseEvent::Deleted { at })
    }

    /// The last version of the stream.
    pub fn version(&self) -> u64 {
        self.events.len() as u64
    }

    /// The encoded envelope of version `version`.
    pub fn envelope(&self, version: u64) -> Vec<u8> {
        let event = &self.events[version as usize - 1];
        self.envelope_of(version, event, "debt_case")
    }

    /// An encoded envelope of `event` as version `version` of aggregate type `aggregate_type`.
    pub fn envelope_of(
        &self,
        version: u64,
        event: &DebtCaseEvent,
        aggregate_type: &str,
    ) -> Vec<u8> {
        let metadata = EventMetadata {
            correlation_id: correlation(version),
            causation_id: "cause".into(),
            actor: actor(version),
        };
        NewEnvelope {
            tenant: &self.tenant,
            aggregate_type,
            aggregate_id: &self.id,
            aggregate_version: version,
            occurred_at: event.at(),
            recorded_at: event.at() + Duration::milliseconds(3),
            event_type: recoup_proto::convert::event_type(event),
            schema_version: 1,
            payload: event_to_payload(event),
            metadata: &metadata,
        }
        .build()
        .encode_to_vec()
    }

    /// Encoded envelopes of versions `from..=to`.
    pub fn envelopes(&self, from: u64, to: u64) -> Vec<Vec<u8>> {
        (from..=to).map(|v| self.envelope(v)).collect()
    }

    /// Encoded envelopes of the whole stream.
    pub fn all(&self) -> Vec<Vec<u8>> {
        self.envelopes(1, self.version())
    }

    /// The case after versions `1..=version`, as the aggregate builds it.
    pub fn replay_to(&self, version: u64) -> DebtCase {
        DebtCase::replay(&self.events[..version as usize]).unwrap()
    }

    /// The case after the whole stream.
    pub fn replay(&self) -> DebtCase {
        self.replay_to(self.version())
    }
}

/// The actor of version `version` of every test stream (each version has another one).
pub fn actor(version: u64) -> String {
    format!("key:actor-{version}")
}

/// The correlation id of version `version` of every test stream.
pub fn correlation(version: u64) -> String {
    format!("corr-{version}")
}

pub fn line_items(amounts: &[i64]) -> Vec<LineItem> {
    amounts
        .iter()
        .enumerate()
        .map(|(i, a)| LineItem {
            unique_id: format!("{}", i + 1),
            name: format!("item {}", i + 1),
            quantity: 1,
            amount_minor: *a,
        })
        .collect()
}

/// Opens the read model in `dir` again after it was dropped: sled's background threads let go of
/// the file lock a moment after the last handle, so a prompt reopen may find it still held.
pub fn reopen_read_model(dir: &std::path::Path) -> projection::CaseReadModel {
    let mut attempts = 0;
    loop {
        match projection::CaseReadModel::open(dir) {
            Ok(read_model) => return read_model,
            Err(error) if attempts < 500 && error.to_string().contains("acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("reopening the read model: {error}"),
        }
    }
}

/// Hands out consecutive offsets per partition, as a topic would.
#[derive(Debug, Default)]
pub struct Feed {
    next: HashMap<i32, i64>,
}

impl Feed {
    pub fn new() -> Self {
        Self::default()
    }

    /// One message on `partition` at its next offset.
    pub fn on(&mut self, partition: i32, value: Vec<u8>) -> ReceivedEvent {
        let offset = self.next.entry(partition).or_insert(0);
        let message = ReceivedEvent {
            partition,
            offset: *offset,
            key: Vec::new(),
            value,
        };
        *offset += 1;
        message
    }

    /// Messages on partition 0.
    pub fn batch(&mut self, values: impl IntoIterator<Item = Vec<u8>>) -> Vec<ReceivedEvent> {
        values.into_iter().map(|v| self.on(0, v)).collect()
    }
}
