//! Invitations, members, roles, removals and seat usage.

use sqlx::PgConnection;

use super::audit_trail::{AuditAction, record, snapshot};
use super::lifecycle;
use super::{Actor, Service, load_state, lock_org};
use crate::domain::ids::{EmailAddress, InvitationId, OrgId, UserId};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::membership::{Invitation, InvitationState, Membership, RemovalRecord};
use crate::domain::organization::Organization;
use crate::domain::reason::{ErrorReason, Refused};
use crate::domain::role::{OrgAction, Role};
use crate::domain::seats::SeatUsage;
use crate::error::{Error, Result};
use crate::store;

/// Members with the seat usage they make up.
#[derive(Debug, Clone)]
pub struct MembersView {
    pub members: Vec<Membership>,
    pub seat_usage: SeatUsage,
}

fn member_not_found(org: OrgId, user: &UserId) -> Error {
    Error::NotFound(format!("user {user} is not a member of organization {org}"))
}

fn invitation_not_found(id: InvitationId) -> Error {
    Error::NotFound(format!("invitation {id} not found"))
}

impl Service {
    async fn seat_usage_locked(
        &self,
        conn: &mut PgConnection,
        org: Organization,
    ) -> Result<SeatUsage> {
        let now = self.now();
        Ok(load_state(conn, org, now).await?.seat_usage(now))
    }

    /// Refuses with FAILED_PRECONDITION unless `extra` more seats fit the
    /// seat rule, so nothing admitted here is then denied as over seats.
    async fn admit_seats(
        &self,
        conn: &mut PgConnection,
        org: Organization,
        extra: i64,
    ) -> Result<()> {
        self.seat_usage_locked(conn, org)
            .await?
            .admit(extra)
            .map_err(|exhausted| {
                Error::FailedPrecondition(
                    Refused::new(ErrorReason::SeatsExhausted, exhausted.to_string())
                        .with("seatsUsed", exhausted.used_after - extra)
                        .with("seatsPaid", exhausted.paid)
                        .with("seatsRequested", extra),
                )
            })
    }

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

    pub async fn list_members(&self, actor: &Actor, org_id: OrgId) -> Result<MembersView> {
        let mut tx = self.store().begin().await?;
        let org = super::load_org(&mut tx, org_id).await?;
        self.authorize(&mut tx, actor, org_id, OrgAction::View)
            .await?;
        let members = store::members::list_members(&mut tx, org_id).await?;
        let seat_usage = self.seat_usage_locked(&mut tx, org).await?;
        Ok(MembersView {
            members,
            seat_usage,
        })
    }

    pub async fn seat_usage(&self, actor: &Actor, org_id: OrgId) -> Result<SeatUsage> {
        let mut tx = self.store().begin().await?;
        let org = super::load_org(&mut tx, org_id).await?;
        self.authorize(&mut tx, actor, org_id, OrgAction::View)
            .await?;
        self.seat_usage_locked(&mut tx, org).await
    }

    pub async fn update_member_role(
        &self,
        actor: &Actor,
        org_id: OrgId,
        user: UserId,
        role: Role,
    ) -> Result<Membership> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let org = lock_org(&mut tx, org_id).await?;
        self.authorize(&mut tx, actor, org_id, OrgAction::ChangeRoles)
            .await?;
        let member = store::members::get_member(&mut tx, org_id, &user)
            .await?
            .ok_or_else(|| member_not_found(org_id, &user))?;
        if member.role == role {
            return Ok(member);
        }
        if member.role == Role::Owner && store::members::count_owners(&mut tx, org_id).await? == 1 {
            return Err(Error::precondition(
                ErrorReason::LastOwner,
                "the last owner cannot change role; make another member owner first",
            ));
        }
        if role.takes_seat() && !member.role.takes_seat() {
            self.admit_seats(&mut tx, org, 1).await?;
        }
        store::members::update_role(&mut tx, org_id, &user, role).await?;
        self.recheck_seats(&mut tx, org_id, now).await?;
        let updated = Membership {
            role,
            ..member.clone()
        };
        record(
            &mut tx,
            org_id,
            actor,
            AuditAction::MemberRoleChanged,
            Some(snapshot(&member)?),
            Some(snapshot(&updated)?),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(updated)
    }

    /// Removes a member (members may remove themselves) and writes the
    /// removal record that keeps Stripe events from re-adding them as owner.
    pub async fn remove_member(
        &self,
        actor: &Actor,
        org_id: OrgId,
        user: UserId,
    ) -> Result<RemovalRecord> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        lock_org(&mut tx, org_id).await?;
        let leaving_by_choice = matches!(actor, Actor::User(acting) if acting == &user);
        let action = if leaving_by_choice {
            OrgAction::View
        } else {
            OrgAction::RemoveMembers
        };
        self.authorize(&mut tx, actor, org_id, action).await?;
        let member = store::members::get_member(&mut tx, org_id, &user)
            .await?
            .ok_or_else(|| member_not_found(org_id, &user))?;
        if member.role == Role::Owner && store::members::count_owners(&mut tx, org_id).await? == 1 {
            return Err(Error::precondition(
                ErrorReason::LastOwner,
                "the last owner cannot be removed; make another member owner first",
            ));
        }
        store::members::delete_member(&mut tx, org_id, &user).await?;
        let removal = RemovalRecord {
            org_id,
            user_id: user.as_str().to_owned(),
            removed_at: now,
            removed_by: actor.audit_name(),
            previous_role: member.role,
        };
        store::members::upsert_removal(&mut tx, &removal).await?;
        let removed = LifecycleEvent::MemberRemoved {
            user: Some(user.clone()),
            previous_role: member.role,
            removed_by: removal.removed_by.clone(),
        };
        lifecycle::record(&mut tx, Some(org_id), now, [removed]).await?;
        self.recheck_seats(&mut tx, org_id, now).await?;
        record(
            &mut tx,
            org_id,
            actor,
            AuditAction::MemberRemoved,
            Some(snapshot(&member)?),
            Some(snapshot(&removal)?),
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(removal)
    }

    pub async fn list_removal_records(
        &self,
        actor: &Actor,
        org_id: OrgId,
    ) -> Result<Vec<RemovalRecord>> {
        let mut conn = self.store().pool().acquire().await?;
        super::load_org(&mut conn, org_id).await?;
        self.authorize(&mut conn, actor, org_id, OrgAction::ViewAuditTrail)
            .await?;
        store::members::list_removals(&mut conn, org_id).await
    }
}
