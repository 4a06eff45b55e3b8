//! Paid subscriptions as the billing provider reports them, and which of
//! their states grant access.

use chrono::{DateTime, Utc};

use super::money::Money;
use super::pricing::{BillingCycle, PlanId};

/// Stripe's subscription statuses. The raw text is stored verbatim; this
/// enum is what decisions match on, exhaustively, so a status added later
/// must be placed deliberately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
    /// A status this build does not know. It grants nothing until someone
    /// decides what it means.
    Unrecognized,
}

impl SubscriptionStatus {
    pub fn parse(raw: &str) -> Self {
        match raw {
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            _ => Self::Unrecognized,
        }
    }

    /// Whether a subscription in this status counts as paid for access.
    /// `past_due` still counts: Stripe is retrying the card and cutting a
    /// paying team off during the retries would punish a bank hiccup.
    pub fn grants_access(self) -> bool {
        match self {
            Self::Active | Self::Trialing | Self::PastDue => true,
            Self::Incomplete
            | Self::IncompleteExpired
            | Self::Canceled
            | Self::Unpaid
            | Self::Paused
            | Self::Unrecognized => false,
        }
    }
}

impl SubscriptionStatus {
    /// Whether a subscription in this status, ended at `ended_at` (if it
    /// has), grants access at `now`.
    pub fn counts(self, ended_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        self.grants_access() && !ended_by(ended_at, now)
    }

    /// Whether a subscription in this status is over for good at `now`:
    /// ended, or in a status Stripe never leaves. A `canceled` one is over
    /// even while its `ended_at` is a moment ahead of our clock (Stripe's
    /// test clocks, or clock skew).
    pub fn is_over(self, ended_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        ended_by(ended_at, now) || self.is_terminal()
    }

    /// A subscription created by a checkout that has not been paid yet: it
    /// has not started, so leaving this status is its activation.
    pub fn awaits_first_payment(self) -> bool {
        match self {
            Self::Incomplete => true,
            Self::IncompleteExpired
            | Self::Trialing
            | Self::Active
            | Self::PastDue
            | Self::Canceled
            | Self::Unpaid
            | Self::Paused
            | Self::Unrecognized => false,
        }
    }

    /// Stripe is retrying a failed payment (or gave up retrying and left
    /// the subscription unpaid).
    pub fn is_payment_failing(self) -> bool {
        match self {
            Self::PastDue | Self::Unpaid => true,
            Self::Incomplete
            | Self::IncompleteExpired
            | Self::Trialing
            | Self::Active
            | Self::Canceled
            | Self::Paused
            | Self::Unrecognized => false,
        }
    }

    /// Paid up: what a failing payment recovers to.
    pub fn is_paid_up(self) -> bool {
        match self {
            Self::Active => true,
            Self::Incomplete
            | Self::IncompleteExpired
            | Self::Trialing
            | Self::PastDue
            | Self::Canceled
            | Self::Unpaid
            | Self::Paused
            | Self::Unrecognized => false,
        }
    }

    /// Whether Stripe will never move a subscription out of this status.
    pub fn is_terminal(self) -> bool {
        match self {
            Self::Canceled | Self::IncompleteExpired => true,
            Self::Incomplete
            | Self::Trialing
            | Self::Active
            | Self::PastDue
            | Self::Unpaid
            | Self::Paused
            | Self::Unrecognized => false,
        }
    }
}

/// Seats that drop when the next period starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSeatDecrease {
    pub seats: i64,
    pub effective_at: DateTime<Utc>,
}

/// A billing-cycle change waiting for the renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCycleChange {
    pub cycle: BillingCycle,
    pub effective_at: DateTime<Utc>,
    /// What each period of the new cycle will cost, summed over its items.
    pub next_payment: Money,
}

/// What we know locally about one subscription of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub stripe_subscription_id: String,
    /// Exactly as Stripe reported it.
    pub status_raw: String,
    pub plan: PlanId,
    pub billing_cycle: Option<BillingCycle>,
    pub paid_seats: i64,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub ended_at: Option<DateTime<Utc>>,
    pub next_payment: Option<Money>,
    pub created_at: DateTime<Utc>,
    /// Seats that drop at the next renewal.
    pub pending_seat_decrease: Option<PendingSeatDecrease>,
    /// A billing-cycle change waiting for the renewal.
    pub pending_cycle_change: Option<PendingCycleChange>,
    /// The subscription schedule that drives it, while one is active.
    pub schedule_id: Option<String>,
    /// The user who bought it (checkout metadata), unparsed. Paying changes
    /// nobody's role; this only records who did.
    pub purchaser: Option<String>,
}

impl Subscription {
    pub fn status(&self) -> SubscriptionStatus {
        SubscriptionStatus::parse(&self.status_raw)
    }

    /// Whether the subscription is over for good: ended, or in a status
    /// Stripe never leaves.
    pub fn is_over(&self, now: DateTime<Utc>) -> bool {
        self.status().is_over(self.ended_at, now)
    }

    /// Whether this subscription grants access at `now`.
    pub fn counts_at(&self, now: DateTime<Utc>) -> bool {
        self.status().counts(self.ended_at, now)
    }
}

fn ended_by(ended_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    ended_at.is_some_and(|ended| ended <= now)
}

/// Of an organization's subscriptions, the one that matters at `now`: the
/// newest that counts, else the newest of all.
pub fn current(subscriptions: &[Subscription], now: DateTime<Utc>) -> Option<&Subscription> {
    subscriptions
        .iter()
        .filter(|s| s.counts_at(now))
        .max_by_key(|s| s.created_at)
        .or_else(|| subscriptions.iter().max_by_key(|s| s.created_at))
}

/// Of an organization's subscriptions, the one billing changes act on: the
/// newest that is not over.
pub fn running(subscriptions: &[Subscription], now: DateTime<Utc>) -> Option<&Subscription> {
    subscriptions
        .iter()
        .filter(|s| !s.is_over(now))
        .max_by_key(|s| s.created_at)
}

#[cfg(test)]
mod tests {
    use super::{SubscriptionStatus::*, *};
    use chrono::TimeDelta;

    fn subscription(status: &str, created_at: DateTime<Utc>) -> Subscription {
        crate::domain::test_fixtures::subscription(status, 3, created_at)
    }

    #[test]
    fn statuses_that_count_for_access() {
        let table = [
            ("active", Active, true),
            ("trialing", Trialing, true),
            ("past_due", PastDue, true),
            ("unpaid", Unpaid, false),
            ("canceled", Canceled, false),
            ("incomplete", Incomplete, false),
            ("incomplete_expired", IncompleteExpired, false),
            ("paused", Paused, false),
            ("something_new", Unrecognized, false),
        ];
        for (raw, status, counts) in table {
            assert_eq!(SubscriptionStatus::parse(raw), status);
            assert_eq!(status.grants_access(), counts, "{raw}");
        }
    }

    #[test]
    fn an_ended_subscription_stops_counting_at_its_end() {
        let now = Utc::now();
        let mut sub = subscription("active", now);
        sub.ended_at = Some(now + TimeDelta::seconds(1));
        assert!(sub.counts_at(now));
        sub.ended_at = Some(now);
        assert!(!sub.counts_at(now));
    }

    #[test]
    fn a_subscription_is_over_once_ended_or_terminal() {
        let now = Utc::now();
        assert!(!subscription("active", now).is_over(now));
        assert!(!subscription("unpaid", now).is_over(now));
        assert!(subscription("canceled", now).is_over(now));
        assert!(subscription("incomplete_expired", now).is_over(now));
        let mut ended = subscription("active", now);
        ended.ended_at = Some(now - TimeDelta::seconds(1));
        assert!(ended.is_over(now));
        let mut ending_a_moment_ahead = subscription("canceled", now);
        ending_a_moment_ahead.ended_at = Some(now + TimeDelta::seconds(5));
        assert!(ending_a_moment_ahead.is_over(now));
    }

    #[test]
    fn current_prefers_a_counting_subscription_over_a_newer_dead_one() {
        let now = Utc::now();
        let active = subscription("active", now - TimeDelta::days(10));
        let canceled = subscription("canceled", now);
        let all = [active.clone(), canceled.clone()];
        assert_eq!(current(&all, now), Some(&active));
        assert_eq!(
            current(std::slice::from_ref(&canceled), now),
            Some(&canceled)
        );
        assert_eq!(current(&[], now), None);
    }

    #[test]
    fn the_running_subscription_is_the_newest_that_is_not_over() {
        let now = Utc::now();
        let older = subscription("past_due", now - TimeDelta::days(10));
        let newer = subscription("active", now - TimeDelta::days(1));
        let over = subscription("canceled", now);
        let all = [older.clone(), newer.clone(), over];
        assert_eq!(running(&all, now), Some(&newer));
        assert_eq!(running(std::slice::from_ref(&older), now), Some(&older));
        assert_eq!(running(&all[2..], now), None);
    }
}
