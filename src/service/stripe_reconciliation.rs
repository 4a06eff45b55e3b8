//! Drift reconciliation: every subscription Stripe lists is read again and
//! compared with what we store (`domain::stripe_reconciliation`); drift is
//! repaired by syncing, through the same ticketed path as an event. No
//! transaction or connection is held while Stripe is read.

use std::collections::HashSet;

use super::{Actor, Service};
use crate::domain::ids::OrgId;
use crate::domain::stripe_reconciliation::{Finding, compare};
use crate::error::{Error, Result};
use crate::store;
use crate::stripe::subscription_list::ListedSubscription;

/// What to reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReconcileScope {
    /// One organization's subscriptions, or every one in the account.
    pub org: Option<OrgId>,
    /// Report drift without repairing it.
    pub dry_run: bool,
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconcileReport {
    /// Subscriptions of our organizations compared.
    pub checked: usize,
    pub in_sync: usize,
    /// Each drifted subscription, with the fields that differed.
    pub drifted: Vec<(String, Vec<&'static str>)>,
    /// Drifted subscriptions stored anew (none in a dry run).
    pub repaired: usize,
    /// Subscriptions Stripe lists that belong to no organization of ours.
    pub unknown_at_stripe: usize,
    /// Subscriptions we store that Stripe does not know.
    pub missing_at_stripe: Vec<String>,
    /// Credited purchases read back from Stripe this run (verified ones are
    /// not read again).
    pub purchases_checked: usize,
    pub purchases_verified: usize,
    /// Purchases Stripe does not know or that differ from what we credited.
    pub flagged_purchases: Vec<FlaggedPurchase>,
}

/// A credited purchase that does not match Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlaggedPurchase {
    pub org: OrgId,
    pub payment_id: String,
    pub reason: String,
}

impl Service {
    /// Reconciles on an operator's behalf.
    pub async fn reconcile_stripe(
        &self,
        actor: &Actor,
        scope: ReconcileScope,
    ) -> Result<ReconcileReport> {
        Self::require_operator(actor, "reconcile with Stripe")?;
        self.run_stripe_reconciliation(scope).await
    }

    /// The periodic pass: repairs every subscription, unless another replica
    /// runs one now or ran one within `interval`. `None` when skipped.
    pub async fn reconcile_stripe_if_due(
        &self,
        interval: chrono::TimeDelta,
    ) -> Result<Option<ReconcileReport>> {
        let now = self.now();
        let claimed = {
            let mut conn = self.store().pool().acquire().await?;
            store::stripe_reconciliation::claim(&mut conn, now, now - interval, now + interval)
                .await?
        };
        if !claimed {
            return Ok(None);
        }
        let report = self
            .run_stripe_reconciliation(ReconcileScope::default())
            .await;
        let mut conn = self.store().pool().acquire().await?;
        let ran_at = report.is_ok().then_some(now);
        store::stripe_reconciliation::release(&mut conn, ran_at).await?;
        report.map(Some)
    }

    /// Compares every subscription in `scope` with Stripe and, unless it is
    /// a dry run, repairs what drifted.
    pub async fn run_stripe_reconciliation(
        &self,
        scope: ReconcileScope,
    ) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let listed = self.listed_subscriptions(scope.org).await?;
        for subscription in &listed {
            let org = {
                let mut conn = self.store().pool().acquire().await?;
                self.org_for(
                    &mut conn,
                    &subscription.id,
                    Some(&subscription.customer_id),
                    subscription.org_id,
                )
                .await?
            };
            match org {
                Some(org) if scope.org.is_none_or(|only| only == org) => {
                    self.reconcile_one(org, &subscription.id, scope.dry_run, &mut report)
                        .await?;
                }
                Some(_) => {}
                None => report.unknown_at_stripe += 1,
            }
        }
        let listed_ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        let stored = {
            let mut conn = self.store().pool().acquire().await?;
            let only = scope.org.map(|org| vec![org.as_uuid()]);
            store::subscriptions::list_for_orgs(&mut conn, only.as_deref()).await?
        };
        for (_, subscription) in stored {
            if !listed_ids.contains(subscription.stripe_subscription_id.as_str()) {
                report
                    .missing_at_stripe
                    .push(subscription.stripe_subscription_id);
            }
        }
        self.check_credit_purchases(scope, &mut report).await?;
        tracing::info!(
            dry_run = scope.dry_run,
            checked = report.checked,
            in_sync = report.in_sync,
            drifted = report.drifted.len(),
            repaired = report.repaired,
            unknown_at_stripe = report.unknown_at_stripe,
            missing_at_stripe = report.missing_at_stripe.len(),
            purchases_checked = report.purchases_checked,
            purchases_flagged = report.flagged_purchases.len(),
            "reconciled with Stripe"
        );
        for id in &report.missing_at_stripe {
            tracing::warn!(subscription = %id, "a subscription we store is not in Stripe");
        }
        Ok(report)
    }

    /// Every subscription Stripe lists in scope, page by page.
    async fn listed_subscriptions(&self, org: Option<OrgId>) -> Result<Vec<ListedSubscription>> {
        let stripe = self.stripe()?;
        let customer = match org {
            None => None,
            Some(org) => {
                let mut conn = self.store().pool().acquire().await?;
                match store::organizations::stripe_customer(&mut conn, org).await? {
                    Some(customer) => Some(customer),
                    // Never a customer, so nothing in Stripe to compare.
                    None => return Ok(Vec::new()),
                }
            }
        };
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = stripe
                .list_subscriptions(customer.as_deref(), after.as_deref())
                .await?;
            let last = page.subscriptions.last().map(|s| s.id.clone());
            listed.extend(page.subscriptions);
            match last {
                Some(last) if page.has_more => after = Some(last),
                Some(_) | None => return Ok(listed),
            }
        }
    }

    async fn reconcile_one(
        &self,
        org: OrgId,
        subscription_id: &str,
        dry_run: bool,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        // Taken before the read, so a newer sync meanwhile wins over ours.
        // A dry run writes nothing, so it takes none: a ticket it did not
        // use would make an event's sync under way discard its reading.
        let ticket = match dry_run {
            true => None,
            false => Some(self.sync_ticket(subscription_id).await?),
        };
        let live = match self.stripe()?.subscription(subscription_id).await {
            Ok(live) => live,
            // Gone between the listing and the read: the next run sees it.
            Err(Error::NotFound(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        report.checked += 1;
        let finding = {
            let mut conn = self.store().pool().acquire().await?;
            let organization = store::organizations::get(&mut conn, org)
                .await?
                .ok_or_else(|| super::org_not_found(org))?;
            let known = store::subscriptions::list_for_org(&mut conn, org).await?;
            let (stored, synced) = self.synced(&known, &organization.plan, &live, self.now());
            compare(stored, &synced)
        };
        match finding {
            Finding::InSync => report.in_sync += 1,
            Finding::Drifted(fields) => {
                tracing::warn!(%org, subscription = %subscription_id, ?fields, dry_run, "a subscription drifted from Stripe");
                report.drifted.push((subscription_id.to_owned(), fields));
                if let Some(ticket) = ticket {
                    self.store_live_alone(org, &live, ticket, "a repair")
                        .await?;
                    report.repaired += 1;
                }
            }
        }
        Ok(())
    }
}
