//! Changes of the organization's running subscription: the billing cycle
//! (and dropping a pending cycle change), cancellation at the period end
//! and resuming. Seat changes are in `seat_changes`.
//!
//! Each is an operation on the organization's lane: the live subscription
//! is read, the domain plans (`domain::cycle_change`,
//! `domain::cancellation`), the steps are sent, and the outcome is stored
//! with the resulting sync and its audit entry in one short transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::audit_trail::{AuditAction, record_as};
use super::operations::{Begun, Claim, StoredPlan, finished_reply};
use super::{Actor, Service};
use crate::domain::cancellation::plan_cancellation;
use crate::domain::cycle_change::{
    CyclePlan, plan_cancel_cycle_change, plan_cycle_change, undo_unfinished_switch,
};
use crate::domain::ids::{IdempotencyKey, OrgId};
use crate::domain::operation::{
    OperationKind, ScheduleRef, Step, last_subscription, resolve_schedule,
};
use crate::domain::pricing::BillingCycle;
use crate::domain::role::OrgAction;
use crate::domain::subscription::Subscription;
use crate::domain::subscription_sync::ProviderSubscription;
use crate::error::{Error, Result};
use crate::store;

/// The request of a change of one running subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChangeRequest<T> {
    pub subscription_id: String,
    #[serde(flatten)]
    pub change: T,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CycleRequest {
    cycle: BillingCycle,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CancelRequest {
    cancel: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Switch {
    from: BillingCycle,
    to: BillingCycle,
    effective_at: DateTime<Utc>,
}

/// An entry for the audit trail: what, before, after.
pub(super) type AuditEntry = (AuditAction, Option<Value>, Value);

impl Service {
    /// The stored subscription a change acts on: the newest that is not over.
    pub(super) async fn running_subscription(&self, org: OrgId) -> Result<Subscription> {
        let now = self.now();
        let mut conn = self.store().pool().acquire().await?;
        store::subscriptions::list_for_org(&mut conn, org)
            .await?
            .into_iter()
            .filter(|s| !s.is_over(now))
            .max_by_key(|s| s.created_at)
            .ok_or_else(|| {
                Error::FailedPrecondition("the organization has no running subscription".into())
            })
    }

    /// Checks the caller may manage billing, finds the running subscription
    /// and records the operation.
    pub(super) async fn begin_subscription_change<T: Serialize>(
        &self,
        actor: &Actor,
        org: OrgId,
        kind: OperationKind,
        idempotency_key: Option<&IdempotencyKey>,
        change: T,
    ) -> Result<Begun> {
        {
            let mut conn = self.store().pool().acquire().await?;
            super::load_org(&mut conn, org).await?;
            self.authorize(&mut conn, actor, org, OrgAction::ManageBilling)
                .await?;
        }
        self.stripe()?;
        let running = self.running_subscription(org).await?;
        let request = ChangeRequest {
            subscription_id: running.stripe_subscription_id,
            change,
        };
        let request = serde_json::to_value(request).map_err(Error::internal)?;
        self.begin_operation(org, kind, actor, idempotency_key, request)
            .await
    }

    /// The subscription as Stripe reports it now; a read that fails before
    /// anything was planned forgets the operation.
    pub(super) async fn read_live_for(
        &self,
        claim: &Claim,
        subscription_id: &str,
    ) -> Result<ProviderSubscription> {
        match self.stripe()?.subscription(subscription_id).await {
            Ok(live) => Ok(live),
            Err(error) => Err(self.forget(claim, error).await),
        }
    }

    /// Finishes an operation: its outcome, the subscription as `live` now
    /// is, and the audit entry, in one transaction; then any upkeep the sync
    /// queued. `Ok(false)` when another performer took the operation over
    /// (it records the outcome instead).
    pub(super) async fn finish_change(
        &self,
        claim: &Claim,
        live: &ProviderSubscription,
        ticket: Option<i64>,
        audit: Option<AuditEntry>,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<bool> {
        let mut tx = self.store().begin().await?;
        if !self.finish_operation(&mut tx, claim, outcome).await? {
            return Ok(false);
        }
        self.store_live(&mut tx, claim.org, live, ticket).await?;
        if let Some((action, before, after)) = audit {
            record_as(
                &mut tx,
                claim.org,
                &claim.actor,
                action,
                before,
                Some(after),
                self.now(),
            )
            .await?;
        }
        self.commit(tx).await?;
        if let Err(error) = self.run_queued_upkeep(claim.org).await {
            tracing::warn!(org = %claim.org, error = %error, "an upkeep did not finish; the operations loop resumes it");
        }
        Ok(true)
    }

    /// Switches the billing cycle at the next renewal through a schedule.
    pub async fn change_billing_cycle(
        &self,
        actor: &Actor,
        org: OrgId,
        cycle: BillingCycle,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<()> {
        let change = CycleRequest { cycle };
        match self
            .begin_subscription_change(
                actor,
                org,
                OperationKind::CycleChange,
                idempotency_key,
                change,
            )
            .await?
        {
            Begun::Claimed(claim) => self.run_cycle_change(claim).await,
            Begun::Replayed(first) => finished_reply::<Value>(&first).map(drop),
        }
    }

    pub(super) async fn run_cycle_change(&self, mut claim: Claim) -> Result<()> {
        let request: ChangeRequest<CycleRequest> = claim.request()?;
        let id = request.subscription_id.as_str();
        let plan = match claim.plan::<Switch>()? {
            Some(plan) => plan,
            None => {
                let live = self.read_live_for(&claim, id).await?;
                match plan_cycle_change(&live, request.change.cycle, self.catalog(), self.now()) {
                    Err(refusal) => return Err(self.forget(&claim, refusal.into()).await),
                    Ok(CyclePlan::AlreadyPending) => {
                        return self.settle(&claim, &live, None, None).await;
                    }
                    Ok(CyclePlan::Switch {
                        from,
                        to,
                        effective_at,
                        steps,
                    }) => {
                        let plan = StoredPlan {
                            steps,
                            context: Switch {
                                from,
                                to,
                                effective_at,
                            },
                        };
                        if !self.store_plan(&mut claim, &plan, None).await? {
                            return self.wait_for_operation(claim.id).await.map(drop);
                        }
                        plan
                    }
                }
            }
        };
        let ticket = self.sync_ticket(id).await?;
        let mut results = Vec::new();
        if let Err(failure) = self
            .perform_steps(&claim, &plan.steps, 0, &mut results)
            .await
        {
            if failure.refused() && failure.index > 0 {
                // The schedule was made but not set: release it, so it
                // blocks nothing, before the operation fails.
                let undo = undo_unfinished_switch();
                if let Err(undo_failure) = self
                    .perform_steps(&claim, &undo, plan.steps.len(), &mut results)
                    .await
                {
                    tracing::error!(operation = %claim.id, error = %undo_failure.error, "could not release an unfinished schedule");
                }
            }
            return Err(self.fail_or_postpone(&claim, failure).await);
        }
        let live = self.stripe()?.subscription(id).await?;
        let schedule = resolve_schedule(&ScheduleRef::CreatedInStep(0), &results);
        let switch = &plan.context;
        let audit = (
            AuditAction::BillingCycleChangeScheduled,
            Some(json!({ "billing_cycle": switch.from.as_str() })),
            json!({
                "billing_cycle": switch.to.as_str(),
                "effective_at": switch.effective_at,
                "schedule_id": schedule,
            }),
        );
        self.settle(&claim, &live, Some(ticket), Some(audit)).await
    }

    /// Drops a pending billing-cycle change: releases the schedule, but only
    /// one this service made and left as it made it.
    pub async fn cancel_billing_cycle_change(
        &self,
        actor: &Actor,
        org: OrgId,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<()> {
        match self
            .begin_subscription_change(
                actor,
                org,
                OperationKind::CancelCycleChange,
                idempotency_key,
                json!({}),
            )
            .await?
        {
            Begun::Claimed(claim) => self.run_cancel_cycle_change(claim).await,
            Begun::Replayed(first) => finished_reply::<Value>(&first).map(drop),
        }
    }

    pub(super) async fn run_cancel_cycle_change(&self, mut claim: Claim) -> Result<()> {
        let request: ChangeRequest<Value> = claim.request()?;
        let id = request.subscription_id.as_str();
        let plan = match claim.plan::<()>()? {
            Some(plan) => plan,
            None => {
                let live = self.read_live_for(&claim, id).await?;
                let steps = match plan_cancel_cycle_change(&live) {
                    Ok(steps) => steps,
                    Err(refusal) => return Err(self.forget(&claim, refusal.into()).await),
                };
                let plan = StoredPlan { steps, context: () };
                if !self.store_plan(&mut claim, &plan, None).await? {
                    return self.wait_for_operation(claim.id).await.map(drop);
                }
                plan
            }
        };
        let ticket = self.sync_ticket(id).await?;
        let mut results = Vec::new();
        if let Err(failure) = self
            .perform_steps(&claim, &plan.steps, 0, &mut results)
            .await
        {
            return Err(self.fail_or_postpone(&claim, failure).await);
        }
        let live = self.stripe()?.subscription(id).await?;
        let released = plan.steps.first().and_then(|step| match step {
            Step::ReleaseSchedule { schedule } => {
                resolve_schedule(schedule, &results).map(str::to_owned)
            }
            _ => None,
        });
        let audit = (
            AuditAction::BillingCycleChangeCanceled,
            Some(json!({ "schedule_id": released })),
            Value::Null,
        );
        self.settle(&claim, &live, Some(ticket), Some(audit)).await
    }

    /// Cancels at the end of the period (`cancel`), or undoes that.
    pub async fn set_cancellation(
        &self,
        actor: &Actor,
        org: OrgId,
        cancel: bool,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<()> {
        let change = CancelRequest { cancel };
        match self
            .begin_subscription_change(
                actor,
                org,
                OperationKind::Cancellation,
                idempotency_key,
                change,
            )
            .await?
        {
            Begun::Claimed(claim) => self.run_cancellation(claim).await,
            Begun::Replayed(first) => finished_reply::<Value>(&first).map(drop),
        }
    }

    pub(super) async fn run_cancellation(&self, mut claim: Claim) -> Result<()> {
        let request: ChangeRequest<CancelRequest> = claim.request()?;
        let (id, cancel) = (request.subscription_id.as_str(), request.change.cancel);
        let plan = match claim.plan::<()>()? {
            Some(plan) => plan,
            None => {
                let live = self.read_live_for(&claim, id).await?;
                let steps = plan_cancellation(&live, cancel);
                if steps.is_empty() {
                    return self.settle(&claim, &live, None, None).await;
                }
                let plan = StoredPlan { steps, context: () };
                if !self.store_plan(&mut claim, &plan, None).await? {
                    return self.wait_for_operation(claim.id).await.map(drop);
                }
                plan
            }
        };
        let ticket = self.sync_ticket(id).await?;
        let mut results = Vec::new();
        if let Err(failure) = self
            .perform_steps(&claim, &plan.steps, 0, &mut results)
            .await
        {
            return Err(self.fail_or_postpone(&claim, failure).await);
        }
        let live = match last_subscription(&results) {
            Some(live) => live.clone(),
            None => self.stripe()?.subscription(id).await?,
        };
        let action = if cancel {
            AuditAction::SubscriptionCancelRequested
        } else {
            AuditAction::SubscriptionResumed
        };
        let audit = (action, None, json!({ "cancel_at_period_end": cancel }));
        self.settle(&claim, &live, Some(ticket), Some(audit)).await
    }

    /// Finishes a change that succeeded; if another performer took it over,
    /// waits for that one's answer.
    async fn settle(
        &self,
        claim: &Claim,
        live: &ProviderSubscription,
        ticket: Option<i64>,
        audit: Option<AuditEntry>,
    ) -> Result<()> {
        if self
            .finish_change(claim, live, ticket, audit, Ok(&json!({})))
            .await?
        {
            return Ok(());
        }
        let op = self.wait_for_operation(claim.id).await?;
        finished_reply::<Value>(&op).map(drop)
    }
}
