//! Billing operations and the Stripe requests they plan, as data.
//!
//! Every change that touches Stripe is an operation: recorded before
//! anything is sent, planned by a pure function from the live state, then
//! performed step by step. A plan is a list of [`Step`]s, each one Stripe
//! request with every parameter decided (quantities, proration, schedule
//! phases). Step `i` of operation `o` is sent with the idempotency key
//! `o:i`, so an operation resumed after a crash sends the same requests
//! under the same keys and Stripe replays what it already did.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::add_ons::Proration;
use super::reason::{ErrorReason, Refused};
use super::subscription_sync::ProviderSubscription;
use super::{InvalidValue, quoted};

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Checkout,
    SeatChange,
    CycleChange,
    CancelCycleChange,
    Cancellation,
    CreditPurchase,
    PortalSession,
    /// Bringing the organization's Stripe subscription in line with our
    /// rules after a sync: per-unit items, schedule phases, duplicates.
    Upkeep,
}

impl OperationKind {
    pub const ALL: [Self; 8] = [
        Self::Checkout,
        Self::SeatChange,
        Self::CycleChange,
        Self::CancelCycleChange,
        Self::Cancellation,
        Self::CreditPurchase,
        Self::PortalSession,
        Self::Upkeep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::SeatChange => "seat_change",
            Self::CycleChange => "cycle_change",
            Self::CancelCycleChange => "cancel_cycle_change",
            Self::Cancellation => "cancellation",
            Self::CreditPurchase => "credit_purchase",
            Self::PortalSession => "portal_session",
            Self::Upkeep => "upkeep",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == raw)
            .ok_or_else(|| InvalidValue::new(format!("{} is not an operation kind", quoted(raw))))
    }

    /// Whether operations of this kind change the organization's
    /// subscription, and so run one at a time per organization. A credit
    /// purchase or a portal session touches no subscription and runs beside
    /// them.
    pub fn serialized(self) -> bool {
        match self {
            Self::Checkout
            | Self::SeatChange
            | Self::CycleChange
            | Self::CancelCycleChange
            | Self::Cancellation
            | Self::Upkeep => true,
            Self::CreditPurchase | Self::PortalSession => false,
        }
    }
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationStatus {
    /// Waiting for the organization's other billing change to finish.
    Queued,
    /// Claimed: being planned or performed (or waiting to be resumed).
    Running,
    Succeeded,
    /// Stripe refused a step, a payment failed, or it ran out of attempts.
    Failed,
}

impl OperationStatus {
    pub const ALL: [Self; 4] = [Self::Queued, Self::Running, Self::Succeeded, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == raw)
            .ok_or_else(|| InvalidValue::new(format!("{} is not an operation status", quoted(raw))))
    }

    pub fn is_finished(self) -> bool {
        match self {
            Self::Succeeded | Self::Failed => true,
            Self::Queued | Self::Running => false,
        }
    }
}

/// Why a plan refuses a change: the domain's error. The service answers
/// `Invalid` as INVALID_ARGUMENT and `NotNow` as FAILED_PRECONDITION.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0}")]
    NotNow(Refused),
}

impl Refusal {
    pub fn not_now(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self::NotNow(Refused::new(reason, message))
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// A schedule a step acts on: one Stripe already has, or the one an earlier
/// step of the same plan creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleRef {
    Existing(String),
    CreatedInStep(usize),
}

/// One price and quantity of a schedule phase or a checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceQuantity {
    pub price_id: String,
    pub quantity: i64,
}

/// A subscription item's new quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemQuantity {
    pub item_id: String,
    pub quantity: i64,
}

/// What a Checkout session sells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutSale {
    /// A subscription of these prices; the metadata goes on the subscription.
    Subscription {
        lines: Vec<PriceQuantity>,
        subscription_metadata: BTreeMap<String, String>,
    },
    /// One payment of an amount; the metadata goes on the payment too.
    Payment {
        currency: String,
        amount_minor: i64,
        product_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub customer_id: String,
    pub sale: CheckoutSale,
    pub metadata: BTreeMap<String, String>,
    pub success_url: String,
    pub cancel_url: String,
}

/// A change of several items of one subscription in one update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemsUpdate {
    pub subscription_id: String,
    pub items: Vec<ItemQuantity>,
    pub proration: Proration,
    /// Keep the change only once its invoice is paid (Stripe's pending
    /// updates); otherwise it applies at once.
    pub only_if_paid: bool,
    /// Metadata to set; an empty value removes the key.
    pub metadata: BTreeMap<String, String>,
}

/// The two phases of a billing-cycle change: the current items to the end
/// of the period, then the next cycle's items billed from the renewal,
/// never prorated, after which the schedule releases the subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleChangePhases {
    pub schedule: ScheduleRef,
    pub subscription_id: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub current: Vec<PriceQuantity>,
    pub next: Vec<PriceQuantity>,
    /// The subscription's discounts, carried into both phases.
    pub discounts: Vec<String>,
}

/// One Stripe request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Step {
    /// Ends an open Checkout session so it can no longer be paid.
    ExpireCheckoutSession {
        session_id: String,
    },
    CreateCheckoutSession(CheckoutSession),
    UpdateItems(ItemsUpdate),
    SetCancelAtPeriodEnd {
        subscription_id: String,
        cancel: bool,
    },
    /// A schedule mirroring the subscription as it is.
    CreateSchedule {
        subscription_id: String,
    },
    SetCycleChangePhases(CycleChangePhases),
    /// The subscription goes on with its current items, without the schedule.
    ReleaseSchedule {
        schedule: ScheduleRef,
    },
    AddItem {
        subscription_id: String,
        price_id: String,
        quantity: i64,
        proration: Proration,
    },
    SetItemQuantity {
        item_id: String,
        quantity: i64,
        proration: Proration,
    },
    RemoveItem {
        item_id: String,
        proration: Proration,
    },
    /// Ends the subscription now, without crediting the unused time (the
    /// payment is refunded in full instead).
    CancelSubscriptionNow {
        subscription_id: String,
    },
    Refund {
        payment_intent_id: String,
    },
    /// Voids an open invoice, which discards the pending update it was for.
    VoidInvoice {
        invoice_id: String,
    },
    CreatePortalSession {
        customer_id: String,
        return_url: String,
    },
}

/// Why the payment of an update's invoice did not go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentProblem {
    /// The bank wants the customer to authenticate (3-D Secure).
    NeedsAuthentication,
    /// The card was declined.
    Declined,
}

/// What Stripe answered to a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepResult {
    Done,
    Session {
        id: String,
        url: String,
    },
    /// The subscription after the change.
    Subscription(Box<ProviderSubscription>),
    /// An update kept pending until its invoice is paid.
    PaymentIncomplete {
        subscription: Box<ProviderSubscription>,
        invoice_id: String,
        invoice_url: Option<String>,
        problem: PaymentProblem,
    },
    Schedule {
        id: String,
    },
    Url(String),
}

/// The schedule `schedule` names, given what the steps before returned.
pub fn resolve_schedule<'a>(
    schedule: &'a ScheduleRef,
    results: &'a [StepResult],
) -> Option<&'a str> {
    match schedule {
        ScheduleRef::Existing(id) => Some(id),
        ScheduleRef::CreatedInStep(step) => match results.get(*step)? {
            StepResult::Schedule { id } => Some(id),
            StepResult::Done
            | StepResult::Session { .. }
            | StepResult::Subscription(_)
            | StepResult::PaymentIncomplete { .. }
            | StepResult::Url(_) => None,
        },
    }
}

/// The subscription as the last step that returned one left it.
pub fn last_subscription(results: &[StepResult]) -> Option<&ProviderSubscription> {
    results.iter().rev().find_map(|result| match result {
        StepResult::Subscription(live) => Some(live.as_ref()),
        StepResult::PaymentIncomplete { subscription, .. } => Some(subscription.as_ref()),
        StepResult::Done
        | StepResult::Session { .. }
        | StepResult::Schedule { .. }
        | StepResult::Url(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_only_subscription_changes_are_serialized() {
        for kind in OperationKind::ALL {
            assert_eq!(OperationKind::parse(kind.as_str()), Ok(kind));
        }
        for status in OperationStatus::ALL {
            assert_eq!(OperationStatus::parse(status.as_str()), Ok(status));
        }
        let parallel: Vec<OperationKind> = OperationKind::ALL
            .into_iter()
            .filter(|kind| !kind.serialized())
            .collect();
        assert_eq!(
            parallel,
            [OperationKind::CreditPurchase, OperationKind::PortalSession]
        );
    }

    #[test]
    fn a_plan_survives_being_stored() {
        let plan = vec![
            Step::CreateSchedule {
                subscription_id: "sub_1".into(),
            },
            Step::ReleaseSchedule {
                schedule: ScheduleRef::CreatedInStep(0),
            },
        ];
        let stored = serde_json::to_value(&plan).unwrap();
        assert_eq!(stored[1]["schedule"]["created_in_step"], 0);
        let read: Vec<Step> = serde_json::from_value(stored).unwrap();
        assert_eq!(read, plan);
    }

    #[test]
    fn a_schedule_made_by_an_earlier_step_is_found_by_its_result() {
        let results = [StepResult::Schedule {
            id: "sub_sched_9".into(),
        }];
        assert_eq!(
            resolve_schedule(&ScheduleRef::CreatedInStep(0), &results),
            Some("sub_sched_9")
        );
        assert_eq!(
            resolve_schedule(&ScheduleRef::CreatedInStep(1), &results),
            None
        );
        assert_eq!(
            resolve_schedule(&ScheduleRef::Existing("s".into()), &[]),
            Some("s")
        );
    }
}
