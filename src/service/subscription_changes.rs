//! Changes of the organization's running subscription: the billing cycle
//! (and dropping a pending cycle change), cancellation at the period end
//! and resuming. Seat changes are in `seat_changes`.
//!
//! Each is an operation on the organization's lane (see `change_flow`):
//! the live subscription is read, the domain plans
//! (`domain::cycle_change`, `domain::cancellation`), the steps are sent,
//! and the outcome is stored with the resulting sync and its audit entry in
//! one short transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::audit_trail::AuditAction;
use super::change_flow::ChangeRequest;
use super::operations::{Claim, StoredPlan};
use super::{Actor, Service};
use crate::domain::cancellation::plan_cancellation;
use crate::domain::cycle_change::{
    CyclePlan, plan_cancel_cycle_change, plan_cycle_change, undo_unfinished_switch,
};
use crate::domain::ids::{IdempotencyKey, OrgId};
use crate::domain::operation::{OperationKind, ScheduleRef, Step, resolve_schedule};
use crate::domain::pricing::BillingCycle;
use crate::error::Result;

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

impl Service {
    /// Switches the billing cycle at the next renewal through a schedule.
    pub async fn change_billing_cycle(
        &self,
        actor: &Actor,
        org: OrgId,
        cycle: BillingCycle,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<()> {
        let change = CycleRequest { cycle };
        self.plain_change(
            actor,
            org,
            OperationKind::CycleChange,
            idempotency_key,
            change,
        )
        .await
    }

    pub(super) async fn run_cycle_change(&self, mut claim: Claim) -> Result<()> {
        let request: ChangeRequest<CycleRequest> = claim.request()?;
        let id = request.subscription_id.as_str();
        let (catalog, now) = (self.catalog(), self.now());
        let planned = self
            .plan_from_live(&mut claim, id, |live| {
                Ok(
                    match plan_cycle_change(live, request.change.cycle, catalog, now)? {
                        CyclePlan::AlreadyPending => None,
                        CyclePlan::Switch {
                            from,
                            to,
                            effective_at,
                            steps,
                        } => Some(StoredPlan {
                            steps,
                            context: Switch {
                                from,
                                to,
                                effective_at,
                            },
                        }),
                    },
                )
            })
            .await?;
        let Some(plan) = planned else {
            return Ok(());
        };
        let switch = &plan.context;
        // A schedule made but not set is released, so it blocks nothing.
        self.perform_and_settle(&claim, id, &plan, &undo_unfinished_switch(), |results| {
            (
                AuditAction::BillingCycleChangeScheduled,
                Some(json!({ "billing_cycle": switch.from.as_str() })),
                json!({
                    "billing_cycle": switch.to.as_str(),
                    "effective_at": switch.effective_at,
                    "schedule_id": resolve_schedule(&ScheduleRef::CreatedInStep(0), results),
                }),
            )
        })
        .await
    }

    /// Drops a pending billing-cycle change: releases the schedule, but only
    /// one this service made and left as it made it.
    pub async fn cancel_billing_cycle_change(
        &self,
        actor: &Actor,
        org: OrgId,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<()> {
        self.plain_change(
            actor,
            org,
            OperationKind::CancelCycleChange,
            idempotency_key,
            json!({}),
        )
        .await
    }

    pub(super) async fn run_cancel_cycle_change(&self, mut claim: Claim) -> Result<()> {
        let request: ChangeRequest<Value> = claim.request()?;
        let id = request.subscription_id.as_str();
        let planned = self
            .plan_from_live(&mut claim, id, |live| {
                let steps = plan_cancel_cycle_change(live)?;
                Ok(Some(StoredPlan { steps, context: () }))
            })
            .await?;
        let Some(plan) = planned else {
            return Ok(());
        };
        self.perform_and_settle(&claim, id, &plan, &[], |results| {
            let released = plan.steps.first().and_then(|step| match step {
                Step::ReleaseSchedule { schedule } => resolve_schedule(schedule, results),
                _ => None,
            });
            (
                AuditAction::BillingCycleChangeCanceled,
                Some(json!({ "schedule_id": released })),
                Value::Null,
            )
        })
        .await
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
        self.plain_change(
            actor,
            org,
            OperationKind::Cancellation,
            idempotency_key,
            change,
        )
        .await
    }

    pub(super) async fn run_cancellation(&self, mut claim: Claim) -> Result<()> {
        let request: ChangeRequest<CancelRequest> = claim.request()?;
        let (id, cancel) = (request.subscription_id.as_str(), request.change.cancel);
        let planned = self
            .plan_from_live(&mut claim, id, |live| {
                let steps = plan_cancellation(live, cancel);
                Ok((!steps.is_empty()).then_some(StoredPlan { steps, context: () }))
            })
            .await?;
        let Some(plan) = planned else {
            return Ok(());
        };
        let action = if cancel {
            AuditAction::SubscriptionCancelRequested
        } else {
            AuditAction::SubscriptionResumed
        };
        self.perform_and_settle(&claim, id, &plan, &[], |_| {
            (action, None, json!({ "cancel_at_period_end": cancel }))
        })
        .await
    }
}
