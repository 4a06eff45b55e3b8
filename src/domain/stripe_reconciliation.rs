//! Drift between our copy of a subscription and what Stripe reports now.
//!
//! Reconciliation reads every subscription from Stripe, works out what
//! syncing it would store (`subscription_sync::reconcile`, the same rule an
//! event goes through) and compares that with what is stored. Whatever
//! differs is drift: an event that never came, a change made in Stripe
//! without one. Repairing is syncing, through the same path as an event.

use super::differing_fields;
use super::subscription::Subscription;

/// What reconciliation found for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// What we store is what syncing would store.
    InSync,
    /// These fields differ (never empty); a subscription we do not store at
    /// all drifts in every field, reported as `["subscription"]`.
    Drifted(Vec<&'static str>),
}

/// Compares what is stored with what syncing Stripe's reading would store.
pub fn compare(stored: Option<&Subscription>, synced: &Subscription) -> Finding {
    let Some(stored) = stored else {
        return Finding::Drifted(vec!["subscription"]);
    };
    let fields: [(&'static str, bool); 12] = [
        ("status", stored.status_raw == synced.status_raw),
        ("plan", stored.plan == synced.plan),
        (
            "billing_cycle",
            stored.billing_cycle == synced.billing_cycle,
        ),
        ("paid_seats", stored.paid_seats == synced.paid_seats),
        (
            "current_period",
            stored.current_period_start == synced.current_period_start
                && stored.current_period_end == synced.current_period_end,
        ),
        (
            "cancel_at_period_end",
            stored.cancel_at_period_end == synced.cancel_at_period_end,
        ),
        ("ended_at", stored.ended_at == synced.ended_at),
        ("next_payment", stored.next_payment == synced.next_payment),
        (
            "pending_seat_decrease",
            stored.pending_seat_decrease == synced.pending_seat_decrease,
        ),
        (
            "pending_cycle_change",
            stored.pending_cycle_change == synced.pending_cycle_change,
        ),
        ("schedule", stored.schedule_id == synced.schedule_id),
        (
            "identity",
            stored.stripe_subscription_id == synced.stripe_subscription_id
                && stored.created_at == synced.created_at
                && stored.purchaser == synced.purchaser,
        ),
    ];
    let drifted = differing_fields(&fields);
    if drifted.is_empty() {
        Finding::InSync
    } else {
        Finding::Drifted(drifted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_fixtures::subscription;

    #[test]
    fn only_what_differs_is_drift() {
        let start = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let mut stored = subscription("active", 3, start);
        stored.current_period_start = Some(start);
        stored.current_period_end = Some(start + chrono::TimeDelta::days(30));
        let mut more_seats = stored.clone();
        more_seats.paid_seats += 2;
        let mut canceling_past_due = stored.clone();
        canceling_past_due.cancel_at_period_end = true;
        canceling_past_due.status_raw = "past_due".into();
        let mut renewed = stored.clone();
        renewed.current_period_end = renewed
            .current_period_end
            .map(|end| end + chrono::TimeDelta::days(30));
        let cases = [
            ("the same", Some(&stored), &stored, Finding::InSync),
            (
                "not stored at all",
                None,
                &stored,
                Finding::Drifted(vec!["subscription"]),
            ),
            (
                "seats changed in Stripe",
                Some(&stored),
                &more_seats,
                Finding::Drifted(vec!["paid_seats"]),
            ),
            (
                "two fields",
                Some(&stored),
                &canceling_past_due,
                Finding::Drifted(vec!["status", "cancel_at_period_end"]),
            ),
            (
                "a renewal never delivered",
                Some(&stored),
                &renewed,
                Finding::Drifted(vec!["current_period"]),
            ),
        ];
        for (name, stored, synced, want) in cases {
            assert_eq!(compare(stored, synced), want, "{name}");
        }
    }
}
