//! The aggregate's decisions: `(state, command, now) -> Result<Vec<Event>, DomainError>`,
//! and `apply`, which folds an event into the state and cannot fail.

use chrono::{DateTime, Utc};

use crate::collector::CollectorConfigurations;
use crate::currency::minor_unit_digits;
use crate::error::DomainError;
use crate::model::{
    BillingAddress, CaseChanges, CaseState, Command, DebtCase, DebtCaseEvent, LineItem, NewCase,
    PaymentReceipt,
};

/// Longest accepted text field, in bytes; keeps events and keys bounded.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most line items a case may have.
pub const MAX_LINE_ITEMS: usize = 1000;
/// Most labels a case may have.
pub const MAX_LABELS: usize = 100;

/// What a decision may consult besides the case itself. Pure data: no I/O, no clock.
#[derive(Debug, Clone, Copy)]
pub struct DecisionContext<'a> {
    pub now: DateTime<Utc>,
    pub collectors: &'a CollectorConfigurations,
    /// Who asks: recorded as the case's creator and reviewer.
    pub actor: &'a str,
}

/// Decides `Create`: the case does not exist yet, `case_id` and `tenant` are assigned by the caller.
pub fn decide_create(
    case_id: &str,
    tenant: &str,
    content: &NewCase,
    ctx: DecisionContext<'_>,
) -> Result<Vec<DebtCaseEvent>, DomainError> {
    require_text("external_id", &content.external_id)?;
    require_text("reference", &content.reference)?;
    bounded_text("language", &content.language)?;
    check_labels(&content.labels)?;
    check_address(&content.billing_address)?;
    check_currency(&content.currency)?;
    line_items_total(&content.line_items)?;
    check_due_date(content, ctx)?;
    let collector = match &content.collector_configuration_id {
        Some(id) if !id.is_empty() => ctx.collectors.get(id).ok_or_else(|| {
            DomainError::invalid(
                "collector_configuration_id",
                format!("no collector configuration {id:?} is configured"),
            )
        })?,
        _ => ctx.collectors.default_configuration(),
    };
    if !collector.supports(content.environment) {
        return Err(DomainError::invalid(
            "environment",
            format!(
                "collector configuration {:?} does not support environment {}",
                collector.id,
                content.environment.as_str()
            ),
        ));
    }
    let state = if collector.skip_review {
        CaseState::Preparing
    } else {
        CaseState::Reviewing
    };
    Ok(vec![DebtCaseEvent::Created {
        case_id: case_id.to_owned(),
        tenant: tenant.to_owned(),
        content: content.clone(),
        collector_configuration_id: collector.id.clone(),
        state,
        creator: ctx.actor.to_owned(),
        at: ctx.now,
    }])
}

/// True when a repeated `Create` with the same external id asks for the same case, so the
/// original case is the answer; otherwise the external id is being reused for other content.
/// Compares with the case as it is now: after an update the old request no longer describes it.
pub fn same_creation(existing: &DebtCase, content: &NewCase) -> bool {
    existing.external_id == content.external_id
        && existing.environment == content.environment
        && existing.currency == content.currency
        && existing.due_date == content.due_date
        && existing.contract_date == content.contract_date
        && existing.language == content.language
        && match &content.collector_configuration_id {
            Some(id) if !id.is_empty() => *id == existing.collector_configuration_id,
            _ => true,
        }
        && existing.labels == content.labels
        && existing.reference == content.reference
        && existing.line_items == content.line_items
        && existing.billing_address == content.billing_address
}

/// Decides every command on an existing case. `expected_version` is the version the client saw.
pub fn decide(
    case: &DebtCase,
    expected_version: u64,
    command: &Command,
    ctx: DecisionContext<'_>,
) -> Result<Vec<DebtCaseEvent>, DomainError> {
    if case.deleted_on.is_some() {
        return Err(DomainError::NotFound);
    }
    // A receipt already recorded is answered as success whatever version the retry names.
    if let Some(answer) = answer_recorded_receipt(case, command) {
        return answer;
    }
    if expected_version != case.version {
        return Err(DomainError::VersionConflict {
            expected: expected_version,
            actual: case.version,
        });
    }
    if case.state.is_terminal() {
        return Err(DomainError::Terminal {
            command: command.name(),
            state: case.state,
        });
    }
    Ok(vec![decide_transition(case, command, ctx)?])
}

/// The answer to a retried receipt already recorded (none or a conflict); `None` if not one.
fn answer_recorded_receipt(
    case: &DebtCase,
    command: &Command,
) -> Option<Result<Vec<DebtCaseEvent>, DomainError>> {
    let Command::AddPaymentReceipt {
        external_id,
        amount_minor,
    } = command
    else {
        return None;
    };
    let existing = case
        .receipts
        .iter()
        .find(|r| r.external_id == *external_id)?;
    Some(if existing.amount_minor == *amount_minor {
        Ok(Vec::new())
    } else {
        Err(DomainError::ReceiptConflict {
            external_id: external_id.clone(),
            recorded_minor: existing.amount_minor,
        })
    })
}

/// The commands a case in `state` takes besides `UpdateCase`, by their API names, in the order
/// a person would offer them: what a client may show as buttons. [`decide`] has the last word
/// (a receipt's amount, a failure's reason, the version).
pub fn commands_in(state: CaseState) -> &'static [&'static str] {
    match state {
        CaseState::Reviewing => &["MarkReviewed", "CloseCase", "DeleteCase"],
        CaseState::Preparing => &["MarkPrepared", "CloseCase", "FailCase"],
        CaseState::Pending => &["StartProcessing", "CloseCase", "FailCase"],
        CaseState::Processing => &["AddPaymentReceipt", "CloseCase", "FailCase"],
        CaseState::Create | CaseState::Closed | CaseState::Failed => &[],
    }
}

/// The event a command yields on a live, current case, or why its state or content forbids it.
fn decide_transition(
    case: &DebtCase,
    command: &Command,
    ctx: DecisionContext<'_>,
) -> Result<DebtCaseEvent, DomainError> {
    let now = ctx.now;
    let illegal = || DomainError::IllegalTransition {
        command: command.name(),
        state: case.state,
    };
    match command {
        Command::Create(_) => Err(illegal()),
        Command::Update(changes) => decide_update(case, changes, ctx),
        Command::MarkReviewed => match case.state {
            CaseState::Reviewing => Ok(DebtCaseEvent::Reviewed {
                reviewer: ctx.actor.to_owned(),
                at: now,
            }),
            _ => Err(illegal()),
        },
        Command::MarkPrepared => match case.state {
            CaseState::Preparing => Ok(DebtCaseEvent::Prepared { at: now }),
            _ => Err(illegal()),
        },
        Command::StartProcessing => match case.state {
            CaseState::Pending => Ok(start_processing(case, ctx)),
            _ => Err(illegal()),
        },
        Command::AddPaymentReceipt {
            external_id,
            amount_minor,
        } => match case.state {
            CaseState::Processing => add_payment_receipt(case, external_id, *amount_minor, now),
            _ => Err(illegal()),
        },
        Command::Close => match case.state {
            CaseState::Reviewing
            | CaseState::Preparing
            | CaseState::Pending
            | CaseState::Processing => Ok(DebtCaseEvent::Closed { at: now }),
            _ => Err(illegal()),
        },
        Command::Fail { reason } => match case.state {
            CaseState::Preparing | CaseState::Pending | CaseState::Processing => {
                require_text("reason", reason)?;
                Ok(DebtCaseEvent::Failed {
                    reason: reason.clone(),
                    at: now,
                })
            }
            _ => Err(illegal()),
        },
        Command::Delete => match case.state {
            CaseState::Reviewing => Ok(DebtCaseEvent::Deleted { at: now }),
            _ => Err(illegal()),
        },
    }
}

/// Starts processing now, with the case's collector's timeout (or the default's if it is gone).
fn start_processing(case: &DebtCase, ctx: DecisionContext<'_>) -> DebtCaseEvent {
    let timeout = ctx
        .collectors
        .get(&case.collector_configuration_id)
        .unwrap_or_else(|| ctx.collectors.default_configuration())
        .processing_timeout;
    DebtCaseEvent::ProcessingStarted {
        at: ctx.now,
        timeout_on: ctx.now + timeout,
    }
}

/// Records a new receipt: named, positive, and not taking collections past the case's amount.
fn add_payment_receipt(
    case: &DebtCase,
    external_id: &str,
    amount_minor: i64,
    now: DateTime<Utc>,
) -> Result<DebtCaseEvent, DomainError> {
    require_text("receipt.external_id", external_id)?;
    if amount_minor <= 0 {
        return Err(DomainError::invalid(
            "receipt.amount_minor",
            format!("must be positive, got {amount_minor}"),
        ));
    }
    match case.collected_minor.checked_add(amount_minor) {
        Some(c) if c <= case.amount_minor => {}
        _ => {
            return Err(DomainError::CollectedExceedsAmount {
                collected_minor: case.collected_minor,
                receipt_minor: amount_minor,
                amount_minor: case.amount_minor,
            });
        }
    }
    Ok(DebtCaseEvent::PaymentReceiptAdded {
        receipt: PaymentReceipt {
            external_id: external_id.to_owned(),
            amount_minor,
            recorded_on: now,
        },
    })
}

fn decide_update(
    case: &DebtCase,
    changes: &CaseChanges,
    ctx: DecisionContext<'_>,
) -> Result<DebtCaseEvent, DomainError> {
    if !matches!(
        case.state,
        CaseState::Reviewing | CaseState::Preparing | CaseState::Pending | CaseState::Processing
    ) {
        return Err(DomainError::IllegalTransition {
            command: "UpdateCase",
            state: case.state,
        });
    }
    if changes.is_empty() {
        return Err(DomainError::invalid("changes", "names no field to change"));
    }
    if let Some(reference) = &changes.reference {
        require_text("reference", reference)?;
    }
    if let Some(language) = &changes.language {
        bounded_text("language", language)?;
    }
    if let Some(labels) = &changes.labels {
        check_labels(labels)?;
    }
    if let Some(address) = &changes.billing_address {
        check_address(address)?;
    }
    if let Some(items) = &changes.line_items {
        if case.state != CaseState::Reviewing {
            return Err(DomainError::AmountFrozen { state: case.state });
        }
        line_items_total(items)?;
    }
    if let Some(due_date) = changes.due_date
        && due_date >= ctx.now.date_naive()
    {
        return Err(DomainError::invalid(
            "due_date",
            format!("must be in the past, got {due_date}"),
        ));
    }
    Ok(DebtCaseEvent::Updated {
        changes: changes.clone(),
        at: ctx.now,
    })
}

/// Sum of the line items in minor units; checks every item and that the sum is positive.
pub fn line_items_total(items: &[LineItem]) -> Result<i64, DomainError> {
    if items.is_empty() {
        return Err(DomainError::invalid(
            "line_items",
            "at least one line item is required",
        ));
    }
    if items.len() > MAX_LINE_ITEMS {
        return Err(DomainError::invalid(
            "line_items",
            format!("at most {MAX_LINE_ITEMS} line items, got {}", items.len()),
        ));
    }
    let mut total: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        require_text(&format!("line_items[{i}].unique_id"), &item.unique_id)?;
        bounded_text(&format!("line_items[{i}].name"), &item.name)?;
        if items[..i].iter().any(|o| o.unique_id == item.unique_id) {
            return Err(DomainError::invalid(
                format!("line_items[{i}].unique_id"),
                format!("{:?} appears twice", item.unique_id),
            ));
        }
        if item.quantity == 0 {
            return Err(DomainError::invalid(
                format!("line_items[{i}].quantity"),
                "must be at least 1",
            ));
        }
        if item.amount_minor <= 0 {
            return Err(DomainError::invalid(
                format!("line_items[{i}].amount_minor"),
                format!("must be positive, got {}", item.amount_minor),
            ));
        }
        total = total.checked_add(item.amount_minor).ok_or_else(|| {
            DomainError::invalid("line_items", "the sum of the amounts overflows")
        })?;
    }
    Ok(total)
}

/// The total of recorded line items. Commands refuse a sum that overflows, so a recorded event
/// never has one; an event from elsewhere that does is held at the bound rather than wrapped.
fn line_total(items: &[LineItem]) -> i64 {
    items
        .iter()
        .fold(0i64, |total, item| total.saturating_add(item.amount_minor))
}

fn check_labels(labels: &[String]) -> Result<(), DomainError> {
    if labels.len() > MAX_LABELS {
        return Err(DomainError::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels, got {}", labels.len()),
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        require_text(&format!("labels[{i}]"), label)?;
    }
    Ok(())
}

fn check_address(a: &BillingAddress) -> Result<(), DomainError> {
    for (field, value) in [
        ("billing_address.given_name", &a.given_name),
        ("billing_address.family_name", &a.family_name),
        ("billing_address.organization_name", &a.organization_name),
        ("billing_address.street", &a.street),
        ("billing_address.postcode", &a.postcode),
        ("billing_address.city", &a.city),
        ("billing_address.country", &a.country),
        ("billing_address.email_address", &a.email_address),
    ] {
        bounded_text(field, value)?;
    }
    Ok(())
}

fn check_currency(code: &str) -> Result<(), DomainError> {
    match minor_unit_digits(code) {
        Some(_) => Ok(()),
        None => Err(DomainError::invalid(
            "currency",
            format!("{code:?} is not an ISO 4217 currency code"),
        )),
    }
}

fn check_due_date(content: &NewCase, ctx: DecisionContext<'_>) -> Result<(), DomainError> {
    if content.due_date >= ctx.now.date_naive() {
        return Err(DomainError::invalid(
            "due_date",
            format!("must be in the past, got {}", content.due_date),
        ));
    }
    Ok(())
}

fn require_text(field: &str, value: &str) -> Result<(), DomainError> {
    if value.trim().is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    bounded_text(field, value)
}

fn bounded_text(field: &str, value: &str) -> Result<(), DomainError> {
    if value.len() > MAX_TEXT_LEN {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_TEXT_LEN} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

impl DebtCase {
    /// The case a `Created` event brings into being; `None` for any other event.
    pub fn from_created(event: &DebtCaseEvent) -> Option<DebtCase> {
        let DebtCaseEvent::Created {
            case_id,
            tenant,
            content,
            collector_configuration_id,
            state,
            creator,
            at,
        } = event
        else {
            return None;
        };
        let amount_minor = line_total(&content.line_items);
        Some(DebtCase {
            id: case_id.clone(),
            tenant: tenant.clone(),
            external_id: content.external_id.clone(),
            reference: content.reference.clone(),
            collector_configuration_id: collector_configuration_id.clone(),
            environment: content.environment,
            currency: content.currency.clone(),
            line_items: content.line_items.clone(),
            amount_minor,
            collected_minor: 0,
            due_date: content.due_date,
            contract_date: content.contract_date,
            language: content.language.clone(),
            billing_address: content.billing_address.clone(),
            labels: content.labels.clone(),
            receipts: Vec::new(),
            state: *state,
            version: 1,
            created_on: *at,
            updated_on: *at,
            review_started_on: (*state == CaseState::Reviewing).then_some(*at),
            reviewed_on: None,
            prepared_on: None,
            processing_started_on: None,
            processing_timeout_on: None,
            closed_on: None,
            failed_on: None,
            failure_reason: None,
            deleted_on: None,
            creator: creator.clone(),
            reviewer: None,
        })
    }

    /// Folds one event into the case and bumps the version. Cannot fail: events are facts.
    pub fn apply(&mut self, event: &DebtCaseEvent) {
        match event {
            DebtCaseEvent::Created { .. } => return,
            DebtCaseEvent::Updated { changes, .. } => {
                if let Some(v) = &changes.reference {
                    self.reference = v.clone();
                }
                if let Some(items) = &changes.line_items {
                    self.amount_minor = line_total(items);
                    self.line_items = items.clone();
                }
                if let Some(v) = changes.due_date {
                    self.due_date = v;
                }
                if let Some(v) = changes.contract_date {
                    self.contract_date = Some(v);
                }
                if let Some(v) = &changes.language {
                    self.language = v.clone();
                }
                if let Some(v) = &changes.billing_address {
                    self.billing_address = v.clone();
                }
                if let Some(v) = &changes.labels {
                    self.labels = v.clone();
                }
            }
            DebtCaseEvent::Reviewed { reviewer, at } => {
                self.state = CaseState::Preparing;
                self.reviewed_on = Some(*at);
                self.reviewer = Some(reviewer.clone());
            }
            DebtCaseEvent::Prepared { at } => {
                self.state = CaseState::Pending;
                self.prepared_on = Some(*at);
            }
            DebtCaseEvent::ProcessingStarted { at, timeout_on } => {
                self.state = CaseState::Processing;
                self.processing_started_on = Some(*at);
                self.processing_timeout_on = Some(*timeout_on);
            }
            DebtCaseEvent::PaymentReceiptAdded { receipt } => {
                self.collected_minor += receipt.amount_minor;
                self.receipts.push(receipt.clone());
            }
            DebtCaseEvent::Closed { at } => {
                self.state = CaseState::Closed;
                self.closed_on = Some(*at);
            }
            DebtCaseEvent::Failed { reason, at } => {
                self.state = CaseState::Failed;
                self.failed_on = Some(*at);
                self.failure_reason = Some(reason.clone());
            }
            DebtCaseEvent::Deleted { at } => {
                self.deleted_on = Some(*at);
            }
        }
        self.version += 1;
        self.updated_on = event.at();
    }

    /// Rebuilds a case from its whole stream; `None` when the stream does not start with `Created`.
    pub fn replay<'a>(events: impl IntoIterator<Item = &'a DebtCaseEvent>) -> Option<DebtCase> {
        let mut events = events.into_iter();
        let mut case = DebtCase::from_created(events.next()?)?;
        for event in events {
            case.apply(event);
        }
        Some(case)
    }
}
