//! The billing domain: plans, money, trials, roles, seats, subscription
//! state, the entitlement decision, and the plans of every billing change
//! (checkout, seats, cycle, cancellation, upkeep) as Stripe requests.
//!
//! Everything here is pure: no database, transport or Stripe types, and time
//! is always passed in. The adapters around it parse their inputs into these
//! types and persist what the decisions say.

pub mod add_ons;
pub mod adoption;
pub mod cancellation;
pub mod catalog;
pub mod checkout;
pub mod credit_holds;
pub mod credits;
pub mod cycle_change;
pub mod entitlement;
pub mod ids;
pub mod instances;
pub mod ledger_book;
pub mod line_items;
pub mod membership;
pub mod metadata;
pub mod money;
pub mod operation;
pub mod organization;
pub mod pricing;
pub mod purchase_check;
pub mod retry;
pub mod role;
pub mod seat_change;
pub mod seats;
pub mod stripe_catch_up;
pub mod stripe_reconciliation;
pub mod subscription;
pub mod subscription_sync;
#[cfg(test)]
mod test_fixtures;
pub mod trial;
pub mod upkeep;
pub mod usage;

/// A value that failed validation, with a reason fit to show the caller.
/// The adapter that parsed it adds the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl InvalidValue {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}
