//! Credit-funded add-on subscriptions, one per instance (a hosted agent):
//! their states, when they renew and what a renewal does.
//!
//! The organization gates every instance. Its credits pay for renewals, so
//! while they are locked (the organization is not entitled) or the
//! organization has switched instances off, a renewal suspends the instance
//! instead of charging it; nothing is deleted, and the next renewal after
//! credits arrive resumes it.

use chrono::{DateTime, Months, TimeDelta, Utc};

use super::InvalidValue;
use super::credits::{Balance, Micros};
use super::ids::{InstanceId, OrgId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    /// In its free trial.
    Trialing,
    /// Paid through the current period.
    Active,
    /// A renewal could not be paid; kept, not deleted, until one can.
    Suspended,
    Canceled,
}

impl InstanceStatus {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "trialing" => Ok(Self::Trialing),
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "canceled" => Ok(Self::Canceled),
            other => Err(InvalidValue::new(format!(
                "{other:?} is not an instance status"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSubscription {
    pub org_id: OrgId,
    pub instance_id: InstanceId,
    /// The user the instance belongs to.
    pub user_id: UserId,
    pub add_on: String,
    pub status: InstanceStatus,
    /// The monthly price, fixed when the subscription was created.
    pub price: Micros,
    /// Set when the subscription began with the add-on's trial.
    pub trial_end: Option<DateTime<Utc>>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What the organization allows at renewal time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalFunds {
    /// `None` while the organization's credits are locked.
    pub available: Option<Balance>,
    /// Whether the organization has switched instances off.
    pub opted_out: bool,
}

/// What a due renewal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Set to cancel at the period end, which has come.
    Cancel,
    /// Charge one month and run the new period.
    Charge {
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    },
    Suspend,
}

/// One calendar month on, or 30 days when the calendar overflows.
pub fn one_month_after(at: DateTime<Utc>) -> DateTime<Utc> {
    at.checked_add_months(Months::new(1))
        .unwrap_or(at + TimeDelta::days(30))
}

impl InstanceSubscription {
    /// Whether the subscription's period is up (or it waits to resume).
    pub fn renewal_due(&self, now: DateTime<Utc>) -> bool {
        match self.status {
            InstanceStatus::Trialing | InstanceStatus::Active => self.current_period_end <= now,
            InstanceStatus::Suspended => true,
            InstanceStatus::Canceled => false,
        }
    }

    /// What renewing now does. A period that ended on time continues
    /// without a gap; a suspended instance restarts from now.
    pub fn renewal(&self, funds: RenewalFunds, now: DateTime<Utc>) -> Renewal {
        if self.cancel_at_period_end {
            return Renewal::Cancel;
        }
        let affordable = funds.available.is_some_and(|b| b.covers(self.price));
        if funds.opted_out || !affordable {
            return Renewal::Suspend;
        }
        let period_start = match self.status {
            InstanceStatus::Trialing | InstanceStatus::Active => self.current_period_end,
            InstanceStatus::Suspended | InstanceStatus::Canceled => now,
        };
        // A renewal long overdue (the service was down) starts from now
        // rather than charging for time already past.
        let period_start = if one_month_after(period_start) <= now {
            now
        } else {
            period_start
        };
        Renewal::Charge {
            period_start,
            period_end: one_month_after(period_start),
        }
    }

    /// The status as of `now`: a subscription set to cancel is canceled once
    /// its period is over, even before the sweep writes it.
    pub fn status_at(&self, now: DateTime<Utc>) -> InstanceStatus {
        match self.status {
            InstanceStatus::Trialing | InstanceStatus::Active
                if self.cancel_at_period_end && self.current_period_end <= now =>
            {
                InstanceStatus::Canceled
            }
            status => status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn instance(status: InstanceStatus, period_end: DateTime<Utc>) -> InstanceSubscription {
        InstanceSubscription {
            org_id: OrgId::generate(),
            instance_id: InstanceId::parse("agent-1").unwrap(),
            user_id: UserId::parse("bob").unwrap(),
            add_on: "agent".into(),
            status,
            price: Micros::from_minor(2000),
            trial_end: None,
            current_period_start: period_end - TimeDelta::days(30),
            current_period_end: period_end,
            cancel_at_period_end: false,
            canceled_at: None,
            created_at: period_end - TimeDelta::days(30),
        }
    }

    fn funds(available: Option<i64>, opted_out: bool) -> RenewalFunds {
        RenewalFunds {
            available: available.map(Balance),
            opted_out,
        }
    }

    #[test]
    fn renewal_charges_when_credits_cover_the_price_and_suspends_otherwise() {
        let due = instance(InstanceStatus::Active, now());
        let charged = due.renewal(funds(Some(20_000_000), false), now());
        assert_eq!(
            charged,
            Renewal::Charge {
                period_start: now(),
                period_end: one_month_after(now())
            }
        );
        for (available, opted_out) in [
            (Some(19_999_999), false),
            (None, false),
            (Some(100_000_000), true),
        ] {
            assert_eq!(
                due.renewal(funds(available, opted_out), now()),
                Renewal::Suspend,
                "{available:?} {opted_out}"
            );
        }
    }

    #[test]
    fn a_suspended_instance_resumes_from_now_and_a_canceling_one_cancels() {
        let suspended = instance(InstanceStatus::Suspended, now() - TimeDelta::days(10));
        assert!(suspended.renewal_due(now()));
        assert_eq!(
            suspended.renewal(funds(Some(50_000_000), false), now()),
            Renewal::Charge {
                period_start: now(),
                period_end: one_month_after(now())
            }
        );
        let mut canceling = instance(InstanceStatus::Active, now());
        canceling.cancel_at_period_end = true;
        assert_eq!(
            canceling.renewal(funds(Some(50_000_000), false), now()),
            Renewal::Cancel
        );
        assert_eq!(canceling.status_at(now()), InstanceStatus::Canceled);
        assert_eq!(
            canceling.status_at(now() - TimeDelta::seconds(1)),
            InstanceStatus::Active
        );
    }

    #[test]
    fn only_ended_periods_are_due() {
        let running = instance(InstanceStatus::Trialing, now() + TimeDelta::days(1));
        assert!(!running.renewal_due(now()));
        assert!(!instance(InstanceStatus::Canceled, now()).renewal_due(now()));
    }

    #[test]
    fn instance_ids_are_short_and_plain() {
        assert!(InstanceId::parse("agent_1.prod-2").is_ok());
        for bad in ["", "has space", "slash/", &"x".repeat(65)] {
            assert!(InstanceId::parse(bad).is_err(), "{bad}");
        }
    }
}
