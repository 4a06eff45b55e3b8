//! What the use cases write to the audit trail.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

use super::Actor;
use crate::domain::ids::OrgId;
use crate::error::{Error, Result};
use crate::store::audit::{self, NewAuditEvent};

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
    SeatCountChanged,
    BillingCycleChangeScheduled,
    BillingCycleChangeCanceled,
    SubscriptionCancelRequested,
    SubscriptionResumed,
    CreditsGranted,
    CreditsAdjusted,
    InstanceCreated,
    InstanceCancelRequested,
    InstanceCanceled,
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
            Self::SeatCountChanged => "subscription.seats_changed",
            Self::BillingCycleChangeScheduled => "subscription.cycle_change_scheduled",
            Self::BillingCycleChangeCanceled => "subscription.cycle_change_canceled",
            Self::SubscriptionCancelRequested => "subscription.cancel_requested",
            Self::SubscriptionResumed => "subscription.resumed",
            Self::CreditsGranted => "credits.granted",
            Self::CreditsAdjusted => "credits.adjusted",
            Self::InstanceCreated => "instance.created",
            Self::InstanceCancelRequested => "instance.cancel_requested",
            Self::InstanceCanceled => "instance.canceled",
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

pub(crate) async fn record(
    conn: &mut PgConnection,
    org_id: OrgId,
    actor: &Actor,
    action: AuditAction,
    before: Option<Value>,
    after: Option<Value>,
    now: DateTime<Utc>,
) -> Result<()> {
    audit::record(
        conn,
        NewAuditEvent {
            org_id,
            actor: &actor.audit_name(),
            action: action.as_str(),
            before,
            after,
            occurred_at: now,
        },
    )
    .await
}
