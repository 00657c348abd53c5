//! Debt cases between the wire (`recoup.v1`) and the domain (`debt_cases`).
//!
//! Wire → domain conversions check shape (dates, enums) and answer `DomainError::InvalidArgument`
//! naming the field; the domain's rules are checked by the aggregate itself.

use chrono::{DateTime, NaiveDate, Utc};
use debt_cases::{
    BillingAddress, CaseChanges, CaseState, DebtCase, DebtCaseEvent, DomainError, Environment,
    LineItem, NewCase, PaymentReceipt,
};
use prost::Message;

use crate::contract::event_type as types;
use crate::time::{from_timestamp, to_timestamp};
use crate::v1;

/// The domain state as the wire enum.
pub fn state_to_proto(state: CaseState) -> v1::CaseState {
    match state {
        CaseState::Create => v1::CaseState::Create,
        CaseState::Reviewing => v1::CaseState::Reviewing,
        CaseState::Preparing => v1::CaseState::Preparing,
        CaseState::Pending => v1::CaseState::Pending,
        CaseState::Processing => v1::CaseState::Processing,
        CaseState::Closed => v1::CaseState::Closed,
        CaseState::Failed => v1::CaseState::Failed,
    }
}

/// The wire enum as a domain state; `None` for `CASE_STATE_UNSPECIFIED` or an unknown number.
pub fn state_from_proto(state: i32) -> Option<CaseState> {
    match v1::CaseState::try_from(state).ok()? {
        v1::CaseState::Unspecified => None,
        v1::CaseState::Create => Some(CaseState::Create),
        v1::CaseState::Reviewing => Some(CaseState::Reviewing),
        v1::CaseState::Preparing => Some(CaseState::Preparing),
        v1::CaseState::Pending => Some(CaseState::Pending),
        v1::CaseState::Processing => Some(CaseState::Processing),
        v1::CaseState::Closed => Some(CaseState::Closed),
        v1::CaseState::Failed => Some(CaseState::Failed),
    }
}

fn environment_to_proto(environment: Environment) -> v1::Environment {
    match environment {
        Environment::Production => v1::Environment::Production,
        Environment::Test => v1::Environment::Test,
    }
}

fn environment_from_proto(value: i32) -> Result<Environment, DomainError> {
    match v1::Environment::try_from(value) {
        Ok(v1::Environment::Production) => Ok(Environment::Production),
        Ok(v1::Environment::Test) => Ok(Environment::Test),
        _ => Err(DomainError::invalid(
            "environment",
            "is required: ENVIRONMENT_PRODUCTION or ENVIRONMENT_TEST",
        )),
    }
}

fn date_to_proto(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn date_from_proto(field: &str, value: &str) -> Result<NaiveDate, DomainError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        DomainError::invalid(field, format!("must be a date YYYY-MM-DD, got {value:?}"))
    })
}

/// The years a date in a command may name.
pub const REQUEST_YEARS: std::ops::RangeInclusive<i32> = 1900..=2199;

/// A date a client sends must be exactly `YYYY-MM-DD`, zero-padded, in [`REQUEST_YEARS`]:
/// `2026-1-1` or `0000-01-01` is refused rather than read as some day. (Events already recorded
/// are read as they were.)
pub fn strict_request_date(field: &str, value: &str) -> Result<(), DomainError> {
    let well_formed = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok();
    match date {
        Some(d) if well_formed && REQUEST_YEARS.contains(&chrono::Datelike::year(&d)) => Ok(()),
        _ => Err(DomainError::invalid(
            field,
            format!(
                "must be a date YYYY-MM-DD between {}-01-01 and {}-12-31, got {value:?}",
                REQUEST_YEARS.start(),
                REQUEST_YEARS.end()
            ),
        )),
    }
}

/// The dates of a `CreateCase` request, checked with [`strict_request_date`].
pub fn check_content_dates(c: &v1::CaseContent) -> Result<(), DomainError> {
    strict_request_date("due_date", &c.due_date)?;
    if !c.contract_date.is_empty() {
        strict_request_date("contract_date", &c.contract_date)?;
    }
    Ok(())
}

/// The dates of an `UpdateCase` request, checked with [`strict_request_date`].
pub fn check_changes_dates(c: &v1::CaseChanges) -> Result<(), DomainError> {
    if let Some(d) = &c.due_date {
        strict_request_date("changes.due_date", d)?;
    }
    if let Some(d) = &c.contract_date {
        strict_request_date("changes.contract_date", d)?;
    }
    Ok(())
}

fn optional_date_from_proto(field: &str, value: &str) -> Result<Option<NaiveDate>, DomainError> {
    if value.is_empty() {
        Ok(None)
    } else {
        date_from_proto(field, value).map(Some)
    }
}

fn line_item_to_proto(item: &LineItem) -> v1::LineItem {
    v1::LineItem {
        unique_id: item.unique_id.clone(),
        name: item.name.clone(),
        quantity: item.quantity,
        amount_minor: item.amount_minor,
    }
}

fn line_item_from_proto(item: v1::LineItem) -> LineItem {
    LineItem {
        unique_id: item.unique_id,
        name: item.name,
        quantity: item.quantity,
        amount_minor: item.amount_minor,
    }
}

fn address_to_proto(a: &BillingAddress) -> v1::BillingAddress {
    v1::BillingAddress {
        given_name: a.given_name.clone(),
        family_name: a.family_name.clone(),
        organization_name: a.organization_name.clone(),
        street: a.street.clone(),
        postcode: a.postcode.clone(),
        city: a.city.clone(),
        country: a.country.clone(),
        email_address: a.email_address.clone(),
    }
}

fn address_from_proto(a: v1::BillingAddress) -> BillingAddress {
    BillingAddress {
        given_name: a.given_name,
        family_name: a.family_name,
        organization_name: a.organization_name,
        street: a.street,
        postcode: a.postcode,
        city: a.city,
        country: a.country,
        email_address: a.email_address,
    }
}

/// A case as the API answers it.
pub fn case_to_proto(c: &DebtCase) -> v1::DebtCase {
    let ts = |t: Option<DateTime<Utc>>| t.map(to_timestamp);
    v1::DebtCase {
        id: c.id.clone(),
        tenant: c.tenant.clone(),
        external_id: c.external_id.clone(),
        reference: c.reference.clone(),
        collector_configuration_id: c.collector_configuration_id.clone(),
        environment: environment_to_proto(c.environment) as i32,
        currency: c.currency.clone(),
        line_items: c.line_items.iter().map(line_item_to_proto).collect(),
        amount_minor: c.amount_minor,
        collected_minor: c.collected_minor,
        due_date: date_to_proto(c.due_date),
        contract_date: c.contract_date.map(date_to_proto).unwrap_or_default(),
        language: c.language.clone(),
        billing_address: Some(address_to_proto(&c.billing_address)),
        labels: c.labels.clone(),
        receipts: c
            .receipts
            .iter()
            .map(|r| v1::PaymentReceipt {
                external_id: r.external_id.clone(),
                amount_minor: r.amount_minor,
                recorded_on: Some(to_timestamp(r.recorded_on)),
            })
            .collect(),
        state: state_to_proto(c.state) as i32,
        version: c.version,
        created_on: Some(to_timestamp(c.created_on)),
        updated_on: Some(to_timestamp(c.updated_on)),
        review_started_on: ts(c.review_started_on),
        reviewed_on: ts(c.reviewed_on),
        prepared_on: ts(c.prepared_on),
        processing_started_on: ts(c.processing_started_on),
        processing_timeout_on: ts(c.processing_timeout_on),
        closed_on: ts(c.closed_on),
        failed_on: ts(c.failed_on),
        failure_reason: c.failure_reason.clone().unwrap_or_default(),
        deleted_on: ts(c.deleted_on),
        creator: c.creator.clone(),
        reviewer: c.reviewer.clone().unwrap_or_default(),
    }
}

/// The content of a `CreateCase` request as the wire carries it.
pub fn content_to_proto(n: &NewCase) -> v1::CaseContent {
    v1::CaseContent {
        external_id: n.external_id.clone(),
        reference: n.reference.clone(),
        collector_configuration_id: n.collector_configuration_id.clone().unwrap_or_default(),
        environment: environment_to_proto(n.environment) as i32,
        currency: n.currency.clone(),
        line_items: n.line_items.iter().map(line_item_to_proto).collect(),
        due_date: date_to_proto(n.due_date),
        contract_date: n.contract_date.map(date_to_proto).unwrap_or_default(),
        language: n.language.clone(),
        billing_address: Some(address_to_proto(&n.billing_address)),
        labels: n.labels.clone(),
    }
}

/// The content of a `CreateCase` request; checks dates and enums.
pub fn content_from_proto(c: v1::CaseContent) -> Result<NewCase, DomainError> {
    Ok(NewCase {
        environment: environment_from_proto(c.environment)?,
        due_date: date_from_proto("due_date", &c.due_date)?,
        contract_date: optional_date_from_proto("contract_date", &c.contract_date)?,
        external_id: c.external_id,
        reference: c.reference,
        collector_configuration_id: Some(c.collector_configuration_id).filter(|s| !s.is_empty()),
        currency: c.currency,
        line_items: c.line_items.into_iter().map(line_item_from_proto).collect(),
        language: c.language,
        billing_address: c
            .billing_address
            .map(address_from_proto)
            .unwrap_or_default(),
        labels: c.labels,
    })
}

/// An update as the wire carries it.
pub fn changes_to_proto(c: &CaseChanges) -> v1::CaseChanges {
    v1::CaseChanges {
        reference: c.reference.clone(),
        line_items: c.line_items.as_ref().map(|items| v1::LineItems {
            items: items.iter().map(line_item_to_proto).collect(),
        }),
        due_date: c.due_date.map(date_to_proto),
        contract_date: c.contract_date.map(date_to_proto),
        language: c.language.clone(),
        billing_address: c.billing_address.as_ref().map(address_to_proto),
        labels: c.labels.as_ref().map(|labels| v1::Labels {
            labels: labels.clone(),
        }),
    }
}

/// An update from the wire; checks dates.
pub fn changes_from_proto(c: v1::CaseChanges) -> Result<CaseChanges, DomainError> {
    Ok(CaseChanges {
        due_date: c
            .due_date
            .as_deref()
            .map(|d| date_from_proto("changes.due_date", d))
            .transpose()?,
        contract_date: c
            .contract_date
            .as_deref()
            .map(|d| date_from_proto("changes.contract_date", d))
            .transpose()?,
        reference: c.reference,
        line_items: c
            .line_items
            .map(|l| l.items.into_iter().map(line_item_from_proto).collect()),
        language: c.language,
        billing_address: c.billing_address.map(address_from_proto),
        labels: c.labels.map(|l| l.labels),
    })
}

/// The event type of a domain event: its payload's message name, carried in the envelope and
/// the Kafka headers.
pub fn event_type(event: &DebtCaseEvent) -> &'static str {
    match event {
        DebtCaseEvent::Created { .. } => types::DEBT_CASE_CREATED,
        DebtCaseEvent::Updated { .. } => types::DEBT_CASE_UPDATED,
        DebtCaseEvent::Reviewed { .. } => types::DEBT_CASE_REVIEWED,
        DebtCaseEvent::Prepared { .. } => types::DEBT_CASE_PREPARED,
        DebtCaseEvent::ProcessingStarted { .. } => types::DEBT_CASE_PROCESSING_STARTED,
        DebtCaseEvent::PaymentReceiptAdded { .. } => types::DEBT_CASE_PAYMENT_RECEIPT_ADDED,
        DebtCaseEvent::Closed { .. } => types::DEBT_CASE_CLOSED,
        DebtCaseEvent::Failed { .. } => types::DEBT_CASE_FAILED,
        DebtCaseEvent::Deleted { .. } => types::DEBT_CASE_DELETED,
    }
}

/// The protobuf payload of a domain event; its message name is [`event_type`].
/// The event's time travels as the envelope's `occurred_at`.
pub fn event_to_payload(event: &DebtCaseEvent) -> Vec<u8> {
    match event {
        DebtCaseEvent::Created {
            content,
            collector_configuration_id,
            state,
            creator,
            ..
        } => v1::DebtCaseCreated {
            content: Some(content_to_proto(content)),
            collector_configuration_id: collector_configuration_id.clone(),
            state: state_to_proto(*state) as i32,
            creator: creator.clone(),
        }
        .encode_to_vec(),
        DebtCaseEvent::Updated { changes, .. } => v1::DebtCaseUpdated {
            changes: Some(changes_to_proto(changes)),
        }
        .encode_to_vec(),
        DebtCaseEvent::Reviewed { reviewer, .. } => v1::DebtCaseReviewed {
            reviewer: reviewer.clone(),
        }
        .encode_to_vec(),
        DebtCaseEvent::Prepared { .. } => v1::DebtCasePrepared {}.encode_to_vec(),
        DebtCaseEvent::ProcessingStarted { timeout_on, .. } => v1::DebtCaseProcessingStarted {
            timeout_on: Some(to_timestamp(*timeout_on)),
        }
        .encode_to_vec(),
        DebtCaseEvent::PaymentReceiptAdded { receipt } => v1::DebtCasePaymentReceiptAdded {
            external_id: receipt.external_id.clone(),
            amount_minor: receipt.amount_minor,
        }
        .encode_to_vec(),
        DebtCaseEvent::Closed { .. } => v1::DebtCaseClosed {}.encode_to_vec(),
        DebtCaseEvent::Failed { reason, .. } => v1::DebtCaseFailed {
            reason: reason.clone(),
        }
        .encode_to_vec(),
        DebtCaseEvent::Deleted { .. } => v1::DebtCaseDeleted {}.encode_to_vec(),
    }
}

/// A payload that cannot be turned back into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("unknown debt-case event type {0:?}")]
    UnknownType(String),
    #[error("payload of {event_type} does not decode: {source}")]
    Decode {
        event_type: String,
        source: prost::DecodeError,
    },
    #[error("payload of {event_type} is invalid: {reason}")]
    Invalid { event_type: String, reason: String },
}

fn decode<M: Message + Default>(event_type: &str, payload: &[u8]) -> Result<M, PayloadError> {
    M::decode(payload).map_err(|source| PayloadError::Decode {
        event_type: event_type.to_owned(),
        source,
    })
}

/// Rebuilds a domain event from an envelope's parts.
pub fn event_from_payload(
    event_type: &str,
    payload: &[u8],
    case_id: &str,
    tenant: &str,
    occurred_at: DateTime<Utc>,
) -> Result<DebtCaseEvent, PayloadError> {
    let invalid = |reason: String| PayloadError::Invalid {
        event_type: event_type.to_owned(),
        reason,
    };
    let at = occurred_at;
    Ok(match event_type {
        types::DEBT_CASE_CREATED => {
            let m: v1::DebtCaseCreated = decode(event_type, payload)?;
            let content = content_from_proto(m.content.unwrap_or_default())
                .map_err(|e| invalid(e.to_string()))?;
            DebtCaseEvent::Created {
                case_id: case_id.to_owned(),
                tenant: tenant.to_owned(),
                content,
                collector_configuration_id: m.collector_configuration_id,
                state: state_from_proto(m.state)
                    .ok_or_else(|| invalid(format!("state {} is not a case state", m.state)))?,
                creator: m.creator,
                at,
            }
        }
        types::DEBT_CASE_UPDATED => {
            let m: v1::DebtCaseUpdated = decode(event_type, payload)?;
            DebtCaseEvent::Updated {
                changes: changes_from_proto(m.changes.unwrap_or_default())
                    .map_err(|e| invalid(e.to_string()))?,
                at,
            }
        }
        types::DEBT_CASE_REVIEWED => {
            let m: v1::DebtCaseReviewed = decode(event_type, payload)?;
            DebtCaseEvent::Reviewed {
                reviewer: m.reviewer,
                at,
            }
        }
        types::DEBT_CASE_PREPARED => DebtCaseEvent::Prepared { at },
        types::DEBT_CASE_PROCESSING_STARTED => {
            let m: v1::DebtCaseProcessingStarted = decode(event_type, payload)?;
            DebtCaseEvent::ProcessingStarted {
                at,
                timeout_on: m
                    .timeout_on
                    .as_ref()
                    .and_then(from_timestamp)
                    .ok_or_else(|| invalid("timeout_on is missing".into()))?,
            }
        }
        types::DEBT_CASE_PAYMENT_RECEIPT_ADDED => {
            let m: v1::DebtCasePaymentReceiptAdded = decode(event_type, payload)?;
            DebtCaseEvent::PaymentReceiptAdded {
                receipt: PaymentReceipt {
                    external_id: m.external_id,
                    amount_minor: m.amount_minor,
                    recorded_on: at,
                },
            }
        }
        types::DEBT_CASE_CLOSED => DebtCaseEvent::Closed { at },
        types::DEBT_CASE_FAILED => {
            let m: v1::DebtCaseFailed = decode(event_type, payload)?;
            DebtCaseEvent::Failed {
                reason: m.reason,
                at,
            }
        }
        types::DEBT_CASE_DELETED => DebtCaseEvent::Deleted { at },
        other => return Err(PayloadError::UnknownType(other.to_owned())),
    })
}

/// A case as the API carries it back into the domain type (read models store this form).
pub fn case_from_proto(c: v1::DebtCase) -> Result<DebtCase, DomainError> {
    let ts = |t: Option<prost_types::Timestamp>| t.as_ref().and_then(from_timestamp);
    let required_ts = |field: &str, t: Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| DomainError::invalid(field, "is required"))
    };
    Ok(DebtCase {
        environment: environment_from_proto(c.environment)?,
        due_date: date_from_proto("due_date", &c.due_date)?,
        contract_date: optional_date_from_proto("contract_date", &c.contract_date)?,
        state: state_from_proto(c.state)
            .ok_or_else(|| DomainError::invalid("state", "is required"))?,
        created_on: required_ts("created_on", c.created_on)?,
        updated_on: required_ts("updated_on", c.updated_on)?,
        id: c.id,
        tenant: c.tenant,
        external_id: c.external_id,
        reference: c.reference,
        collector_configuration_id: c.collector_configuration_id,
        currency: c.currency,
        line_items: c.line_items.into_iter().map(line_item_from_proto).collect(),
        amount_minor: c.amount_minor,
        collected_minor: c.collected_minor,
        language: c.language,
        billing_address: c
            .billing_address
            .map(address_from_proto)
            .unwrap_or_default(),
        labels: c.labels,
        receipts: c
            .receipts
            .into_iter()
            .map(|r| {
                Ok(PaymentReceipt {
                    recorded_on: required_ts("receipts.recorded_on", r.recorded_on)?,
                    external_id: r.external_id,
                    amount_minor: r.amount_minor,
                })
            })
            .collect::<Result<_, DomainError>>()?,
        version: c.version,
        review_started_on: ts(c.review_started_on),
        // A reviewed case has a reviewer, empty when reviewed before recoup recorded it.
        reviewer: c.reviewed_on.is_some().then_some(c.reviewer),
        reviewed_on: ts(c.reviewed_on),
        prepared_on: ts(c.prepared_on),
        processing_started_on: ts(c.processing_started_on),
        processing_timeout_on: ts(c.processing_timeout_on),
        closed_on: ts(c.closed_on),
        failed_on: ts(c.failed_on),
        failure_reason: Some(c.failure_reason).filter(|r| !r.is_empty()),
        deleted_on: ts(c.deleted_on),
        creator: c.creator,
    })
}
