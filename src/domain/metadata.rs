//! The metadata this service writes on Stripe objects and reads back.
//!
//! Stripe keeps it with the object, so what it says is part of the live
//! state: a subscription names its organization and buyer, a schedule says
//! it was made for a billing-cycle change, and a subscription whose seats
//! were lowered during a period says how many were paid for that period.

use chrono::{DateTime, Utc};

/// Names the organization on customers, subscriptions, sessions and payments.
pub const ORG_ID_KEY: &str = "org_id";
/// Names the user who started the checkout.
pub const PURCHASER_KEY: &str = "purchaser_user_id";
/// Names the plan bought at checkout.
pub const PLAN_KEY: &str = "plan";
/// Says what a subscription or payment is for.
pub const TYPE_KEY: &str = "type";
/// `TYPE_KEY`'s value on seat subscriptions.
pub const SEATS_TYPE: &str = "seats";
/// `TYPE_KEY`'s value on a credit purchase's session and payment.
pub const CREDIT_PURCHASE_TYPE: &str = "credit_purchase";
/// Marks a subscription schedule as made by this service for a
/// billing-cycle change; the value is the subscription's id.
pub const CYCLE_CHANGE_KEY: &str = "billing_service_cycle_change";
/// On a subscription whose seats were lowered during a period: the seats
/// paid for that period, as `<seats>@<period start, unix seconds>`.
pub const PAID_SEATS_KEY: &str = "billing_service_paid_seats";

/// Seats paid for one period that Stripe's quantity no longer shows (a
/// decrease applies without proration, at the next period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptSeats {
    pub seats: i64,
    pub period_start: DateTime<Utc>,
}

impl KeptSeats {
    /// The metadata value.
    pub fn encode(self) -> String {
        format!("{}@{}", self.seats, self.period_start.timestamp())
    }

    /// Reads a metadata value; anything malformed is treated as absent,
    /// since a person may have edited it in the dashboard.
    pub fn decode(raw: &str) -> Option<Self> {
        let (seats, start) = raw.split_once('@')?;
        Some(Self {
            seats: seats.parse().ok().filter(|&seats: &i64| seats >= 0)?,
            period_start: DateTime::from_timestamp(start.parse().ok()?, 0)?,
        })
    }

    /// The kept seats, if they are for the period starting at `period_start`.
    pub fn for_period(self, period_start: Option<DateTime<Utc>>) -> Option<i64> {
        (Some(self.period_start) == period_start).then_some(self.seats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_seats_round_trip_and_apply_only_to_their_period() {
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let kept = KeptSeats {
            seats: 5,
            period_start: start,
        };
        assert_eq!(kept.encode(), "5@1800000000");
        assert_eq!(KeptSeats::decode(&kept.encode()), Some(kept));
        assert_eq!(kept.for_period(Some(start)), Some(5));
        assert_eq!(
            kept.for_period(Some(start + chrono::TimeDelta::days(30))),
            None
        );
        for bad in ["", "5", "x@1", "-1@1800000000", "5@soon"] {
            assert_eq!(KeptSeats::decode(bad), None, "{bad:?}");
        }
    }
}
