//! Creating, reading, restricting and deleting organizations.

use chrono::{DateTime, Utc};

use super::audit_trail::{AuditAction, record, snapshot};
use super::lifecycle;
use super::{Actor, Service, load_org, load_state, lock_org};
use crate::domain::ids::{IdempotencyKey, OrgId, UserId};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::membership::Membership;
use crate::domain::organization::{ModelRestrictions, Organization, OrganizationName};
use crate::domain::pricing::PlanId;
use crate::domain::reason::ErrorReason;
use crate::domain::role::{OrgAction, Role};
use crate::domain::trial::{TrialNotice, TrialStatus};
use crate::error::{Error, Result};
use crate::store;

/// A validated request to create an organization.
#[derive(Debug, Clone)]
pub struct NewOrganization {
    pub name: OrganizationName,
    /// `None` means the acting user.
    pub creator: Option<UserId>,
    /// `None` means the catalog's default plan.
    pub plan: Option<PlanId>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// An organization with what depends on the time and the catalog.
#[derive(Debug, Clone)]
pub struct OrganizationView {
    pub org: Organization,
    pub trial: TrialStatus,
    pub restrictions_enforced: bool,
}

impl Service {
    pub(super) fn view(&self, org: Organization, now: DateTime<Utc>) -> Result<OrganizationView> {
        let restrictions_enforced = self.plan_of(&org)?.enforces_model_restrictions;
        Ok(OrganizationView {
            trial: TrialStatus::at(org.trial_end, now),
            restrictions_enforced,
            org,
        })
    }

    /// Creates an organization whose creator becomes its owner; the trial
    /// starts now.
    pub async fn create_organization(
        &self,
        actor: &Actor,
        request: NewOrganization,
    ) -> Result<OrganizationView> {
        let creator = match (actor, request.creator) {
            (Actor::User(acting), None) => acting.clone(),
            (Actor::User(acting), Some(creator)) if &creator == acting => creator,
            (Actor::User(_), Some(_)) => {
                return Err(Error::denied(
                    ErrorReason::NotOwnResource,
                    "users may only create organizations for themselves",
                ));
            }
            (Actor::Operator, Some(creator)) => creator,
            (Actor::Operator, None) => {
                return Err(Error::invalid(
                    "creator_user_id",
                    "is required when an operator creates an organization",
                ));
            }
            (Actor::Gateway, _) => {
                return Err(Error::denied(
                    ErrorReason::CallerNotPermitted,
                    "the gateway may not create organizations",
                ));
            }
        };
        let now = self.now();
        let org = Organization {
            id: OrgId::generate(),
            name: request.name.as_str().to_owned(),
            plan: request
                .plan
                .unwrap_or_else(|| self.catalog().default_plan().clone()),
            trial_end: self.inner.settings.trial_length.end_for_start(now),
            require_seats: true,
            sponsorship_tier: None,
            suppress_trial_messaging: false,
            instances_opted_out: false,
            restrictions: ModelRestrictions::default(),
            created_at: now,
        };
        let mut tx = self.store().begin().await?;
        let key = request.idempotency_key.as_ref().map(IdempotencyKey::as_str);
        let (org, created) = store::organizations::insert(&mut tx, &org, &creator, key).await?;
        if created {
            let owner = Membership {
                org_id: org.id,
                user_id: creator,
                role: Role::Owner,
                joined_at: now,
            };
            store::members::insert_member(&mut tx, &owner).await?;
            let trial = TrialStatus::at(org.trial_end, now);
            store::org_notices::set_trial_notice(&mut tx, org.id, &TrialNotice::new_trial(trial))
                .await?;
            let created = LifecycleEvent::OrganizationCreated {
                name: org.name.clone(),
                plan: org.plan.clone(),
                created_by: Some(owner.user_id.clone()),
                trial_end: org.trial_end,
            };
            lifecycle::record(&mut tx, Some(org.id), now, [created]).await?;
            let after =
                serde_json::json!({ "organization": snapshot(&org)?, "owner": snapshot(&owner)? });
            record(
                &mut tx,
                org.id,
                actor,
                AuditAction::OrganizationCreated,
                None,
                Some(after),
                now,
            )
            .await?;
        }
        self.commit(tx).await?;
        self.view(org, now)
    }

    pub async fn get_organization(&self, actor: &Actor, id: OrgId) -> Result<OrganizationView> {
        let mut conn = self.store().pool().acquire().await?;
        let org = load_org(&mut conn, id).await?;
        self.authorize(&mut conn, actor, id, OrgAction::View)
            .await?;
        self.view(org, self.now())
    }

    pub async fn set_model_restrictions(
        &self,
        actor: &Actor,
        id: OrgId,
        restrictions: ModelRestrictions,
    ) -> Result<OrganizationView> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let mut org = lock_org(&mut tx, id).await?;
        self.authorize(&mut tx, actor, id, OrgAction::SetModelRestrictions)
            .await?;
        let before = snapshot(&org.restrictions)?;
        org.restrictions = restrictions;
        store::organizations::update_settings(&mut tx, &org).await?;
        let after = snapshot(&org.restrictions)?;
        record(
            &mut tx,
            id,
            actor,
            AuditAction::ModelRestrictionsSet,
            Some(before),
            Some(after),
            now,
        )
        .await?;
        self.commit(tx).await?;
        self.view(org, now)
    }

    /// Soft-deletes the organization, refused while a subscription that has
    /// not ended exists: Stripe would keep charging for it.
    pub async fn delete_organization(&self, actor: &Actor, id: OrgId) -> Result<()> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let org = lock_org(&mut tx, id).await?;
        self.authorize(&mut tx, actor, id, OrgAction::DeleteOrganization)
            .await?;
        let state = load_state(&mut tx, org, now).await?;
        if let Some(live) = state.subscriptions.iter().find(|s| !s.is_over(now)) {
            return Err(Error::precondition(
                ErrorReason::SubscriptionNotEnded,
                format!(
                    "organization {id} has a subscription that has not ended ({}, status {}); cancel it and wait for it to end first",
                    live.stripe_subscription_id, live.status_raw
                ),
            ));
        }
        store::members::delete_all_members(&mut tx, id).await?;
        store::members::revoke_all_invitations(&mut tx, id, now).await?;
        store::organizations::mark_deleted(&mut tx, id, now).await?;
        let before = snapshot(&state.org)?;
        record(
            &mut tx,
            id,
            actor,
            AuditAction::OrganizationDeleted,
            Some(before),
            None,
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(())
    }
}
