//! Upkeep: what a sync found that we must change at Stripe (the rules are
//! `domain::upkeep`), run as an operation on the organization's lane once
//! the lane is free. It reads every running subscription live, so it is
//! right however many syncs queued it.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Service;
use super::audit_trail::{AuditAction, record_as};
use super::operations::{Claim, StoredPlan};
use super::subscription_sync::AfterSync;
use crate::domain::operation::Step;
use crate::domain::subscription_sync::ProviderSubscription;
use crate::domain::upkeep::{
    Duplicate, ReportedCount, UnitSync, UpkeepPlan, plan_upkeep, split_duplicates,
};
use crate::error::{Error, Result};
use crate::store;

/// What finishing an upkeep needs besides its steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UpkeepContext {
    keeper: Option<String>,
    canceled: Vec<String>,
    unit_items: Vec<(String, i64, bool)>,
    realigned: bool,
}

impl Service {
    pub(super) async fn run_upkeep(&self, mut claim: Claim) -> Result<()> {
        let plan = match claim.plan::<UpkeepContext>()? {
            Some(plan) => plan,
            None => {
                let planned = match self.plan_upkeep(&claim).await {
                    Ok(planned) => planned,
                    Err(error) => return Err(self.forget(&claim, error).await),
                };
                let plan = StoredPlan {
                    steps: planned.1.steps.clone(),
                    context: context(planned.0.as_ref(), &planned.1),
                };
                if !planned.1.unpriced.is_empty() {
                    tracing::warn!(org = %claim.org, items = ?planned.1.unpriced, "per-unit items without a Stripe price on the subscription's cycle were left alone");
                }
                if !self.store_plan(&mut claim, &plan, None).await? {
                    return Ok(());
                }
                plan
            }
        };
        // With nothing to send Stripe is as the sync that queued this read
        // it, so only the bookkeeping below remains.
        let touched: Vec<&str> = if plan.steps.is_empty() {
            Vec::new()
        } else {
            plan.context
                .keeper
                .iter()
                .chain(&plan.context.canceled)
                .map(String::as_str)
                .collect()
        };
        let mut tickets = Vec::with_capacity(touched.len());
        for id in &touched {
            tickets.push(self.sync_ticket(id).await?);
        }
        let mut results = Vec::new();
        if let Err(failure) = self
            .perform_steps(&claim, &plan.steps, 0, &mut results)
            .await
        {
            return Err(self.fail_or_postpone(&claim, failure).await);
        }
        let stripe = self.stripe()?;
        let mut lives: Vec<ProviderSubscription> = Vec::with_capacity(touched.len());
        for id in &touched {
            lives.push(stripe.subscription(id).await?);
        }
        let now = self.now();
        let mut tx = self.store().begin().await?;
        if !self
            .finish_operation(&mut tx, &claim, Ok(&json!({})))
            .await?
        {
            return Ok(());
        }
        for (live, ticket) in lives.iter().zip(&tickets) {
            self.store_reading(&mut tx, claim.org, live, Some(*ticket), AfterSync::NoUpkeep)
                .await?;
        }
        for canceled in &plan.context.canceled {
            let refunded: Vec<&str> = plan
                .steps
                .iter()
                .filter_map(|step| match step {
                    Step::Refund { payment_intent_id } => Some(payment_intent_id.as_str()),
                    _ => None,
                })
                .collect();
            record_as(
                &mut tx,
                claim.org,
                &claim.actor,
                AuditAction::DuplicateSubscriptionCanceled,
                None,
                Some(json!({ "stripe_subscription_id": canceled, "refunded_payments": refunded })),
                now,
            )
            .await?;
        }
        if let Some(keeper) = &plan.context.keeper {
            for (item, quantity, changed) in &plan.context.unit_items {
                store::usage_quantities::mark_synced(&mut tx, claim.org, item, keeper, *quantity)
                    .await?;
                if *changed {
                    record_as(
                        &mut tx,
                        claim.org,
                        &claim.actor,
                        AuditAction::UsageQuantityReported,
                        None,
                        Some(json!({ "item": item, "quantity": quantity, "stripe_subscription_id": keeper })),
                        now,
                    )
                    .await?;
                }
            }
            if plan.context.realigned {
                record_as(
                    &mut tx,
                    claim.org,
                    &claim.actor,
                    AuditAction::BillingCycleChangeRealigned,
                    None,
                    Some(json!({ "stripe_subscription_id": keeper })),
                    now,
                )
                .await?;
            }
        }
        self.commit(tx).await?;
        Ok(())
    }

    /// Reads every running subscription of the organization live, with the
    /// payments of any duplicate, and plans.
    async fn plan_upkeep(
        &self,
        claim: &Claim,
    ) -> Result<(Option<ProviderSubscription>, UpkeepPlan)> {
        let now = self.now();
        let (running, reported) = {
            let mut conn = self.store().pool().acquire().await?;
            let running: Vec<String> = store::subscriptions::list_for_org(&mut conn, claim.org)
                .await?
                .into_iter()
                .filter(|s| !s.is_over(now))
                .map(|s| s.stripe_subscription_id)
                .collect();
            let reported: Vec<ReportedCount> = store::usage_quantities::list(&mut conn, claim.org)
                .await?
                .into_iter()
                .map(|q| ReportedCount {
                    item: q.item,
                    count: q.reported_count,
                })
                .collect();
            (running, reported)
        };
        let stripe = self.stripe()?;
        let mut lives = Vec::with_capacity(running.len());
        for id in &running {
            lives.push(stripe.subscription(id).await?);
        }
        let (keeper, extra) = split_duplicates(lives, now);
        let mut duplicates = Vec::with_capacity(extra.len());
        for live in extra {
            let payments = stripe.latest_payments(&live.id).await?;
            duplicates.push(Duplicate { live, payments });
        }
        let plan = plan_upkeep(keeper.as_ref(), &duplicates, &reported, self.catalog(), now)
            .map_err(Error::from)?;
        Ok((keeper, plan))
    }
}

fn context(keeper: Option<&ProviderSubscription>, plan: &UpkeepPlan) -> UpkeepContext {
    UpkeepContext {
        keeper: keeper.map(|live| live.id.clone()),
        canceled: plan.canceled.clone(),
        unit_items: plan
            .unit_items
            .iter()
            .map(
                |UnitSync {
                     item,
                     quantity,
                     changed,
                 }| (item.clone(), *quantity, *changed),
            )
            .collect(),
        realigned: plan.realigned,
    }
}
