//! Credit-funded add-on subscriptions, one per instance (a hosted agent):
//! their states, when they renew and what a renewal does.
//!
//! The organization gates every instance. Its credits pay for renewals, so
//! while they are locked (the organization is not entitled) or the
//! organization has switched instances off, a renewal suspends the instance
//! instead of charging it; nothing is deleted, and the next renewal after
//! credits arrive resumes it.

use chrono::{DateTime, Months, TimeDelta, Utc};

use super::add_ons::AddOn;
use super::credits::{Balance, Micros};
use super::ids::{InstanceId, OrgId, UserId};
use super::operation::Refusal;
use super::reason::{ErrorReason, Refused};
use super::{InvalidValue, quoted};

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
                "{} is not an instance status",
                quoted(other)
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

/// How a new instance's subscription starts: with the add-on's trial when
/// the user has not had one in this organization, else with a first month
/// charged at once (see [`first_charge`]).
pub fn start_instance(
    org_id: OrgId,
    instance_id: InstanceId,
    user_id: UserId,
    add_on: &AddOn,
    had_trial: bool,
    now: DateTime<Utc>,
) -> InstanceSubscription {
    let trial_end = (add_on.trial_days > 0 && !had_trial)
        .then(|| now + TimeDelta::days(i64::from(add_on.trial_days)));
    InstanceSubscription {
        org_id,
        instance_id,
        user_id,
        add_on: add_on.id.clone(),
        status: if trial_end.is_some() {
            InstanceStatus::Trialing
        } else {
            InstanceStatus::Active
        },
        price: add_on.monthly_price,
        trial_end,
        current_period_start: now,
        current_period_end: trial_end.unwrap_or_else(|| one_month_after(now)),
        cancel_at_period_end: false,
        canceled_at: None,
        created_at: now,
    }
}

/// Whether a new instance's first month may be charged: unlike a usage
/// debit, it never overdraws.
pub fn first_charge(
    instance: &InstanceSubscription,
    available: Balance,
    display_name: &str,
) -> Result<(), Refusal> {
    if available.covers(instance.price) {
        Ok(())
    } else {
        Err(Refusal::NotNow(
            Refused::new(
                ErrorReason::InsufficientCredits,
                format!(
                    "the credit balance is {available}, less than the {} monthly price of {display_name}",
                    instance.price
                ),
            )
            .with("availableMicros", available.0)
            .with("wantedMicros", instance.price.get()),
        ))
    }
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
    fn a_first_instance_gets_the_trial_and_later_ones_are_charged_only_if_covered() {
        let add_on = AddOn {
            id: "agent".into(),
            display_name: "Hosted agent".into(),
            feature: "instance".into(),
            monthly_price: Micros::from_minor(2000),
            trial_days: 7,
        };
        let start = |had_trial| {
            start_instance(
                OrgId::generate(),
                InstanceId::parse("agent-1").unwrap(),
                UserId::parse("bob").unwrap(),
                &add_on,
                had_trial,
                now(),
            )
        };
        let first = start(false);
        assert_eq!(first.status, InstanceStatus::Trialing);
        assert_eq!(first.trial_end, Some(now() + TimeDelta::days(7)));
        assert_eq!(first.current_period_end, now() + TimeDelta::days(7));
        let later = start(true);
        assert_eq!(
            (later.status, later.trial_end),
            (InstanceStatus::Active, None)
        );
        assert_eq!(later.current_period_end, one_month_after(now()));
        assert_eq!(
            first_charge(&later, Balance(20_000_000), "Hosted agent"),
            Ok(())
        );
        let short = first_charge(&later, Balance(19_999_999), "Hosted agent");
        assert!(
            matches!(short, Err(Refusal::NotNow(Refused { message: m, .. })) if m.contains("$19.999999") && m.contains("$20.00"))
        );
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
