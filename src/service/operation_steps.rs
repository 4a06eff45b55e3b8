//! Sending an operation's planned steps to Stripe, and what happens when
//! one does not go through: refused by Stripe, the operation fails; not
//! answered (or not understood), it is postponed and resumed later by the
//! operations loop with the same keys.

use std::time::Duration;

use uuid::Uuid;

use super::Service;
use super::operations::Claim;
use crate::domain::operation::{OperationStatus, Step, StepResult};
use crate::domain::retry::RetryPolicy;
use crate::error::Error;
use crate::store::operations as stored;

/// How a failed or postponed operation is tried again by the loop.
pub(super) const OPERATION_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 10,
    first_delay: Duration::from_secs(2),
    max_delay: Duration::from_secs(600),
};

/// How a step Stripe did not answer, answered 5xx or rate-limited is sent
/// again within the call, with the same key, before the operation is
/// postponed. async-stripe's retrying strategies would send each retry
/// under a random key of their own; ours come from the recorded operation,
/// so this loop retries instead, for those answers only (a refusal, where
/// Stripe-Should-Retry would say no, is never retried).
pub(super) const IN_CALL_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    first_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(1),
};

/// A step that failed, and which.
#[derive(Debug)]
pub(super) struct StepFailure {
    pub index: usize,
    pub error: Error,
}

impl StepFailure {
    /// Whether Stripe refused the step (so it is final), rather than not
    /// answering or answering what we cannot read (so it is retried).
    pub fn refused(&self) -> bool {
        match self.error {
            Error::FailedPrecondition(_) | Error::NotFound(_) | Error::InvalidArgument { .. } => {
                true
            }
            Error::Unavailable(_)
            | Error::RateLimited(_)
            | Error::Overloaded(_)
            | Error::Internal(_)
            | Error::Aborted(_)
            | Error::PermissionDenied(_)
            | Error::AlreadyExists(_) => false,
        }
    }
}

/// The idempotency key of step `index` of operation `id`.
fn step_key(id: Uuid, index: usize) -> String {
    format!("billing-service:{id}:{index}")
}

impl Service {
    /// Sends `steps`, numbered from `first`, collecting what Stripe answers
    /// in `results`. Stops after an update whose invoice was not paid, for
    /// the use case to decide what follows.
    pub(super) async fn perform_steps(
        &self,
        claim: &Claim,
        steps: &[Step],
        first: usize,
        results: &mut Vec<StepResult>,
    ) -> Result<(), StepFailure> {
        let stripe = self.stripe().map_err(|error| StepFailure {
            index: first,
            error,
        })?;
        for (offset, step) in steps.iter().enumerate() {
            let index = first + offset;
            let key = step_key(claim.id, index);
            let mut attempts = 0;
            let result = loop {
                let error = match stripe.perform(step, key.clone(), results).await {
                    Ok(result) => break result,
                    Err(error) => error,
                };
                attempts += 1;
                let wait = match error {
                    Error::RateLimited(_) | Error::Unavailable(_) => {
                        IN_CALL_RETRY.wait_after(attempts)
                    }
                    _ => None,
                };
                let Some(wait) = wait else {
                    return Err(StepFailure { index, error });
                };
                tracing::info!(operation = %claim.id, step = index, attempts, %error, "Stripe did not complete a step; sending it again with the same key");
                tokio::time::sleep(wait).await;
            };
            let incomplete = matches!(result, StepResult::PaymentIncomplete { .. });
            results.push(result);
            if incomplete {
                break;
            }
        }
        Ok(())
    }

    /// A step that did not go through for now: the claim lapses at the next
    /// attempt, when the operations loop resumes it, or the operation fails
    /// once its attempts are spent. The caller learns it is UNAVAILABLE.
    pub(super) async fn postpone(&self, claim: &Claim, failure: StepFailure) -> Error {
        let now = self.now();
        let attempts = u32::try_from(claim.attempts).unwrap_or(0) + 1;
        tracing::warn!(
            operation = %claim.id,
            kind = claim.kind.as_str(),
            step = failure.index,
            attempts,
            error = %failure.error,
            "a billing operation's Stripe step did not go through; it is resumed later"
        );
        let message = failure.error.to_string();
        let outcome = async {
            let mut conn = self.store().pool().acquire().await?;
            match OPERATION_RETRY.next_attempt(attempts, now) {
                Some(retry_at) => {
                    stored::postpone(&mut conn, claim.id, claim.token, &message, retry_at).await
                }
                None => stored::finish(
                    &mut conn,
                    claim.id,
                    claim.token,
                    OperationStatus::Failed,
                    None,
                    Some(&message),
                    now,
                )
                .await
                .map(drop),
            }
        };
        if let Err(error) = outcome.await {
            return error;
        }
        match failure.error {
            error @ Error::Internal(_) => error,
            other => Error::Unavailable(format!(
                "{other}; the change will be completed in the background"
            )),
        }
    }

    /// A step that failed: refused by Stripe, the operation fails (nothing
    /// else was planned to undo); otherwise it is postponed for the loop.
    pub(super) async fn fail_or_postpone(&self, claim: &Claim, failure: StepFailure) -> Error {
        if !failure.refused() {
            return self.postpone(claim, failure).await;
        }
        let message = failure.error.to_string();
        let finished = async {
            let mut conn = self.store().pool().acquire().await?;
            self.finish_operation(&mut conn, claim, Err(&message)).await
        };
        match finished.await {
            Ok(_) => failure.error,
            Err(error) => error,
        }
    }
}
