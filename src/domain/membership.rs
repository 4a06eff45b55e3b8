//! Members, invitations and removal records.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::ids::{EmailAddress, InvitationId, OrgId, UserId};
use super::role::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    pub id: InvitationId,
    pub org_id: OrgId,
    pub email: EmailAddress,
    pub role: Role,
    pub invited_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub accepted_by: Option<UserId>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationState {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

impl Invitation {
    /// How long an invitation stays open.
    pub const TIME_TO_LIVE: TimeDelta = TimeDelta::days(7);

    pub fn state(&self, now: DateTime<Utc>) -> InvitationState {
        if self.accepted_at.is_some() {
            InvitationState::Accepted
        } else if self.revoked_at.is_some() {
            InvitationState::Revoked
        } else if now >= self.expires_at {
            InvitationState::Expired
        } else {
            InvitationState::Pending
        }
    }
}

/// Written when a member is removed. It keeps a later Stripe event from
/// re-adding the user as owner; accepting a new invitation clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovalRecord {
    pub org_id: OrgId,
    /// An erased user's records keep a random pseudonym here.
    pub user_id: String,
    pub removed_at: DateTime<Utc>,
    pub removed_by: String,
    pub previous_role: Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitation_states() {
        let now = Utc::now();
        let mut invitation = Invitation {
            id: InvitationId::generate(),
            org_id: OrgId::generate(),
            email: EmailAddress::parse("a@example.com").unwrap(),
            role: Role::Member,
            invited_by: "user:u1".into(),
            created_at: now,
            expires_at: now + Invitation::TIME_TO_LIVE,
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        };
        assert_eq!(invitation.state(now), InvitationState::Pending);
        assert_eq!(
            invitation.state(invitation.expires_at),
            InvitationState::Expired
        );
        invitation.revoked_at = Some(now);
        assert_eq!(invitation.state(now), InvitationState::Revoked);
        invitation.revoked_at = None;
        invitation.accepted_at = Some(now);
        assert_eq!(invitation.state(now), InvitationState::Accepted);
    }
}
