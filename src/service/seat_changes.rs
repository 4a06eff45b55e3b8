//! Seat changes of the running subscription (the rule is
//! `domain::seat_change`): planned from the live subscription, recorded,
//! sent, and settled with the payment's outcome.
//!
//! An increase is audited when it is asked for (awaiting payment), then
//! with its outcome: applied, waiting for the customer to authenticate, or
//! declined (then undone, and the call fails saying so).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit_trail::AuditAction;
use super::change_flow::{AuditEntry, ChangeRequest};
use super::operations::{Begun, Claim, StoredPlan, finished_reply};
use super::{Actor, Service};
use crate::domain::ids::{IdempotencyKey, OrgId};
use crate::domain::operation::{
    OperationKind, PaymentProblem, Refusal, StepResult, last_subscription,
};
use crate::domain::reason::ErrorReason;
use crate::domain::seat_change::{
    SeatChange, SeatDirection, SeatPlan, after_payment_problem, check_seats, plan_seat_change,
    undo_restore,
};
use crate::error::{Error, Result};
use crate::store;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeatRequest {
    seats: i64,
}

/// How a seat change ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum SeatChangeOutcome {
    /// Stripe already showed these seats.
    Unchanged,
    /// More seats, paid; or fewer, from the next period.
    Applied { direction: SeatDirection },
    /// The prorated invoice waits for the customer to authenticate the
    /// payment at `url`; the seats are added once they do.
    AwaitingAuthentication { url: Option<String> },
}

/// The message of a declined increase.
const DECLINED: &str = "the payment for the added seats was declined; no seats were added";

impl Service {
    /// Sets the subscription's seats (free seats included).
    pub async fn update_seat_count(
        &self,
        actor: &Actor,
        org: OrgId,
        seats: i64,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<SeatChangeOutcome> {
        check_seats(seats)?;
        let change = SeatRequest { seats };
        match self
            .begin_subscription_change(
                actor,
                org,
                OperationKind::SeatChange,
                idempotency_key,
                change,
            )
            .await?
        {
            Begun::Claimed(claim) => self.run_seat_change(claim).await,
            Begun::Replayed(first) => finished_reply(&first),
        }
    }

    pub(super) async fn run_seat_change(&self, mut claim: Claim) -> Result<SeatChangeOutcome> {
        let request: ChangeRequest<SeatRequest> = claim.request()?;
        let id = request.subscription_id.as_str();
        let plan = match claim.plan::<SeatChange>()? {
            Some(plan) => plan,
            None => match self.plan_seats(&claim, id, request.change.seats).await? {
                Planned::Refused(refusal) => return Err(self.forget(&claim, refusal.into()).await),
                Planned::Unchanged(live, ticket) => {
                    let outcome = SeatChangeOutcome::Unchanged;
                    return self
                        .settle_seats(&claim, &live, Some(ticket), None, outcome)
                        .await;
                }
                Planned::Change(change) => {
                    let audit = (change.direction == SeatDirection::Increase).then(|| {
                        let after = json!({
                            "from_seats": change.paid,
                            "seats": change.seats,
                            "charged_seats": change.charged(),
                            "awaiting_payment": true,
                        });
                        (AuditAction::SeatIncreaseRequested, after)
                    });
                    let plan = StoredPlan {
                        steps: change.steps.clone(),
                        context: change,
                    };
                    if !self.store_plan(&mut claim, &plan, audit).await? {
                        return self.answer_of(&claim).await;
                    }
                    plan
                }
            },
        };
        let change = &plan.context;
        let ticket = self.sync_ticket(id).await?;
        let mut results = Vec::new();
        if let Err(failure) = self
            .perform_steps(&claim, &plan.steps, 0, &mut results)
            .await
        {
            if failure.refused() && failure.index > 0 {
                let undo = undo_restore(change);
                if let Err(undo_failure) = self
                    .perform_steps(&claim, &undo, plan.steps.len(), &mut results)
                    .await
                {
                    tracing::error!(operation = %claim.id, error = %undo_failure.error, "could not put back the seats a refused increase restored");
                }
            }
            return Err(self.fail_or_postpone(&claim, failure).await);
        }
        let incomplete = results.iter().find_map(|result| match result {
            StepResult::PaymentIncomplete {
                invoice_id,
                invoice_url,
                problem,
                ..
            } => Some((invoice_id.clone(), invoice_url.clone(), *problem)),
            _ => None,
        });
        let outcome = match &incomplete {
            None => SeatChangeOutcome::Applied {
                direction: change.direction,
            },
            Some((invoice_id, url, problem)) => {
                let follow_up = after_payment_problem(change, *problem, invoice_id);
                if let Err(failure) = self
                    .perform_steps(&claim, &follow_up, plan.steps.len(), &mut results)
                    .await
                {
                    return Err(self.fail_or_postpone(&claim, failure).await);
                }
                match problem {
                    PaymentProblem::NeedsAuthentication => {
                        SeatChangeOutcome::AwaitingAuthentication { url: url.clone() }
                    }
                    PaymentProblem::Declined => {
                        let live = self.stripe()?.subscription(id).await?;
                        let audit = outcome_audit(change, None);
                        if !self
                            .finish_change(&claim, &live, Some(ticket), Some(audit), Err(DECLINED))
                            .await?
                        {
                            return self.answer_of(&claim).await;
                        }
                        return Err(Error::precondition(ErrorReason::PaymentDeclined, DECLINED));
                    }
                }
            }
        };
        let live = match last_subscription(&results) {
            Some(live) => live.clone(),
            None => self.stripe()?.subscription(id).await?,
        };
        let audit = outcome_audit(change, Some(&outcome));
        self.settle_seats(&claim, &live, Some(ticket), Some(audit), outcome)
            .await
    }

    /// Reads what the rule decides from, Stripe's side live.
    async fn plan_seats(&self, claim: &Claim, id: &str, seats: i64) -> Result<Planned> {
        let now = self.now();
        let (previous, used) = {
            let mut conn = self.store().pool().acquire().await?;
            let previous = store::subscriptions::list_for_org(&mut conn, claim.org)
                .await?
                .into_iter()
                .find(|s| s.stripe_subscription_id == id);
            let used = store::members::seat_holders(&mut conn, claim.org, now)
                .await?
                .used_at(now);
            (previous, used)
        };
        let (live, ticket) = self.read_live_for(claim, id).await?;
        Ok(
            match plan_seat_change(&live, previous.as_ref(), seats, used, self.catalog(), now) {
                Ok(SeatPlan::Unchanged) => Planned::Unchanged(Box::new(live), ticket),
                Ok(SeatPlan::Change(change)) => Planned::Change(change),
                Err(refusal) => Planned::Refused(refusal),
            },
        )
    }

    async fn settle_seats(
        &self,
        claim: &Claim,
        live: &crate::domain::subscription_sync::ProviderSubscription,
        ticket: Option<i64>,
        audit: Option<AuditEntry>,
        outcome: SeatChangeOutcome,
    ) -> Result<SeatChangeOutcome> {
        let answer = serde_json::to_value(&outcome).map_err(Error::internal)?;
        if self
            .finish_change(claim, live, ticket, audit, Ok(&answer))
            .await?
        {
            Ok(outcome)
        } else {
            self.answer_of(claim).await
        }
    }
}

enum Planned {
    Refused(Refusal),
    Unchanged(
        Box<crate::domain::subscription_sync::ProviderSubscription>,
        i64,
    ),
    Change(SeatChange),
}

/// The audit entry of a change's outcome; `None` for a declined increase.
fn outcome_audit(change: &SeatChange, outcome: Option<&SeatChangeOutcome>) -> AuditEntry {
    let before = Some(json!({ "seats": change.paid }));
    match outcome {
        None => (
            AuditAction::SeatIncreasePaymentFailed,
            before,
            json!({ "seats": change.paid, "asked_for": change.seats, "reason": "card declined" }),
        ),
        Some(SeatChangeOutcome::AwaitingAuthentication { url }) => (
            AuditAction::SeatIncreaseAwaitingAuthentication,
            before,
            json!({ "seats": change.paid, "asked_for": change.seats, "authentication_url": url }),
        ),
        Some(SeatChangeOutcome::Applied { .. } | SeatChangeOutcome::Unchanged) => (
            AuditAction::SeatCountChanged,
            before,
            json!({
                "seats": change.seats,
                "direction": change.direction,
                "effective_at": match change.direction {
                    SeatDirection::Decrease => change.period_end,
                    SeatDirection::Increase | SeatDirection::Restore => None,
                },
            }),
        ),
    }
}
