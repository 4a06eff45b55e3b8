//! The gateway's usage reports and credit holds (the rules are in
//! `domain::usage`; the commits in `usage_lanes`).
//!
//! No report loads the organization from the database: whether its credits
//! are locked comes from the in-memory entitlement state, and the database
//! work is the ledger alone, posted in group commits.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use chrono::{DateTime, TimeDelta, Utc};

use super::usage_batch::UsageItem;
use super::{Actor, Service};
use crate::domain::credit_holds::CreditHold;
use crate::domain::credits::{Balance, CreditEntry, Micros};
use crate::domain::ids::{HoldId, OrgId, UserId};
use crate::domain::reason::ErrorReason;
use crate::domain::usage::{HoldRequest, UsageDebit, UsageOutcome, UsageRefusal, UsageRequest};
use crate::error::{Error, Result};
use crate::instruments::CREDIT_HOLDS;
use crate::store;

/// How long a hold lasts when the caller does not say.
pub const DEFAULT_HOLD_TTL: TimeDelta = TimeDelta::minutes(10);
/// The longest a hold may last.
pub const MAX_HOLD_TTL: TimeDelta = TimeDelta::hours(24);

/// What the gateway reports after a request.
#[derive(Debug, Clone)]
pub struct UsageReport {
    pub user: UserId,
    /// Positive; zero only with a hold, to release it.
    pub amount: Micros,
    pub model: String,
    pub idempotency_key: String,
    /// The hold this report settles.
    pub hold: Option<HoldId>,
}

/// A report's result.
#[derive(Debug, Clone)]
pub struct UsageRecorded {
    /// The debit; `None` when a report of zero only released its hold.
    pub entry: Option<CreditEntry>,
    pub balance_after: Balance,
    /// True when this key was seen before and nothing new was posted.
    pub replayed: bool,
}

/// A reservation asked for with an entitlement check.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub amount: Micros,
    pub idempotency_key: String,
    pub ttl: TimeDelta,
}

impl Service {
    fn require_usage_reporter(actor: &Actor) -> Result<()> {
        match actor {
            Actor::Gateway | Actor::Operator => Ok(()),
            Actor::User(_) => Err(Error::denied(
                ErrorReason::CallerNotPermitted,
                "usage is reported by the gateway and operators",
            )),
        }
    }

    /// Debits a request's usage once per key (or settles its hold);
    /// replays return the first result. The request was served already,
    /// so a debit larger than the balance is taken in full and overdraws;
    /// the next paid request is then denied until credit arrives.
    pub async fn record_usage(
        &self,
        actor: &Actor,
        org: OrgId,
        report: UsageReport,
    ) -> Result<UsageRecorded> {
        let mut results = self.record_usage_batch(actor, vec![(org, report)]).await?;
        results.pop().unwrap_or_else(|| {
            Err(Error::internal(anyhow::anyhow!(
                "a usage report had no result"
            )))
        })
    }

    /// Many reports in one call, each with its own key and result.
    pub async fn record_usage_batch(
        &self,
        actor: &Actor,
        reports: Vec<(OrgId, UsageReport)>,
    ) -> Result<Vec<Result<UsageRecorded>>> {
        Self::require_usage_reporter(actor)?;
        let now = self.now();
        let mut results: Vec<Option<Result<UsageRecorded>>> = Vec::with_capacity(reports.len());
        let mut items = Vec::with_capacity(reports.len());
        let mut positions = Vec::with_capacity(reports.len());
        let mut locks = HashMap::new();
        for (org, _) in &reports {
            if let Entry::Vacant(slot) = locks.entry(*org) {
                slot.insert(self.credits_locked(*org, now).await);
            }
        }
        for (at, (org, report)) in reports.into_iter().enumerate() {
            match &locks[&org] {
                Ok(locked) => {
                    items.push(UsageItem {
                        org,
                        locked: *locked,
                        request: UsageRequest::Debit(UsageDebit {
                            key: report.idempotency_key,
                            amount: report.amount,
                            user: report.user,
                            model: report.model,
                            hold: report.hold,
                        }),
                    });
                    positions.push(at);
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(copy_error(error)))),
            }
        }
        for (at, outcome) in positions.into_iter().zip(self.post_usage(items).await) {
            results[at] = Some(outcome.and_then(recorded));
        }
        Ok(results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(Error::internal(anyhow::anyhow!(
                        "a usage report had no result"
                    )))
                })
            })
            .collect())
    }

    /// Places a hold for `reservation`, or says why not.
    pub(super) async fn reserve_credits(
        &self,
        org: OrgId,
        user: &UserId,
        model: Option<&str>,
        reservation: &Reservation,
        locked: bool,
    ) -> Result<std::result::Result<CreditHold, UsageRefusal>> {
        let request = UsageRequest::Reserve(HoldRequest {
            key: reservation.idempotency_key.clone(),
            amount: reservation.amount,
            user: user.clone(),
            model: model.map(str::to_owned),
            expires_at: self.now() + reservation.ttl,
        });
        let item = UsageItem {
            org,
            locked,
            request,
        };
        let outcome = self.post_usage(vec![item]).await.pop().unwrap_or_else(|| {
            Err(Error::internal(anyhow::anyhow!(
                "a reservation had no result"
            )))
        })?;
        match outcome {
            UsageOutcome::Reserved { hold, .. } => Ok(Ok(hold)),
            UsageOutcome::Refused(refusal) => Ok(Err(refusal)),
            other => Err(Error::internal(anyhow::anyhow!(
                "a reservation was answered {other:?}"
            ))),
        }
    }

    /// Whether the organization's credits are locked, from memory (read
    /// through for an organization the cache does not hold yet).
    async fn credits_locked(&self, org: OrgId, now: DateTime<Utc>) -> Result<bool> {
        let (cached, _) = self.cached_org(org, None).await?;
        Ok(cached.state.access(now).locks_credits())
    }

    /// Releases holds past their expiry for up to `limit` organizations;
    /// returns how many it visited.
    pub async fn release_expired_holds(&self, limit: i64) -> Result<usize> {
        let now = self.now();
        let orgs = {
            let mut conn = self.store().pool().acquire().await?;
            store::credit_holds::orgs_with_expired_holds(&mut conn, now, limit).await?
        };
        for org in &orgs {
            let mut tx = self.store().begin().await?;
            // Under the account's lock, like every change of its credits;
            // opening already leaves expired holds out of what is held.
            self.open_ledger(&mut tx, *org, now).await?;
            let expired = store::credit_holds::expire(&mut tx, *org, now).await?;
            self.commit(tx).await?;
            metrics::counter!(CREDIT_HOLDS, "event" => "expired").increment(expired);
        }
        Ok(orgs.len())
    }
}

fn recorded(outcome: UsageOutcome) -> Result<UsageRecorded> {
    match outcome {
        UsageOutcome::Debited { entry, replayed } => Ok(UsageRecorded {
            balance_after: entry.balance_after,
            entry: Some(entry),
            replayed,
        }),
        UsageOutcome::Released {
            balance, replayed, ..
        } => Ok(UsageRecorded {
            entry: None,
            balance_after: balance,
            replayed,
        }),
        UsageOutcome::Refused(refusal) => Err(refusal.into()),
        UsageOutcome::Reserved { .. } => Err(Error::internal(anyhow::anyhow!(
            "a usage report was answered with a hold"
        ))),
    }
}

/// The same answer for every report of an organization that could not be
/// read (errors are not `Clone`: an internal one keeps its message only).
fn copy_error(error: &Error) -> Error {
    match error {
        Error::InvalidArgument { field, reason } => Error::invalid(field, reason),
        Error::NotFound(m) => Error::NotFound(m.clone()),
        Error::PermissionDenied(m) => Error::PermissionDenied(m.clone()),
        Error::FailedPrecondition(m) => Error::FailedPrecondition(m.clone()),
        Error::AlreadyExists(m) => Error::AlreadyExists(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::RateLimited(m) => Error::RateLimited(m.clone()),
        Error::Overloaded(m) => Error::Overloaded(m.clone()),
        Error::Aborted(m) => Error::Aborted(m.clone()),
        Error::Internal(cause) => Error::internal(anyhow::anyhow!("{cause:#}")),
    }
}
