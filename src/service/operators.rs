//! Operator overrides, listings, GDPR erasure and the audit trail.

use chrono::{DateTime, Utc};

use super::audit_trail::{AuditAction, record, snapshot};
use super::lifecycle;
use super::{Actor, OrganizationView, Service, load_org, lock_org};
use crate::domain::ids::{EmailAddress, OrgId, UserId};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::organization::Organization;
use crate::domain::pricing::PlanId;
use crate::domain::role::OrgAction;
use crate::domain::trial::{TrialNotice, TrialStatus};
use crate::error::{Error, Result};
use crate::store::stripe_events::ParkedEvent;
use crate::store::{self, audit::AuditEvent, erasure::ErasureReport};

/// One page of a listing and the cursor of the next (none on the last page).
#[derive(Debug, Clone)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page from up to `page_size + 1` items read: the one past the page
    /// only tells that another page follows.
    pub fn of(mut items: Vec<T>, page_size: i64, cursor: impl Fn(&T) -> C) -> Self {
        let size = usize::try_from(page_size).unwrap_or(0);
        let more = items.len() > size;
        items.truncate(size);
        let next = if more { items.last().map(cursor) } else { None };
        Self { items, next }
    }
}

/// Operator overrides; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct OrganizationOverrides {
    pub require_seats: Option<bool>,
    /// `Some(None)` clears the tier.
    pub sponsorship_tier: Option<Option<String>>,
    pub suppress_trial_messaging: Option<bool>,
    pub plan: Option<PlanId>,
}

impl Service {
    pub async fn list_organizations(
        &self,
        actor: &Actor,
        after: Option<OrgId>,
        page_size: i64,
    ) -> Result<Page<OrganizationView, OrgId>> {
        Self::require_operator(actor, "list organizations")?;
        let mut conn = self.store().pool().acquire().await?;
        let orgs = store::organizations::list_page(&mut conn, after, page_size + 1).await?;
        let page = Page::of(orgs, page_size, |o| o.id);
        let now = self.now();
        let items = page
            .items
            .into_iter()
            .map(|org| self.view(org, now))
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// Applies an operator's change to the organization's settings and audits
    /// it, in one transaction.
    async fn override_settings(
        &self,
        actor: &Actor,
        id: OrgId,
        action: AuditAction,
        change: impl FnOnce(&mut Organization),
    ) -> Result<OrganizationView> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let mut org = lock_org(&mut tx, id).await?;
        let before = snapshot(&org)?;
        let trial_end = org.trial_end;
        change(&mut org);
        store::organizations::update_settings(&mut tx, &org).await?;
        if org.trial_end != trial_end {
            // A trial moved back enters its stages again; look at it now.
            let (considered, _) = store::org_notices::trial_notice(&mut tx, id).await?;
            let status = TrialStatus::at(org.trial_end, now);
            let notice = TrialNotice::after_trial_end_moved(considered, status, now);
            store::org_notices::set_trial_notice(&mut tx, id, &notice).await?;
        }
        // Overrides may exempt the organization from seats, or end that.
        self.recheck_seats(&mut tx, id, now).await?;
        record(
            &mut tx,
            id,
            actor,
            action,
            Some(before),
            Some(snapshot(&org)?),
            now,
        )
        .await?;
        self.commit(tx).await?;
        self.view(org, now)
    }

    /// Moves the trial end, earlier or later.
    pub async fn set_trial_end(
        &self,
        actor: &Actor,
        id: OrgId,
        trial_end: DateTime<Utc>,
    ) -> Result<OrganizationView> {
        Self::require_operator(actor, "move a trial end")?;
        self.override_settings(actor, id, AuditAction::TrialEndSet, |org| {
            org.trial_end = trial_end;
        })
        .await
    }

    pub async fn set_overrides(
        &self,
        actor: &Actor,
        id: OrgId,
        overrides: OrganizationOverrides,
    ) -> Result<OrganizationView> {
        Self::require_operator(actor, "override organization settings")?;
        self.override_settings(actor, id, AuditAction::OverridesSet, |org| {
            if let Some(require_seats) = overrides.require_seats {
                org.require_seats = require_seats;
            }
            if let Some(tier) = overrides.sponsorship_tier {
                org.sponsorship_tier = tier;
            }
            if let Some(suppress) = overrides.suppress_trial_messaging {
                org.suppress_trial_messaging = suppress;
            }
            if let Some(plan) = overrides.plan {
                org.plan = plan;
            }
        })
        .await
    }

    /// GDPR erasure: removes the user's memberships and invitations and
    /// anonymizes the records that must stay.
    pub async fn delete_user_data(
        &self,
        actor: &Actor,
        user: UserId,
        emails: Vec<EmailAddress>,
    ) -> Result<ErasureReport> {
        Self::require_operator(actor, "erase user data")?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let report = store::erasure::erase_user(&mut tx, &user, &emails).await?;
        // The trail of each former organization says that a member was
        // erased, without saying who; so do its lifecycle events.
        for &(org, previous_role) in &report.former_orgs {
            record(
                &mut tx,
                org,
                actor,
                AuditAction::UserErased,
                None,
                None,
                now,
            )
            .await?;
            let removed = LifecycleEvent::MemberRemoved {
                user: None,
                previous_role,
                removed_by: actor.audit_name(),
            };
            lifecycle::record(&mut tx, Some(org), now, [removed]).await?;
            self.recheck_seats(&mut tx, org, now).await?;
        }
        for instance in &report.ended_instances {
            let ended = LifecycleEvent::InstanceCanceled(instance.clone());
            lifecycle::record(&mut tx, Some(instance.org_id), now, [ended]).await?;
        }
        self.commit(tx).await?;
        Ok(report)
    }

    /// Newest first.
    pub async fn list_audit_events(
        &self,
        actor: &Actor,
        org_id: OrgId,
        before_id: Option<i64>,
        page_size: i64,
    ) -> Result<Page<AuditEvent, i64>> {
        let mut conn = self.store().pool().acquire().await?;
        // The trail outlives the organization, so operators may read the
        // trail of a deleted one; members need a live organization.
        if *actor != Actor::Operator {
            load_org(&mut conn, org_id).await?;
        }
        self.authorize(&mut conn, actor, org_id, OrgAction::ViewAuditTrail)
            .await?;
        let events = store::audit::list_page(&mut conn, org_id, before_id, page_size + 1).await?;
        let page = Page::of(events, page_size, |e| e.id);
        if page.items.is_empty() && before_id.is_none() && *actor == Actor::Operator {
            // Distinguish "no such organization ever" from an empty trail.
            return Err(Error::NotFound(format!(
                "organization {org_id} has no audit trail"
            )));
        }
        Ok(page)
    }
}

impl Service {
    /// Webhook events that failed every attempt, oldest first.
    pub async fn list_parked_stripe_events(
        &self,
        actor: &Actor,
        limit: i64,
    ) -> Result<Vec<ParkedEvent>> {
        Self::require_operator(actor, "list parked Stripe events")?;
        let mut conn = self.store().pool().acquire().await?;
        store::stripe_events::list_parked(&mut conn, limit).await
    }

    /// Puts a parked event back in the inbox with a fresh set of attempts.
    pub async fn retry_stripe_event(&self, actor: &Actor, event_id: &str) -> Result<()> {
        Self::require_operator(actor, "retry Stripe events")?;
        if event_id.is_empty() || event_id.len() > 255 {
            return Err(Error::invalid("event_id", "must be a Stripe event id"));
        }
        let mut conn = self.store().pool().acquire().await?;
        if store::stripe_events::retry_parked(&mut conn, event_id, self.now()).await? {
            tracing::info!(%event_id, "parked Stripe event put back in the inbox");
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "no parked Stripe event {event_id}"
            )))
        }
    }
}
