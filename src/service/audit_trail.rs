//! What the use cases write to the audit trail: every entry names one
//! [`AuditAction`] and who did it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use super::Actor;
use crate::domain::ids::OrgId;
use crate::error::{Error, Result};
use crate::store::audit::{self, NewAuditEvent};

/// How the trail names changes that came from Stripe's events.
pub(crate) const STRIPE_ACTOR: &str = "stripe";
/// How the trail names changes made by the renewal sweep.
pub(crate) const RENEWAL_ACTOR: &str = "renewals";
/// How the trail names findings of reconciliation with Stripe.
pub(crate) const RECONCILIATION_ACTOR: &str = "reconciliation";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuditAction {
    OrganizationCreated,
    OrganizationDeleted,
    MemberInvited,
    InvitationAccepted,
    InvitationRevoked,
    MemberRoleChanged,
    MemberRemoved,
    ModelRestrictionsSet,
    TrialEndSet,
    OverridesSet,
    UserErased,
    SubscriptionSynced,
    CheckoutStarted,
    SeatIncreaseRequested,
    SeatCountChanged,
    SeatIncreaseAwaitingAuthentication,
    SeatIncreasePaymentFailed,
    BillingCycleChangeScheduled,
    BillingCycleChangeCanceled,
    BillingCycleChangeRealigned,
    SubscriptionCancelRequested,
    SubscriptionResumed,
    DuplicateSubscriptionCanceled,
    CreditsGranted,
    CreditsAdjusted,
    CreditPurchaseStarted,
    CreditsPurchased,
    CreditPurchaseFlagged,
    InstanceCreated,
    InstanceCancelRequested,
    InstanceCanceled,
    InstanceCanceledWithSubscription,
    InstanceRenewed,
    InstanceResumed,
    InstanceSuspended,
    InstanceTrialEndSet,
    InstancePolicySet,
    UsageQuantityReported,
}

impl AuditAction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::OrganizationCreated => "organization.created",
            Self::OrganizationDeleted => "organization.deleted",
            Self::MemberInvited => "member.invited",
            Self::InvitationAccepted => "invitation.accepted",
            Self::InvitationRevoked => "invitation.revoked",
            Self::MemberRoleChanged => "member.role_changed",
            Self::MemberRemoved => "member.removed",
            Self::ModelRestrictionsSet => "organization.model_restrictions_set",
            Self::TrialEndSet => "organization.trial_end_set",
            Self::OverridesSet => "organization.overrides_set",
            Self::UserErased => "user.erased",
            Self::SubscriptionSynced => "subscription.synced",
            Self::CheckoutStarted => "subscription.checkout_started",
            Self::SeatIncreaseRequested => "subscription.seat_increase_requested",
            Self::SeatCountChanged => "subscription.seats_changed",
            Self::SeatIncreaseAwaitingAuthentication => {
                "subscription.seat_increase_awaiting_authentication"
            }
            Self::SeatIncreasePaymentFailed => "subscription.seat_increase_payment_failed",
            Self::BillingCycleChangeScheduled => "subscription.cycle_change_scheduled",
            Self::BillingCycleChangeCanceled => "subscription.cycle_change_canceled",
            Self::BillingCycleChangeRealigned => "subscription.cycle_change_realigned",
            Self::SubscriptionCancelRequested => "subscription.cancel_requested",
            Self::SubscriptionResumed => "subscription.resumed",
            Self::DuplicateSubscriptionCanceled => "subscription.duplicate_canceled",
            Self::CreditsGranted => "credits.granted",
            Self::CreditsAdjusted => "credits.adjusted",
            Self::CreditPurchaseStarted => "credits.purchase_started",
            Self::CreditsPurchased => "credits.purchased",
            Self::CreditPurchaseFlagged => "credits.purchase_flagged",
            Self::InstanceCreated => "instance.created",
            Self::InstanceCancelRequested => "instance.cancel_requested",
            Self::InstanceCanceled => "instance.canceled",
            Self::InstanceCanceledWithSubscription => "instance.canceled_with_subscription",
            Self::InstanceRenewed => "instance.renewed",
            Self::InstanceResumed => "instance.resumed",
            Self::InstanceSuspended => "instance.suspended",
            Self::InstanceTrialEndSet => "instance.trial_end_set",
            Self::InstancePolicySet => "organization.instance_policy_set",
            Self::UsageQuantityReported => "usage_quantity.synced",
        }
    }
}

/// A JSON snapshot of a record for the trail.
pub(crate) fn snapshot(record: &impl Serialize) -> Result<Value> {
    serde_json::to_value(record).map_err(Error::internal)
}

/// An entry by the authenticated caller.
pub(crate) async fn record(
    conn: &mut PgConnection,
    org_id: OrgId,
    actor: &Actor,
    action: AuditAction,
    before: Option<Value>,
    after: Option<Value>,
    now: DateTime<Utc>,
) -> Result<()> {
    record_as(
        conn,
        org_id,
        &actor.audit_name(),
        action,
        before,
        after,
        now,
    )
    .await
}

/// An entry by a named actor: the caller of a resumed operation, Stripe,
/// or a background loop.
pub(crate) async fn record_as(
    conn: &mut PgConnection,
    org_id: OrgId,
    actor: &str,
    action: AuditAction,
    before: Option<Value>,
    after: Option<Value>,
    now: DateTime<Utc>,
) -> Result<()> {
    audit::record(
        conn,
        NewAuditEvent {
            org_id,
            actor,
            action: action.as_str(),
            before,
            after,
            occurred_at: now,
        },
    )
    .await
}
