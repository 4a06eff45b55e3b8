//! Conversions between `billing.v1` messages and domain types that more than
//! one service uses. Parsing functions name the request field they read.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::proto;
pub use super::proto::values::{
    billing_cycle, money, optional_timestamp, role, timestamp, trial_stage,
};
use crate::domain::entitlement::Reason;
use crate::domain::ids::{IdempotencyKey, OrgId, UserId};
use crate::domain::pricing::BillingCycle;
use crate::domain::role::Role;
use crate::domain::seats::{SeatGate, SeatUsage};
use crate::domain::trial::TrialStatus;
use crate::error::{Error, FieldContext, Result};
use crate::service::OrganizationView;

pub fn parse_timestamp(field: &str, raw: Option<&Timestamp>) -> Result<DateTime<Utc>> {
    let raw = raw.ok_or_else(|| Error::invalid(field, "is required"))?;
    u32::try_from(raw.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(raw.seconds, nanos))
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

pub fn org_id(raw: &str) -> Result<OrgId> {
    OrgId::parse(raw).field("org_id")
}

pub fn user_id(raw: &str) -> Result<UserId> {
    UserId::parse(raw).field("user_id")
}

/// A required idempotency key (or reservation key) named `field`.
pub fn required_key(field: &str, raw: &str) -> Result<String> {
    Ok(IdempotencyKey::parse_optional(raw)
        .field(field)?
        .ok_or_else(|| Error::invalid(field, "is required"))?
        .as_str()
        .to_owned())
}

pub fn reason(reason: Reason) -> proto::EntitlementReason {
    use proto::EntitlementReason as R;
    match reason {
        Reason::SubscriptionActive => R::SubscriptionActive,
        Reason::TrialActive => R::TrialActive,
        Reason::TrialGrace => R::TrialGrace,
        Reason::Bypass => R::Bypass,
        Reason::NotAMember => R::NotAMember,
        Reason::TrialExpired => R::TrialExpired,
        Reason::SubscriptionInactive => R::SubscriptionInactive,
        Reason::SeatsExceeded => R::SeatsExceeded,
        Reason::ModelDenied => R::ModelDenied,
        Reason::ProviderNotAllowed => R::ProviderNotAllowed,
        Reason::FeatureNotInPlan => R::FeatureNotInPlan,
        Reason::InsufficientCredits => R::InsufficientCredits,
        Reason::InstanceTrial => R::InstanceTrial,
        Reason::InstanceActive => R::InstanceActive,
        Reason::InstanceNotFound => R::InstanceNotFound,
        Reason::InstancesDisabled => R::InstancesDisabled,
        Reason::InstanceSuspended => R::InstanceSuspended,
        Reason::InstanceCanceled => R::InstanceCanceled,
        Reason::StateStale => R::StateStale,
    }
}

pub fn parse_role(field: &str, raw: i32) -> Result<Role> {
    match proto::Role::try_from(raw) {
        Ok(proto::Role::Owner) => Ok(Role::Owner),
        Ok(proto::Role::BillingManager) => Ok(Role::BillingManager),
        Ok(proto::Role::Member) => Ok(Role::Member),
        Ok(proto::Role::Unspecified) => Err(Error::invalid(field, "is required")),
        Err(_) => Err(Error::invalid(field, format!("{raw} is not a role"))),
    }
}

pub fn parse_billing_cycle(field: &str, raw: i32) -> Result<BillingCycle> {
    match proto::BillingCycle::try_from(raw) {
        Ok(proto::BillingCycle::Monthly) => Ok(BillingCycle::Monthly),
        Ok(proto::BillingCycle::Yearly) => Ok(BillingCycle::Yearly),
        Ok(proto::BillingCycle::Unspecified) => Err(Error::invalid(field, "is required")),
        Err(_) => Err(Error::invalid(
            field,
            format!("{raw} is not a billing cycle"),
        )),
    }
}

pub fn trial(status: TrialStatus) -> proto::TrialStatus {
    proto::TrialStatus {
        stage: trial_stage(status.stage).into(),
        days_remaining: status.days_remaining,
        trial_end: Some(timestamp(status.trial_end)),
    }
}

pub fn seat_usage(usage: &SeatUsage) -> proto::SeatUsage {
    let gate = match usage.gate {
        SeatGate::TrialUnlimited => proto::SeatGate::TrialUnlimited,
        SeatGate::SeatsNotRequired => proto::SeatGate::SeatsNotRequired,
        SeatGate::NoSubscription => proto::SeatGate::NoSubscription,
        SeatGate::SeatAvailable => proto::SeatGate::SeatAvailable,
        SeatGate::SeatsFull => proto::SeatGate::SeatsFull,
        SeatGate::OverSeats => proto::SeatGate::OverSeats,
    };
    proto::SeatUsage {
        used_seats: usage.used,
        paid_seats: usage.paid,
        invite_allowed: usage.invite_allowed(),
        gate: gate.into(),
        explanation: usage.explanation(),
    }
}

pub fn organization(view: OrganizationView) -> proto::Organization {
    let org = view.org;
    proto::Organization {
        id: org.id.to_string(),
        name: org.name,
        plan: org.plan.as_str().to_owned(),
        created_at: Some(timestamp(org.created_at)),
        trial: Some(trial(view.trial)),
        require_seats: org.require_seats,
        sponsorship_tier: org.sponsorship_tier.unwrap_or_default(),
        suppress_trial_messaging: org.suppress_trial_messaging,
        model_restrictions: Some(proto::ModelRestrictions {
            model_deny_list: org.restrictions.model_deny_list,
            provider_allow_list: org.restrictions.provider_allow_list,
            enforced: view.restrictions_enforced,
        }),
    }
}

/// A page size of 1 to `max`, with a default for 0.
pub fn page_size(raw: i32, default: i64, max: i32) -> Result<i64> {
    match raw {
        0 => Ok(default),
        size if (1..=max).contains(&size) => Ok(i64::from(size)),
        _ => Err(Error::invalid(
            "page_size",
            format!("must be between 1 and {max}"),
        )),
    }
}
