//! The shape every change of the running subscription shares: find it,
//! record the operation, plan from the live subscription (or resume the
//! stored plan), send the steps, and settle with the resulting sync and
//! its audit entry in one short transaction.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::audit_trail::{AuditAction, record_as};
use super::operations::{Begun, Claim, StoredPlan, finished_reply};
use super::{Actor, Service};
use crate::domain::ids::{IdempotencyKey, OrgId};
use crate::domain::operation::{OperationKind, Refusal, Step, StepResult, last_subscription};
use crate::domain::reason::ErrorReason;
use crate::domain::subscription::{self, Subscription};
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

/// An entry for the audit trail: what, before, after.
pub(super) type AuditEntry = (AuditAction, Option<Value>, Value);

impl Service {
    /// The stored subscription a change acts on: the newest that is not over.
    pub(super) async fn running_subscription(&self, org: OrgId) -> Result<Subscription> {
        let now = self.now();
        let mut conn = self.store().pool().acquire().await?;
        let subscriptions = store::subscriptions::list_for_org(&mut conn, org).await?;
        subscription::running(&subscriptions, now)
            .cloned()
            .ok_or_else(|| {
                Error::precondition(
                    ErrorReason::NoSubscription,
                    "the organization has no running subscription",
                )
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
        self.authorize_billing(actor, org).await?;
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
    /// Returns it with the sync ticket taken before the read, so it is
    /// stored only if no newer reading was started since.
    pub(super) async fn read_live_for(
        &self,
        claim: &Claim,
        subscription_id: &str,
    ) -> Result<(ProviderSubscription, i64)> {
        let read = async {
            let ticket = self.sync_ticket(subscription_id).await?;
            let live = self.stripe()?.subscription(subscription_id).await?;
            Ok((live, ticket))
        };
        match read.await {
            Ok(read) => Ok(read),
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
        self.upkeep_after(claim.org, "a billing change").await;
        Ok(true)
    }

    /// Begins a change with no answer but success and runs it; a key that
    /// replays a finished change answers as that change did.
    pub(super) async fn plain_change<T: Serialize>(
        &self,
        actor: &Actor,
        org: OrgId,
        kind: OperationKind,
        idempotency_key: Option<&IdempotencyKey>,
        change: T,
    ) -> Result<()> {
        match self
            .begin_subscription_change(actor, org, kind, idempotency_key, change)
            .await?
        {
            Begun::Claimed(claim) => self.run_operation(claim).await,
            Begun::Replayed(first) => finished_reply::<Value>(&first).map(drop),
        }
    }

    /// The operation's plan: the stored one when resuming, else one decided
    /// now from the live subscription and stored. `None` when there is
    /// nothing to send (then the operation is settled), or another
    /// performer took it over (then its answer is awaited).
    pub(super) async fn plan_from_live<C: Serialize + DeserializeOwned>(
        &self,
        claim: &mut Claim,
        subscription_id: &str,
        decide: impl FnOnce(&ProviderSubscription) -> Result<Option<StoredPlan<C>>, Refusal>,
    ) -> Result<Option<StoredPlan<C>>> {
        if let Some(plan) = claim.plan::<C>()? {
            return Ok(Some(plan));
        }
        let (live, ticket) = self.read_live_for(claim, subscription_id).await?;
        match decide(&live) {
            Err(refusal) => Err(self.forget(claim, refusal.into()).await),
            Ok(None) => self
                .settle(claim, &live, Some(ticket), None)
                .await
                .map(|()| None),
            Ok(Some(plan)) if self.store_plan(claim, &plan, None).await? => Ok(Some(plan)),
            Ok(Some(_)) => self.answer_of::<Value>(claim).await.map(|_| None),
        }
    }

    /// Sends the plan and settles the operation with the subscription as it
    /// then is and the audit entry `audit` makes of Stripe's answers. When a
    /// step after the first is refused, `undo` is sent before it fails.
    pub(super) async fn perform_and_settle<C>(
        &self,
        claim: &Claim,
        subscription_id: &str,
        plan: &StoredPlan<C>,
        undo: &[Step],
        audit: impl FnOnce(&[StepResult]) -> AuditEntry,
    ) -> Result<()> {
        let ticket = self.sync_ticket(subscription_id).await?;
        let mut results = Vec::new();
        if let Err(failure) = self
            .perform_steps(claim, &plan.steps, 0, &mut results)
            .await
        {
            if failure.refused() && failure.index > 0 && !undo.is_empty() {
                let undone = self
                    .perform_steps(claim, undo, plan.steps.len(), &mut results)
                    .await;
                if let Err(undo_failure) = undone {
                    tracing::error!(operation = %claim.id, error = %undo_failure.error, "could not undo the steps before a refused one");
                }
            }
            return Err(self.fail_or_postpone(claim, failure).await);
        }
        let live = match last_subscription(&results) {
            Some(live) => live.clone(),
            None => self.stripe()?.subscription(subscription_id).await?,
        };
        let entry = audit(&results);
        self.settle(claim, &live, Some(ticket), Some(entry)).await
    }

    /// Finishes a change that succeeded; if another performer took it over,
    /// waits for that one's answer.
    pub(super) async fn settle(
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
        self.answer_of::<Value>(claim).await.map(drop)
    }
}
