//! Why the aggregate refused a command: the client must change its request (never "retry later").

use crate::model::CaseState;

/// A domain rejection. Technical failures (disk, broker) are not represented here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The client decided on a stale copy of the case.
    #[error(
        "version conflict: the command expected version {expected}, the case is at version {actual}"
    )]
    VersionConflict { expected: u64, actual: u64 },
    /// A field breaks a rule; `field` names it as the API does.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The command is not allowed in the case's current state.
    #[error("{command} is not allowed in state {state}")]
    IllegalTransition {
        command: &'static str,
        state: CaseState,
    },
    /// The case is `CLOSED` or `FAILED`: nothing changes it any more.
    #[error("{command} is not allowed: the case is {state}, a terminal state")]
    Terminal {
        command: &'static str,
        state: CaseState,
    },
    /// Line items and amount are frozen once the case was reviewed.
    #[error("line items and amount cannot change after review (case is {state})")]
    AmountFrozen { state: CaseState },
    /// The receipt would take the collected amount above the case amount.
    #[error(
        "receipt of {receipt_minor} would raise the collected amount from {collected_minor} above the case amount {amount_minor} (minor units)"
    )]
    CollectedExceedsAmount {
        collected_minor: i64,
        receipt_minor: i64,
        amount_minor: i64,
    },
    /// The receipt's external id was already used with another amount.
    #[error(
        "payment receipt {external_id:?} was already recorded with amount {recorded_minor} (minor units)"
    )]
    ReceiptConflict {
        external_id: String,
        recorded_minor: i64,
    },
    /// The external id was already used to create a case with other content.
    #[error("external_id {external_id:?} was already used for case {case_id} with other content")]
    ExternalIdConflict {
        external_id: String,
        case_id: String,
    },
    /// Another case of the tenant already has this reference.
    #[error("reference {reference:?} is already used by case {case_id}")]
    ReferenceTaken { reference: String, case_id: String },
    /// No such case (or it was deleted).
    #[error("case not found")]
    NotFound,
}

impl DomainError {
    /// An `InvalidArgument` for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
