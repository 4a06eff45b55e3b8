//! Credit-funded add-on subscriptions, one per instance: creating,
//! canceling, reading, the trial, the Enterprise opt-out, and renewal.
//!
//! Who may act: the instance's user manages their own; owners, billing
//! managers and operators manage any. Members who are not billing admins
//! see only their own instances, and only their operational state (the
//! adapter leaves out price, balance, dates and user ids).
//!
//! Every change holds the organization's row lock, and every charge the
//! credit account lock after it (always in that order); renewals are in
//! `instance_renewals`.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::audit_trail::{AuditAction, record};
use super::{Actor, Service, lifecycle, load_state, lock_org};
use crate::domain::entitlement::Decision;
use crate::domain::ids::InstanceId;
use crate::domain::ids::{OrgId, UserId};
use crate::domain::instances::{
    InstanceStatus, InstanceSubscription, first_charge, start_instance,
};
use crate::domain::lifecycle::instance_event;
use crate::domain::reason::ErrorReason;
use crate::domain::role::{OrgAction, Role};
use crate::error::{Error, Result};
use crate::store;

#[derive(Debug, Clone)]
pub struct NewInstance {
    pub instance_id: InstanceId,
    pub add_on: String,
    /// Whose instance it is; the acting user when `None`.
    pub user: Option<UserId>,
}

/// An instance subscription as one caller may see it.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub subscription: InstanceSubscription,
    /// The status as of now.
    pub status: InstanceStatus,
    /// Whether the caller may see price, dates and user.
    pub billing_visible: bool,
    /// May the instance be used now, and why.
    pub decision: Decision,
}

/// Owners, billing managers and operators manage every instance.
fn billing_admin(role: Option<Role>) -> bool {
    role.is_none_or(|role| role.permits(OrgAction::ManageBilling))
}

impl Service {
    pub async fn create_instance_subscription(
        &self,
        actor: &Actor,
        org: OrgId,
        new: NewInstance,
    ) -> Result<InstanceView> {
        let add_on = self
            .catalog()
            .add_on(&new.add_on)
            .ok_or_else(|| Error::invalid("add_on", format!("{:?} is not an add-on", new.add_on)))?
            .clone();
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let organization = lock_org(&mut tx, org).await?;
        let role = self.authorize(&mut tx, actor, org, OrgAction::View).await?;
        let user = match (new.user, actor) {
            (Some(user), _) => user,
            (None, Actor::User(user)) => user.clone(),
            (None, Actor::Operator | Actor::Gateway) => {
                return Err(Error::invalid("user_id", "is required for operators"));
            }
        };
        if !billing_admin(role) && Some(&user) != actor.user() {
            return Err(Error::denied(
                ErrorReason::NotOwnResource,
                "members may only create instances of their own",
            ));
        }
        if store::members::role_of(&mut tx, org, &user)
            .await?
            .is_none()
        {
            return Err(Error::precondition(
                ErrorReason::NotAMember,
                format!("user {user} is not a member of organization {org}"),
            ));
        }
        if organization.instances_opted_out {
            return Err(Error::precondition(
                ErrorReason::AddOnSwitchedOff,
                format!(
                    "the organization has switched {} instances off",
                    add_on.display_name
                ),
            ));
        }
        if let Some(existing) = store::instances::get(&mut tx, org, &new.instance_id).await?
            && existing.status != InstanceStatus::Canceled
        {
            // A retried create returns what the first one made.
            if existing.user_id == user && existing.add_on == add_on.id {
                return self.instance_view(&mut tx, existing, role, now).await;
            }
            return Err(Error::exists(
                ErrorReason::InstanceSubscribed,
                format!(
                    "instance {} already has a subscription",
                    new.instance_id.as_str()
                ),
            ));
        }
        let state = load_state(&mut tx, organization, now).await?;
        let access = state.access(now);
        if !access.grants() {
            return Err(Error::precondition(
                ErrorReason::NotEntitled,
                format!(
                    "the organization is not entitled ({}); instances cannot be provisioned",
                    access.describe()
                ),
            ));
        }
        let had_trial = store::instances::had_trial(&mut tx, org, &user, &add_on.id).await?;
        let instance = start_instance(org, new.instance_id, user, &add_on, had_trial, now);
        if instance.trial_end.is_some() {
            store::instances::insert(&mut tx, &instance).await?;
        } else {
            let mut ledger = self.open_ledger(&mut tx, org, now).await?;
            first_charge(&instance, ledger.available(), &add_on.display_name)?;
            // The row first, so a clash with a concurrent create fails
            // before anything is charged (the whole transaction rolls back
            // either way).
            store::instances::insert(&mut tx, &instance).await?;
            super::instance_renewals::charge(&mut tx, &mut ledger, &instance).await?;
        }
        lifecycle::record(&mut tx, Some(org), now, instance_event(None, &instance)).await?;
        record(
            &mut tx,
            org,
            actor,
            AuditAction::InstanceCreated,
            None,
            Some(instance_snapshot(&instance)),
            now,
        )
        .await?;
        let view = self.instance_view(&mut tx, instance, role, now).await?;
        self.commit(tx).await?;
        Ok(view)
    }

    /// Cancels at the period end (the trial end, in a trial), or at once.
    /// Nothing is refunded.
    pub async fn cancel_instance_subscription(
        &self,
        actor: &Actor,
        org: OrgId,
        instance_id: &InstanceId,
        at_once: bool,
    ) -> Result<InstanceView> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        lock_org(&mut tx, org).await?;
        let role = self.authorize(&mut tx, actor, org, OrgAction::View).await?;
        let mut instance = self
            .managed_instance(&mut tx, actor, role, org, instance_id)
            .await?;
        let before = instance_snapshot(&instance);
        let was = instance.status;
        let action = if at_once || instance.status == InstanceStatus::Suspended {
            instance.status = InstanceStatus::Canceled;
            instance.canceled_at = Some(now);
            AuditAction::InstanceCanceled
        } else {
            instance.cancel_at_period_end = true;
            AuditAction::InstanceCancelRequested
        };
        store::instances::update(&mut tx, &instance).await?;
        let ended = instance_event(Some(was), &instance);
        lifecycle::record(&mut tx, Some(org), now, ended).await?;
        record(
            &mut tx,
            org,
            actor,
            action,
            Some(before),
            Some(instance_snapshot(&instance)),
            now,
        )
        .await?;
        let view = self.instance_view(&mut tx, instance, role, now).await?;
        self.commit(tx).await?;
        Ok(view)
    }

    pub async fn get_instance_subscription(
        &self,
        actor: &Actor,
        org: OrgId,
        instance_id: &InstanceId,
    ) -> Result<InstanceView> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        super::load_org(&mut tx, org).await?;
        let role = self.authorize(&mut tx, actor, org, OrgAction::View).await?;
        let instance = store::instances::get(&mut tx, org, instance_id)
            .await?
            .ok_or_else(|| instance_not_found(instance_id))?;
        if !billing_admin(role) && Some(&instance.user_id) != actor.user() {
            return Err(Error::denied(
                ErrorReason::NotOwnResource,
                "members may only read instances of their own",
            ));
        }
        self.instance_view(&mut tx, instance, role, now).await
    }

    /// The organization's instances the caller may see: all of them for
    /// billing admins, a member's own otherwise.
    pub async fn list_instance_subscriptions(
        &self,
        actor: &Actor,
        org: OrgId,
    ) -> Result<Vec<InstanceView>> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let organization = super::load_org(&mut tx, org).await?;
        let role = self.authorize(&mut tx, actor, org, OrgAction::View).await?;
        let only = (!billing_admin(role)).then(|| actor.user()).flatten();
        let instances = store::instances::list(&mut tx, org, only).await?;
        let state = load_state(&mut tx, organization, now).await?;
        Ok(instances
            .into_iter()
            .map(|instance| InstanceView {
                status: instance.status_at(now),
                billing_visible: billing_admin(role),
                decision: state.decide_instance(Some(Role::Member), Some(&instance), now),
                subscription: instance,
            })
            .collect())
    }

    /// Operators: moves a trialing instance's trial end (and so its first
    /// charge). A trial end in the past is renewed by the next sweep.
    pub async fn set_instance_trial_end(
        &self,
        actor: &Actor,
        org: OrgId,
        instance_id: &InstanceId,
        trial_end: DateTime<Utc>,
    ) -> Result<InstanceView> {
        Self::require_operator(actor, "move an instance's trial end")?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        lock_org(&mut tx, org).await?;
        let mut instance = live_instance(&mut tx, org, instance_id).await?;
        if instance.status != InstanceStatus::Trialing {
            return Err(Error::precondition(
                ErrorReason::InstanceNotInTrial,
                format!(
                    "instance {} is {}, not in its trial",
                    instance_id.as_str(),
                    instance.status.as_str()
                ),
            ));
        }
        let before = instance_snapshot(&instance);
        instance.trial_end = Some(trial_end);
        instance.current_period_end = trial_end;
        store::instances::update(&mut tx, &instance).await?;
        record(
            &mut tx,
            org,
            actor,
            AuditAction::InstanceTrialEndSet,
            Some(before),
            Some(instance_snapshot(&instance)),
            now,
        )
        .await?;
        let view = self.instance_view(&mut tx, instance, None, now).await?;
        self.commit(tx).await?;
        Ok(view)
    }

    /// Owners: switches the organization's add-on instances off (or back
    /// on), where the plan allows it.
    pub async fn set_instances_opt_out(
        &self,
        actor: &Actor,
        org: OrgId,
        opted_out: bool,
    ) -> Result<bool> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let mut organization = lock_org(&mut tx, org).await?;
        self.authorize(&mut tx, actor, org, OrgAction::SetInstancePolicy)
            .await?;
        let plan = self.plan_of(&organization)?;
        if !plan.instance_opt_out {
            return Err(Error::precondition(
                ErrorReason::SwitchOffNotAllowed,
                format!(
                    "the {} plan does not let organizations switch instances off",
                    plan.display_name
                ),
            ));
        }
        if organization.instances_opted_out != opted_out {
            let before = json!({ "instances_opted_out": organization.instances_opted_out });
            organization.instances_opted_out = opted_out;
            store::organizations::update_settings(&mut tx, &organization).await?;
            record(
                &mut tx,
                org,
                actor,
                AuditAction::InstancePolicySet,
                Some(before),
                Some(json!({ "instances_opted_out": opted_out })),
                now,
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(opted_out)
    }

    /// The live instance the actor may manage.
    async fn managed_instance(
        &self,
        conn: &mut PgConnection,
        actor: &Actor,
        role: Option<Role>,
        org: OrgId,
        instance_id: &InstanceId,
    ) -> Result<InstanceSubscription> {
        let instance = live_instance(conn, org, instance_id).await?;
        if !billing_admin(role) && Some(&instance.user_id) != actor.user() {
            return Err(Error::denied(
                ErrorReason::NotOwnResource,
                "members may only manage instances of their own",
            ));
        }
        Ok(instance)
    }

    async fn instance_view(
        &self,
        conn: &mut PgConnection,
        instance: InstanceSubscription,
        role: Option<Role>,
        now: DateTime<Utc>,
    ) -> Result<InstanceView> {
        let organization = super::load_org(conn, instance.org_id).await?;
        let state = load_state(conn, organization, now).await?;
        Ok(InstanceView {
            status: instance.status_at(now),
            billing_visible: billing_admin(role),
            decision: state.decide_instance(Some(Role::Member), Some(&instance), now),
            subscription: instance,
        })
    }
}

/// The instance's subscription that has not been canceled.
async fn live_instance(
    conn: &mut PgConnection,
    org: OrgId,
    instance_id: &InstanceId,
) -> Result<InstanceSubscription> {
    store::instances::get(conn, org, instance_id)
        .await?
        .filter(|i| i.status != InstanceStatus::Canceled)
        .ok_or_else(|| instance_not_found(instance_id))
}

fn instance_not_found(instance_id: &InstanceId) -> Error {
    Error::NotFound(format!(
        "instance {} has no subscription",
        instance_id.as_str()
    ))
}

pub(super) fn instance_snapshot(instance: &InstanceSubscription) -> serde_json::Value {
    json!({
        "instance_id": instance.instance_id.as_str(),
        "user_id": instance.user_id.as_str(),
        "add_on": instance.add_on,
        "status": instance.status.as_str(),
        "price_micros": instance.price.get(),
        "trial_end": instance.trial_end,
        "current_period_end": instance.current_period_end,
        "cancel_at_period_end": instance.cancel_at_period_end,
    })
}
