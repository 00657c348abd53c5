//! The debt collection case aggregate (docs/domain.md §3) as pure functions: no I/O, no clock.
//!
//! `decide_create` / `decide` turn a command into events or a [`DomainError`];
//! [`DebtCase::apply`] folds an event into the state. Persistence, Kafka and gRPC live elsewhere.

pub mod collector;
pub mod currency;
mod decide;
pub mod error;
pub mod model;

pub use collector::{CollectorConfiguration, CollectorConfigurations, ConfigurationError};
pub use decide::{
    DecisionContext, MAX_LABELS, MAX_LINE_ITEMS, MAX_TEXT_LEN, commands_in, decide, decide_create,
    line_items_total, same_creation,
};
pub use error::DomainError;
pub use model::{
    BillingAddress, CaseChanges, CaseState, Command, DebtCase, DebtCaseEvent, Environment,
    LineItem, NewCase, PaymentReceipt,
};
