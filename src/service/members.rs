//! Members, roles, removals and seat usage (invitations are in
//! `invitations`).

use sqlx::PgConnection;

use super::audit_trail::{AuditAction, record, snapshot};
use super::lifecycle;
use super::{Actor, Service, load_state, lock_org};
use crate::domain::ids::{OrgId, UserId};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::membership::{Membership, RemovalRecord};
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

pub(super) fn member_not_found(org: OrgId, user: &UserId) -> Error {
    Error::NotFound(format!("user {user} is not a member of organization {org}"))
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
    pub(super) async fn admit_seats(
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
