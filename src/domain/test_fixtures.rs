//! Domain values for unit tests, with the fields a test does not care about
//! filled in once.

use chrono::{DateTime, TimeDelta, Utc};

use super::catalog::{BillingCycle, PlanId};
use super::ids::OrgId;
use super::organization::{ModelRestrictions, Organization};
use super::subscription::Subscription;

/// A Teams organization that requires seats, with its trial ending at `trial_end`.
pub fn organization(trial_end: DateTime<Utc>) -> Organization {
    Organization {
        id: OrgId::generate(),
        name: "Acme".into(),
        plan: PlanId::new("teams"),
        trial_end,
        require_seats: true,
        sponsorship_tier: None,
        suppress_trial_messaging: false,
        instances_opted_out: false,
        restrictions: ModelRestrictions::default(),
        created_at: trial_end - TimeDelta::days(30),
    }
}

/// A monthly Teams subscription in `status` with `paid_seats` seats.
pub fn subscription(status: &str, paid_seats: i64, created_at: DateTime<Utc>) -> Subscription {
    Subscription {
        stripe_subscription_id: format!("sub_{status}"),
        status_raw: status.to_owned(),
        plan: PlanId::new("teams"),
        billing_cycle: Some(BillingCycle::Monthly),
        paid_seats,
        current_period_start: None,
        current_period_end: None,
        cancel_at_period_end: false,
        ended_at: None,
        next_payment: None,
        created_at,
        pending_seat_decrease: None,
        pending_cycle_change: None,
        schedule_id: None,
    }
}
