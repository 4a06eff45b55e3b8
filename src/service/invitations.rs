//! Invitations: inviting (within the seat rule), accepting, revoking and
//! listing them.

use super::audit_trail::{AuditAction, record, snapshot};
use super::lifecycle;
use super::members::member_not_found;
use super::{Actor, Service, lock_org};
use crate::domain::ids::{EmailAddress, InvitationId, OrgId, UserId};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::membership::{Invitation, InvitationState, Membership};
use crate::domain::reason::ErrorReason;
use crate::domain::role::{OrgAction, Role};
use crate::error::{Error, Result};
use crate::store;

fn invitation_not_found(id: InvitationId) -> Error {
    Error::NotFound(format!("invitation {id} not found"))
}

impl Service {
    pub async fn invite_member(
        &self,
        actor: &Actor,
        org_id: OrgId,
        email: EmailAddress,
        role: Role,
    ) -> Result<Invitation> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let org = lock_org(&mut tx, org_id).await?;
        self.authorize(&mut tx, actor, org_id, OrgAction::Invite(role))
            .await?;
        store::members::close_expired_invitations(&mut tx, org_id, &email, now).await?;
        if role.takes_seat() {
            self.admit_seats(&mut tx, org, 1).await?;
        }
        let invitation = Invitation {
            id: InvitationId::generate(),
            org_id,
            email,
            role,
            invited_by: actor.audit_name(),
            created_at: now,
            expires_at: now + Invitation::TIME_TO_LIVE,
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        };
        store::members::insert_invitation(&mut tx, &invitation).await?;
        let invited = LifecycleEvent::MemberInvited(invitation.clone());
        lifecycle::record(&mut tx, Some(org_id), now, [invited]).await?;
        let after = snapshot(&invitation)?;
        record(
            &mut tx,
            org_id,
            actor,
            AuditAction::MemberInvited,
            None,
            Some(after),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(invitation)
    }

    /// Turns an invitation into a membership and clears any removal record of
    /// the user. Accepting again as the same user returns the membership.
    pub async fn accept_invitation(
        &self,
        actor: &Actor,
        id: InvitationId,
        user: UserId,
    ) -> Result<Membership> {
        match actor {
            Actor::Operator => {}
            Actor::User(acting) if acting == &user => {}
            Actor::User(_) | Actor::Gateway => {
                return Err(Error::denied(
                    ErrorReason::NotOwnResource,
                    "an invitation can only be accepted by the user who joins",
                ));
            }
        }
        let now = self.now();
        let mut tx = self.store().begin().await?;
        // Lock the organization before the invitation, in the order
        // InviteMember takes them, so the two cannot deadlock.
        let org_id = store::members::lock_invitation(&mut tx, id)
            .await?
            .ok_or_else(|| invitation_not_found(id))?
            .org_id;
        let org = lock_org(&mut tx, org_id).await?;
        let invitation = store::members::lock_invitation(&mut tx, id)
            .await?
            .ok_or_else(|| invitation_not_found(id))?;
        match invitation.state(now) {
            InvitationState::Pending => {}
            InvitationState::Accepted if invitation.accepted_by.as_ref() == Some(&user) => {
                return store::members::get_member(&mut tx, org_id, &user)
                    .await?
                    .ok_or_else(|| member_not_found(org_id, &user));
            }
            InvitationState::Accepted => {
                return Err(Error::precondition(
                    ErrorReason::InvitationAccepted,
                    format!("invitation {id} was already accepted by another user"),
                ));
            }
            InvitationState::Revoked => {
                return Err(Error::precondition(
                    ErrorReason::InvitationRevoked,
                    format!("invitation {id} was revoked"),
                ));
            }
            InvitationState::Expired => {
                return Err(Error::precondition(
                    ErrorReason::InvitationExpired,
                    format!(
                        "invitation {id} expired at {}",
                        invitation.expires_at.to_rfc3339()
                    ),
                ));
            }
        }
        if store::members::get_member(&mut tx, org_id, &user)
            .await?
            .is_some()
        {
            return Err(Error::precondition(
                ErrorReason::AlreadyAMember,
                format!(
                    "user {user} is already a member of organization {org_id}; change their role instead"
                ),
            ));
        }
        if invitation.role.takes_seat() {
            // The pending invitation already holds its seat: accepting adds
            // none, but is refused while the organization is over its seats.
            self.admit_seats(&mut tx, org, 0).await?;
        }
        let member = Membership {
            org_id,
            user_id: user,
            role: invitation.role,
            joined_at: now,
        };
        store::members::insert_member(&mut tx, &member).await?;
        store::members::mark_accepted(&mut tx, id, &member.user_id, now).await?;
        let cleared = store::members::clear_removal(&mut tx, org_id, &member.user_id).await?;
        let joined = LifecycleEvent::MemberJoined {
            user: member.user_id.clone(),
            role: member.role,
            invitation: id,
        };
        lifecycle::record(&mut tx, Some(org_id), now, [joined]).await?;
        let before = snapshot(&invitation)?;
        let after =
            serde_json::json!({ "member": snapshot(&member)?, "removal_record_cleared": cleared });
        record(
            &mut tx,
            org_id,
            actor,
            AuditAction::InvitationAccepted,
            Some(before),
            Some(after),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(member)
    }

    /// Revokes a pending (or expired) invitation; revoking twice is a no-op.
    pub async fn revoke_invitation(
        &self,
        actor: &Actor,
        org_id: OrgId,
        id: InvitationId,
    ) -> Result<Invitation> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        lock_org(&mut tx, org_id).await?;
        self.authorize(&mut tx, actor, org_id, OrgAction::RevokeInvitation)
            .await?;
        let mut invitation = store::members::lock_invitation(&mut tx, id)
            .await?
            .filter(|i| i.org_id == org_id)
            .ok_or_else(|| invitation_not_found(id))?;
        match invitation.state(now) {
            InvitationState::Revoked => return Ok(invitation),
            InvitationState::Accepted => {
                return Err(Error::precondition(
                    ErrorReason::InvitationAccepted,
                    format!("invitation {id} was already accepted; remove the member instead"),
                ));
            }
            InvitationState::Pending | InvitationState::Expired => {}
        }
        let before = snapshot(&invitation)?;
        store::members::mark_revoked(&mut tx, id, now).await?;
        invitation.revoked_at = Some(now);
        self.recheck_seats(&mut tx, org_id, now).await?;
        let after = snapshot(&invitation)?;
        record(
            &mut tx,
            org_id,
            actor,
            AuditAction::InvitationRevoked,
            Some(before),
            Some(after),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(invitation)
    }

    pub async fn list_invitations(
        &self,
        actor: &Actor,
        org_id: OrgId,
        include_closed: bool,
    ) -> Result<Vec<Invitation>> {
        let mut conn = self.store().pool().acquire().await?;
        super::load_org(&mut conn, org_id).await?;
        self.authorize(&mut conn, actor, org_id, OrgAction::Invite(Role::Member))
            .await?;
        store::members::list_invitations(&mut conn, org_id, include_closed, self.now()).await
    }
}
