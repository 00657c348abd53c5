//! The debt collection case: its state, commands and events.

use chrono::{DateTime, NaiveDate, Utc};

/// Where a case stands in its lifecycle (docs/domain.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaseState {
    /// Only while creation runs; never observed on a stored case.
    Create,
    Reviewing,
    Preparing,
    Pending,
    Processing,
    Closed,
    Failed,
}

impl CaseState {
    /// Every state, in lifecycle order.
    pub const ALL: [CaseState; 7] = [
        CaseState::Create,
        CaseState::Reviewing,
        CaseState::Preparing,
        CaseState::Pending,
        CaseState::Processing,
        CaseState::Closed,
        CaseState::Failed,
    ];

    /// `CLOSED` and `FAILED` are final: no command is accepted after them.
    pub fn is_terminal(self) -> bool {
        matches!(self, CaseState::Closed | CaseState::Failed)
    }

    /// The wire name (`REVIEWING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Create => "CREATE",
            CaseState::Reviewing => "REVIEWING",
            CaseState::Preparing => "PREPARING",
            CaseState::Pending => "PENDING",
            CaseState::Processing => "PROCESSING",
            CaseState::Closed => "CLOSED",
            CaseState::Failed => "FAILED",
        }
    }
}

impl std::fmt::Display for CaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The environment a case is processed in; a collector configuration must support it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    Production,
    Test,
}

impl Environment {
    /// The wire name (`PRODUCTION` | `TEST`).
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "PRODUCTION",
            Environment::Test => "TEST",
        }
    }
}

/// One line of the debt; the sum of all lines is the case amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    /// Unique within the case.
    pub unique_id: String,
    pub name: String,
    /// Number of units, at least 1.
    pub quantity: u32,
    /// Total of the line in minor units of the case currency (cents, fils), positive.
    pub amount_minor: i64,
}

/// Who owes the money. Personal data: never logged at info level.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BillingAddress {
    pub given_name: String,
    pub family_name: String,
    pub organization_name: String,
    pub street: String,
    pub postcode: String,
    pub city: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    pub email_address: String,
}

/// Money collected from the debtor, reported by the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentReceipt {
    /// The collector's id of the receipt; adding the same receipt twice changes nothing.
    pub external_id: String,
    /// Minor units of the case currency, positive.
    pub amount_minor: i64,
    pub recorded_on: DateTime<Utc>,
}

/// The content a case is created with; also the content the external-id idempotency check compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCase {
    /// Client-generated nonce: creating twice with the same id returns the first case.
    pub external_id: String,
    /// Used in communication with the debtor; unique per tenant.
    pub reference: String,
    /// `None` selects the default collector configuration.
    pub collector_configuration_id: Option<String>,
    pub environment: Environment,
    /// ISO 4217 code.
    pub currency: String,
    pub line_items: Vec<LineItem>,
    /// Must lie in the past.
    pub due_date: NaiveDate,
    pub contract_date: Option<NaiveDate>,
    /// BCP 47 language tag for communication with the debtor, e.g. `de-CH`.
    pub language: String,
    pub billing_address: BillingAddress,
    pub labels: Vec<String>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaseChanges {
    pub reference: Option<String>,
    /// Replaces all line items (and so the amount); only before review.
    pub line_items: Option<Vec<LineItem>>,
    pub due_date: Option<NaiveDate>,
    pub contract_date: Option<NaiveDate>,
    pub language: Option<String>,
    pub billing_address: Option<BillingAddress>,
    pub labels: Option<Vec<String>>,
}

impl CaseChanges {
    /// True when the update would change nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == CaseChanges::default()
    }
}

/// A debt collection case as its events have built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebtCase {
    pub id: String,
    pub tenant: String,
    pub external_id: String,
    pub reference: String,
    pub collector_configuration_id: String,
    pub environment: Environment,
    pub currency: String,
    pub line_items: Vec<LineItem>,
    /// Sum of the line items, minor units.
    pub amount_minor: i64,
    /// Sum of the payment receipts, minor units; never above `amount_minor`.
    pub collected_minor: i64,
    pub due_date: NaiveDate,
    pub contract_date: Option<NaiveDate>,
    pub language: String,
    pub billing_address: BillingAddress,
    pub labels: Vec<String>,
    pub receipts: Vec<PaymentReceipt>,
    pub state: CaseState,
    /// 1 after creation, +1 per accepted command.
    pub version: u64,
    pub created_on: DateTime<Utc>,
    pub updated_on: DateTime<Utc>,
    pub review_started_on: Option<DateTime<Utc>>,
    pub reviewed_on: Option<DateTime<Utc>>,
    pub prepared_on: Option<DateTime<Utc>>,
    pub processing_started_on: Option<DateTime<Utc>>,
    pub processing_timeout_on: Option<DateTime<Utc>>,
    pub closed_on: Option<DateTime<Utc>>,
    pub failed_on: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    /// Set by `Delete`: the case is gone from every read model.
    pub deleted_on: Option<DateTime<Utc>>,
    /// The actor of `Create` (empty for a case created before recoup recorded it).
    pub creator: String,
    /// The actor of `MarkReviewed`; `None` until the case is reviewed.
    pub reviewer: Option<String>,
}

/// What a client asks of a case. Every command but `Create` names the version it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create(NewCase),
    Update(CaseChanges),
    MarkReviewed,
    MarkPrepared,
    StartProcessing,
    AddPaymentReceipt {
        external_id: String,
        amount_minor: i64,
    },
    Close,
    Fail {
        reason: String,
    },
    Delete,
}

impl Command {
    /// The command's name as the API calls it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "CreateCase",
            Command::Update(_) => "UpdateCase",
            Command::MarkReviewed => "MarkReviewed",
            Command::MarkPrepared => "MarkPrepared",
            Command::StartProcessing => "StartProcessing",
            Command::AddPaymentReceipt { .. } => "AddPaymentReceipt",
            Command::Close => "CloseCase",
            Command::Fail { .. } => "FailCase",
            Command::Delete => "DeleteCase",
        }
    }
}

/// What happened to a case. Each accepted command produces exactly one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebtCaseEvent {
    Created {
        case_id: String,
        tenant: String,
        content: NewCase,
        /// The collector configuration actually chosen (the default when the command named none).
        collector_configuration_id: String,
        /// `REVIEWING`, or `PREPARING` when the configuration skips review.
        state: CaseState,
        /// Who created the case.
        creator: String,
        at: DateTime<Utc>,
    },
    Updated {
        changes: CaseChanges,
        at: DateTime<Utc>,
    },
    Reviewed {
        /// Who marked the case reviewed.
        reviewer: String,
        at: DateTime<Utc>,
    },
    Prepared {
        at: DateTime<Utc>,
    },
    ProcessingStarted {
        at: DateTime<Utc>,
        timeout_on: DateTime<Utc>,
    },
    PaymentReceiptAdded {
        receipt: PaymentReceipt,
    },
    Closed {
        at: DateTime<Utc>,
    },
    Failed {
        reason: String,
        at: DateTime<Utc>,
    },
    Deleted {
        at: DateTime<Utc>,
    },
}

impl DebtCaseEvent {
    /// When the event happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            DebtCaseEvent::Created { at, .. }
            | DebtCaseEvent::Updated { at, .. }
            | DebtCaseEvent::Reviewed { at, .. }
            | DebtCaseEvent::Prepared { at }
            | DebtCaseEvent::ProcessingStarted { at, .. }
            | DebtCaseEvent::Closed { at }
            | DebtCaseEvent::Failed { at, .. }
            | DebtCaseEvent::Deleted { at } => *at,
            DebtCaseEvent::PaymentReceiptAdded { receipt } => receipt.recorded_on,
        }
    }
}
