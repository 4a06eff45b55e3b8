//! The seat rule: who holds a seat, and whether the organization may take
//! another or is over its seats. The invitation gate, the acceptance of an
//! invitation, role changes, `GetSeatUsage` and the entitlement decision
//! all read it from here, so the service never admits a member that its own
//! decision would then punish.
//!
//! - Seat holders are members and pending, unexpired invitations whose role
//!   takes a seat (billing managers do not).
//! - While a paid subscription counts, its paid seats govern, trial or not.
//! - Before one exists, the trial leaves invitations unlimited; after the
//!   trial, nothing is gated (the trial's end denies access instead).

use chrono::{DateTime, Utc};

use super::organization::Organization;
use super::role::Role;
use super::subscription::Subscription;

/// Who takes a seat, counted at a moment (invitations expire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeatHolders {
    pub members: i64,
    /// When each pending seat-taking invitation expires.
    pub invitations_expiring: Vec<DateTime<Utc>>,
}

impl SeatHolders {
    /// From every member's role and every pending invitation's role and
    /// expiry; only roles that take a seat count.
    pub fn from_roles(
        members: impl IntoIterator<Item = Role>,
        invitations: impl IntoIterator<Item = (Role, DateTime<Utc>)>,
    ) -> Self {
        let members = members.into_iter().filter(|role| role.takes_seat()).count();
        Self {
            members: i64::try_from(members).unwrap_or(i64::MAX),
            invitations_expiring: invitations
                .into_iter()
                .filter(|(role, _)| role.takes_seat())
                .map(|(_, expires)| expires)
                .collect(),
        }
    }

    /// Counts one more member of `role` (the entitlement cache builds the
    /// holders row by row).
    pub fn add_member(&mut self, role: Role) {
        if role.takes_seat() {
            self.members += 1;
        }
    }

    /// Counts one more pending invitation for `role`.
    pub fn add_invitation(&mut self, role: Role, expires: DateTime<Utc>) {
        if role.takes_seat() {
            self.invitations_expiring.push(expires);
        }
    }

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
    /// No paid subscription counts and the trial runs: unlimited.
    TrialUnlimited,
    SeatsNotRequired,
    /// No paid subscription counts and the trial is over: not gated here.
    NoSubscription,
    SeatAvailable,
    SeatsFull,
    /// More seats used than paid for: members are denied.
    OverSeats,
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
    /// `counting` is the paid subscription that grants access now, if any.
    pub fn evaluate(
        org: &Organization,
        counting: Option<&Subscription>,
        used: i64,
        now: DateTime<Utc>,
    ) -> Self {
        let paid = counting.map_or(0, |s| s.paid_seats);
        let gate = match counting {
            _ if org.bypasses_billing() => SeatGate::SeatsNotRequired,
            Some(_) if used < paid => SeatGate::SeatAvailable,
            Some(_) if used == paid => SeatGate::SeatsFull,
            Some(_) => SeatGate::OverSeats,
            None if now < org.trial_end => SeatGate::TrialUnlimited,
            None => SeatGate::NoSubscription,
        };
        Self { used, paid, gate }
    }

    /// Whether `extra` more seats may be taken: never past the paid seats
    /// while a subscription counts.
    pub fn admit(&self, extra: i64) -> Result<(), SeatsExhausted> {
        let used_after = self.used + extra;
        match self.gate {
            SeatGate::TrialUnlimited | SeatGate::SeatsNotRequired | SeatGate::NoSubscription => {
                Ok(())
            }
            SeatGate::SeatAvailable | SeatGate::SeatsFull | SeatGate::OverSeats
                if used_after <= self.paid =>
            {
                Ok(())
            }
            SeatGate::SeatAvailable | SeatGate::SeatsFull | SeatGate::OverSeats => {
                Err(SeatsExhausted {
                    used_after,
                    paid: self.paid,
                })
            }
        }
    }

    pub fn invite_allowed(&self) -> bool {
        self.admit(1).is_ok()
    }

    /// Whether members are denied for using more seats than are paid for.
    pub fn over_seats(&self) -> bool {
        self.gate == SeatGate::OverSeats
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
            SeatGate::OverSeats => format!(
                "{used} seats used but {paid} paid for; buy seats or remove members to restore access"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_fixtures::{organization, subscription};
    use chrono::TimeDelta;

    #[test]
    fn billing_managers_hold_no_seat_as_members_or_invitations() {
        let now = Utc::now();
        let later = now + TimeDelta::days(1);
        let holders = SeatHolders::from_roles(
            [Role::Owner, Role::BillingManager, Role::Member],
            [
                (Role::Member, later),
                (Role::BillingManager, later),
                (Role::Owner, now - TimeDelta::seconds(1)),
            ],
        );
        assert_eq!(holders.members, 2);
        assert_eq!(
            holders.used_at(now),
            3,
            "the expired invitation holds nothing"
        );
    }

    #[test]
    fn seat_gate_table() {
        let now = Utc::now();
        let trial = organization(now + TimeDelta::days(5));
        let after_trial = organization(now - TimeDelta::days(1));
        let mut unrequired = after_trial.clone();
        unrequired.require_seats = false;
        let paid3 = subscription("active", 3, now);
        // (case, organization, subscription, used, gate, may invite)
        let table = [
            (
                "trial, nothing paid",
                &trial,
                None,
                40,
                SeatGate::TrialUnlimited,
                true,
            ),
            (
                "trial, paid for 3 with 3 used",
                &trial,
                Some(&paid3),
                3,
                SeatGate::SeatsFull,
                false,
            ),
            (
                "trial, paid for 3 with 2 used",
                &trial,
                Some(&paid3),
                2,
                SeatGate::SeatAvailable,
                true,
            ),
            (
                "after the trial, 2 of 3",
                &after_trial,
                Some(&paid3),
                2,
                SeatGate::SeatAvailable,
                true,
            ),
            (
                "after the trial, 4 of 3",
                &after_trial,
                Some(&paid3),
                4,
                SeatGate::OverSeats,
                false,
            ),
            (
                "after the trial, nothing paid",
                &after_trial,
                None,
                9,
                SeatGate::NoSubscription,
                true,
            ),
            (
                "seats not required",
                &unrequired,
                Some(&paid3),
                9,
                SeatGate::SeatsNotRequired,
                true,
            ),
        ];
        for (case, org, sub, used, gate, invite) in table {
            let usage = SeatUsage::evaluate(org, sub, used, now);
            assert_eq!(usage.gate, gate, "{case}");
            assert_eq!(usage.invite_allowed(), invite, "{case}");
            assert_eq!(usage.over_seats(), gate == SeatGate::OverSeats, "{case}");
        }
    }

    #[test]
    fn admitting_names_both_numbers_when_it_refuses() {
        let now = Utc::now();
        let sub = subscription("active", 3, now);
        let usage =
            SeatUsage::evaluate(&organization(now - TimeDelta::days(1)), Some(&sub), 2, now);
        assert_eq!(usage.admit(1), Ok(()));
        assert_eq!(
            usage.admit(2),
            Err(SeatsExhausted {
                used_after: 4,
                paid: 3
            })
        );
    }
}
