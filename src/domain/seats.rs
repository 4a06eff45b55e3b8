//! Seat usage and the gate on invitations.
//!
//! Used seats are members plus pending, unexpired invitations, not counting
//! billing managers. Seats are only gated after the trial, when seats are
//! required and a paid subscription counts.

use chrono::{DateTime, Utc};

use super::organization::Organization;
use super::subscription::Subscription;

/// Who takes a seat: members (not billing managers) and pending invitations
/// until they expire, so the count is read at a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeatHolders {
    pub members: i64,
    /// When each pending seat-taking invitation expires.
    pub invitations_expiring: Vec<DateTime<Utc>>,
}

impl SeatHolders {
    pub fn used_at(&self, now: DateTime<Utc>) -> i64 {
        let pending = self
            .invitations_expiring
            .iter()
            .filter(|&&expires| expires > now)
            .count();
        self.members + i64::try_from(pending).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatGate {
    TrialUnlimited,
    SeatsNotRequired,
    NoSubscription,
    SeatAvailable,
    SeatsFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatUsage {
    pub used: i64,
    /// Seats of the subscription that counts now; 0 without one.
    pub paid: i64,
    pub gate: SeatGate,
}

/// Refusal to take more seats than are paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this would use {used_after} seats but only {paid} are paid for; buy more seats or remove members first"
)]
pub struct SeatsExhausted {
    pub used_after: i64,
    pub paid: i64,
}

impl SeatUsage {
    /// `counting` is the subscription that grants access now, if any.
    pub fn evaluate(
        org: &Organization,
        counting: Option<&Subscription>,
        used: i64,
        now: DateTime<Utc>,
    ) -> Self {
        let paid = counting.map_or(0, |s| s.paid_seats);
        let gate = if org.bypasses_billing() {
            SeatGate::SeatsNotRequired
        } else if now < org.trial_end {
            SeatGate::TrialUnlimited
        } else if counting.is_none() {
            SeatGate::NoSubscription
        } else if used < paid {
            SeatGate::SeatAvailable
        } else {
            SeatGate::SeatsFull
        };
        Self { used, paid, gate }
    }

    /// Whether `extra` more seats may be taken.
    pub fn admit(&self, extra: i64) -> Result<(), SeatsExhausted> {
        let used_after = self.used + extra;
        match self.gate {
            SeatGate::TrialUnlimited | SeatGate::SeatsNotRequired | SeatGate::NoSubscription => {
                Ok(())
            }
            SeatGate::SeatAvailable | SeatGate::SeatsFull if used_after <= self.paid => Ok(()),
            SeatGate::SeatAvailable | SeatGate::SeatsFull => Err(SeatsExhausted {
                used_after,
                paid: self.paid,
            }),
        }
    }

    pub fn invite_allowed(&self) -> bool {
        self.admit(1).is_ok()
    }

    /// Whether members are denied because more seats are used than paid.
    pub fn exceeded(&self) -> bool {
        self.used > self.paid
    }

    pub fn explanation(&self) -> String {
        let (used, paid) = (self.used, self.paid);
        match self.gate {
            SeatGate::TrialUnlimited => {
                format!("{used} seats used; invitations are unlimited during the trial")
            }
            SeatGate::SeatsNotRequired => {
                format!("{used} seats used; this organization does not require seats")
            }
            SeatGate::NoSubscription => {
                format!("{used} seats used; no paid subscription limits seats")
            }
            SeatGate::SeatAvailable => format!("{used} of {paid} paid seats used"),
            SeatGate::SeatsFull => {
                format!("{used} of {paid} paid seats used; buy more seats to invite another member")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_fixtures::{organization, subscription};
    use chrono::TimeDelta;

    fn paid(seats: i64) -> Subscription {
        subscription("active", seats, Utc::now())
    }

    #[test]
    fn invitations_are_unlimited_during_the_trial_even_when_paid() {
        let now = Utc::now();
        let sub = paid(1);
        let usage =
            SeatUsage::evaluate(&organization(now + TimeDelta::days(5)), Some(&sub), 40, now);
        assert_eq!(usage.gate, SeatGate::TrialUnlimited);
        assert!(usage.invite_allowed());
    }

    #[test]
    fn after_the_trial_paid_seats_gate_invitations() {
        let now = Utc::now();
        let ended = organization(now - TimeDelta::days(1));
        let sub = paid(3);
        let usage = SeatUsage::evaluate(&ended, Some(&sub), 2, now);
        assert_eq!(usage.gate, SeatGate::SeatAvailable);
        assert_eq!(usage.admit(1), Ok(()));
        assert_eq!(
            usage.admit(2),
            Err(SeatsExhausted {
                used_after: 4,
                paid: 3
            })
        );
        let full = SeatUsage::evaluate(&ended, Some(&sub), 3, now);
        assert_eq!(full.gate, SeatGate::SeatsFull);
        assert!(!full.invite_allowed());
    }

    #[test]
    fn without_required_seats_or_a_subscription_nothing_is_gated() {
        let now = Utc::now();
        let mut ended = organization(now - TimeDelta::days(1));
        assert_eq!(
            SeatUsage::evaluate(&ended, None, 9, now).gate,
            SeatGate::NoSubscription
        );
        ended.require_seats = false;
        let sub = paid(1);
        let usage = SeatUsage::evaluate(&ended, Some(&sub), 9, now);
        assert_eq!(usage.gate, SeatGate::SeatsNotRequired);
        assert!(usage.invite_allowed());
    }
}
