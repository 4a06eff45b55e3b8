//! Resuming operations: the operations loop takes over claims that lapsed
//! (their performer died, or Stripe did not answer) and starts queued
//! upkeeps, running each use case again from its stored plan.

use super::Service;
use super::operations::Claim;
use crate::domain::ids::OrgId;
use crate::domain::operation::OperationKind;
use crate::error::Result;
use crate::store::operations as stored;

impl Service {
    /// Takes over a lapsed operation, or starts a queued one, and runs it;
    /// false when there was none.
    pub async fn resume_next_operation(&self) -> Result<bool> {
        let claimed = {
            let mut conn = self.store().pool().acquire().await?;
            stored::claim_next(&mut conn, self.now(), self.lease_until()).await?
        };
        let Some((op, token)) = claimed else {
            return Ok(false);
        };
        let claim = Claim::from_stored(op, token);
        let (id, kind) = (claim.id, claim.kind);
        if let Err(error) = self.run_operation(claim).await {
            tracing::warn!(operation = %id, kind = kind.as_str(), error = %error, "a resumed billing operation did not finish");
        }
        Ok(true)
    }

    /// Runs the upkeep a committed sync queued, if any, once the work that
    /// queued it (`after`) is done: an upkeep that does not finish is
    /// resumed by the operations loop, so its failure is only logged.
    pub(super) async fn upkeep_after(&self, org: OrgId, after: &str) {
        if let Err(error) = self.run_queued_upkeep(org).await {
            tracing::warn!(%org, after, error = %error, "an upkeep did not finish; the operations loop resumes it");
        }
    }

    /// Starts the organization's queued upkeep now if nothing else of the
    /// organization runs (else the loop starts it later).
    pub(super) async fn run_queued_upkeep(&self, org: OrgId) -> Result<()> {
        let claimed = {
            let mut conn = self.store().pool().acquire().await?;
            stored::start_queued_upkeep(&mut conn, org, self.lease_until()).await?
        };
        if let Some((op, token)) = claimed {
            self.run_upkeep(Claim::from_stored(op, token)).await?;
        }
        Ok(())
    }

    /// Runs a claimed operation's use case to its end.
    pub(super) async fn run_operation(&self, claim: Claim) -> Result<()> {
        match claim.kind {
            OperationKind::Checkout => self.run_checkout(claim).await.map(drop),
            OperationKind::SeatChange => self.run_seat_change(claim).await.map(drop),
            OperationKind::CycleChange => self.run_cycle_change(claim).await,
            OperationKind::CancelCycleChange => self.run_cancel_cycle_change(claim).await,
            OperationKind::Cancellation => self.run_cancellation(claim).await,
            OperationKind::CreditPurchase => self.run_credit_purchase(claim).await.map(drop),
            OperationKind::PortalSession => self.run_portal_session(claim).await.map(drop),
            OperationKind::Upkeep => self.run_upkeep(claim).await,
        }
    }
}
