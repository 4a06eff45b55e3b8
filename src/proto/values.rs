//! Domain values as the `billing.v1` messages write them: times, money,
//! roles, billing cycles and trial stages.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::domain::money::Money;
use crate::domain::pricing::BillingCycle;
use crate::domain::role::Role;
use crate::domain::trial::TrialStage;

pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        // Below one billion, so it always fits.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn optional_timestamp(at: Option<DateTime<Utc>>) -> Option<Timestamp> {
    at.map(timestamp)
}

pub fn role(role: Role) -> super::Role {
    match role {
        Role::Owner => super::Role::Owner,
        Role::BillingManager => super::Role::BillingManager,
        Role::Member => super::Role::Member,
    }
}

pub fn billing_cycle(cycle: BillingCycle) -> super::BillingCycle {
    match cycle {
        BillingCycle::Monthly => super::BillingCycle::Monthly,
        BillingCycle::Yearly => super::BillingCycle::Yearly,
    }
}

pub fn money(money: &Money) -> super::Money {
    super::Money {
        amount_minor: money.amount_minor,
        currency: money.currency.as_str().to_owned(),
    }
}

pub fn trial_stage(stage: TrialStage) -> super::TrialStage {
    match stage {
        TrialStage::Active => super::TrialStage::Active,
        TrialStage::EndingSoon => super::TrialStage::EndingSoon,
        TrialStage::EndingVerySoon => super::TrialStage::EndingVerySoon,
        TrialStage::ExpiresToday => super::TrialStage::ExpiresToday,
        TrialStage::SoftExpired => super::TrialStage::SoftExpired,
        TrialStage::HardExpired => super::TrialStage::HardExpired,
    }
}
