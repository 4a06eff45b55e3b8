//! The billing domain: plans, money, trials, roles, seats, subscription state
//! and the entitlement decision.
//!
//! Everything here is pure: no database, transport or Stripe types, and time
//! is always passed in. The adapters around it parse their inputs into these
//! types and persist what the decisions say.

pub mod add_ons;
pub mod catalog;
pub mod credits;
pub mod entitlement;
pub mod ids;
pub mod instances;
pub mod line_items;
pub mod membership;
pub mod money;
pub mod organization;
pub mod role;
pub mod seats;
pub mod subscription;
pub mod subscription_sync;
#[cfg(test)]
mod test_fixtures;
pub mod trial;

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
