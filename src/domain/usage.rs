//! Usage the gateway reports, and credit it holds for requests in flight.
//!
//! A *hold* sets an estimate aside before a long request: while it is
//! active (and not past its expiry) what may be reserved is the balance
//! less every active hold, so concurrent requests cannot overdraw the
//! organization by more than they reserved. The request's usage report
//! *settles* the hold: the actual cost is debited, whatever it is, and the
//! rest is released; a report of zero only releases it. A hold is settled
//! exactly once: the same report again is a replay, another report is
//! refused.
//!
//! Every report and reservation carries an idempotency key: one debit (or
//! hold) per key and organization, and a replay answers the first result.
//! The rules are applied to one organization's book at a time, in arrival
//! order, so a batch of reports is decided exactly as the same reports one
//! by one would be.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::credit_holds::{CreditHold, HoldStatus, held_at};
use super::credits::{Balance, CreditEntry, CreditEntryKind, CreditHorizon, EntryDetails, Micros};
use super::ids::{HoldId, OrgId, UserId};
use super::ledger_book::{BookChanges, LedgerBook};

/// The most reports one `RecordUsageBatch` call carries.
pub const MAX_BATCH_REPORTS: usize = 1_000;

/// A usage report: a debit, or the settlement of a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDebit {
    pub key: String,
    /// Positive; zero only to release a hold.
    pub amount: Micros,
    pub user: UserId,
    pub model: String,
    pub hold: Option<HoldId>,
}

/// A reservation before a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    pub key: String,
    pub amount: Micros,
    pub user: UserId,
    pub model: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageRequest {
    Debit(UsageDebit),
    Reserve(HoldRequest),
}

impl UsageRequest {
    pub fn key(&self) -> &str {
        match self {
            Self::Debit(debit) => &debit.key,
            Self::Reserve(hold) => &hold.key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageOutcome {
    Debited {
        entry: CreditEntry,
        replayed: bool,
    },
    /// A report of zero released the hold; nothing was debited.
    Released {
        hold: CreditHold,
        balance: Balance,
        replayed: bool,
    },
    Reserved {
        hold: CreditHold,
        replayed: bool,
    },
    Refused(UsageRefusal),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageRefusal {
    #[error("credits are locked while organization {0} is not entitled")]
    CreditsLocked(OrgId),
    #[error("idempotency key {0:?} was used for a different amount")]
    KeyReused(String),
    #[error("the credit available ({available}) cannot cover the reservation ({wanted})")]
    InsufficientCredits { available: Balance, wanted: Micros },
    #[error("hold {0} is not one of this organization's")]
    HoldNotFound(HoldId),
    #[error("hold {0} was already settled by another usage report")]
    HoldAlreadySettled(HoldId),
    #[error("a usage report of zero must settle a hold")]
    ZeroWithoutHold,
}

/// One organization's reports applied in order to its book.
#[derive(Debug)]
pub struct OrgUsage {
    book: LedgerBook,
    /// Active holds, and any other the batch's reports name.
    holds: Vec<CreditHold>,
    /// Usage entries already posted, by key.
    posted: HashMap<String, CreditEntry>,
    locked: bool,
    now: DateTime<Utc>,
    new_holds: Vec<HoldId>,
    closed_holds: Vec<HoldId>,
}

/// What applying the reports changed, for the caller to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgUsageChanges {
    pub book: BookChanges,
    pub new_holds: Vec<CreditHold>,
    /// Holds settled or released, with their new status.
    pub closed_holds: Vec<CreditHold>,
    /// When the credits (less what is held) are positive, after it all.
    pub horizon: CreditHorizon,
    /// The balance after it all (holds not deducted).
    pub balance: i64,
}

impl OrgUsage {
    pub fn new(
        book: LedgerBook,
        holds: Vec<CreditHold>,
        posted: Vec<CreditEntry>,
        locked: bool,
        now: DateTime<Utc>,
    ) -> Self {
        let posted = posted
            .into_iter()
            .filter_map(|entry| Some((entry.details.idempotency_key.clone()?, entry)))
            .collect();
        Self {
            book,
            holds,
            posted,
            locked,
            now,
            new_holds: Vec::new(),
            closed_holds: Vec::new(),
        }
    }

    pub fn apply(&mut self, request: UsageRequest) -> UsageOutcome {
        match request {
            UsageRequest::Debit(debit) => self.debit(debit),
            UsageRequest::Reserve(hold) => self.reserve(hold),
        }
        .unwrap_or_else(UsageOutcome::Refused)
    }

    /// Credit that may still be reserved: the balance less active holds.
    pub fn reservable(&self) -> Balance {
        Balance(self.book.available().0 - held_at(&self.holds, self.now))
    }

    fn debit(&mut self, debit: UsageDebit) -> Result<UsageOutcome, UsageRefusal> {
        if let Some(first) = self.posted.get(&debit.key) {
            return if first.amount.abs() == debit.amount.get() {
                Ok(UsageOutcome::Debited {
                    entry: first.clone(),
                    replayed: true,
                })
            } else {
                Err(UsageRefusal::KeyReused(debit.key))
            };
        }
        let Some(hold_id) = debit.hold else {
            if debit.amount == Micros::ZERO {
                return Err(UsageRefusal::ZeroWithoutHold);
            }
            if self.locked {
                return Err(UsageRefusal::CreditsLocked(self.book.org()));
            }
            return Ok(self.post(debit, None));
        };
        let hold = self
            .holds
            .iter_mut()
            .find(|hold| hold.id == hold_id)
            .ok_or(UsageRefusal::HoldNotFound(hold_id))?;
        match hold.status {
            // A hold past its expiry is still settled: the request it
            // covered was served, so its usage is owed.
            HoldStatus::Active | HoldStatus::Expired => {}
            HoldStatus::Released if hold.settled_by.as_deref() == Some(debit.key.as_str()) => {
                return if debit.amount == Micros::ZERO {
                    Ok(UsageOutcome::Released {
                        hold: hold.clone(),
                        balance: self.book.available(),
                        replayed: true,
                    })
                } else {
                    Err(UsageRefusal::KeyReused(debit.key))
                };
            }
            HoldStatus::Settled | HoldStatus::Released => {
                return Err(UsageRefusal::HoldAlreadySettled(hold_id));
            }
        }
        hold.settled_by = Some(debit.key.clone());
        self.closed_holds.push(hold_id);
        if debit.amount == Micros::ZERO {
            hold.status = HoldStatus::Released;
            return Ok(UsageOutcome::Released {
                hold: hold.clone(),
                balance: self.book.available(),
                replayed: false,
            });
        }
        hold.status = HoldStatus::Settled;
        Ok(self.post(debit, Some(hold_id)))
    }

    /// Debits in full: the request was served, so a debit beyond the
    /// balance overdraws, and the next paid request is denied.
    fn post(&mut self, debit: UsageDebit, hold: Option<HoldId>) -> UsageOutcome {
        let details = EntryDetails {
            idempotency_key: Some(debit.key.clone()),
            user_id: Some(debit.user),
            model: Some(debit.model),
            hold,
            ..EntryDetails::default()
        };
        let entry = self
            .book
            .debit(CreditEntryKind::Usage, debit.amount, details);
        self.posted.insert(debit.key, entry.clone());
        UsageOutcome::Debited {
            entry,
            replayed: false,
        }
    }

    fn reserve(&mut self, request: HoldRequest) -> Result<UsageOutcome, UsageRefusal> {
        if let Some(first) = self
            .holds
            .iter()
            .find(|hold| hold.idempotency_key == request.key)
        {
            return if first.amount == request.amount {
                Ok(UsageOutcome::Reserved {
                    hold: first.clone(),
                    replayed: true,
                })
            } else {
                Err(UsageRefusal::KeyReused(request.key))
            };
        }
        if self.locked {
            return Err(UsageRefusal::CreditsLocked(self.book.org()));
        }
        let available = self.reservable();
        if !available.covers(request.amount) {
            return Err(UsageRefusal::InsufficientCredits {
                available,
                wanted: request.amount,
            });
        }
        let hold = CreditHold {
            id: HoldId::generate(),
            org_id: self.book.org(),
            amount: request.amount,
            idempotency_key: request.key,
            user_id: request.user,
            model: request.model,
            created_at: self.now,
            expires_at: request.expires_at,
            status: HoldStatus::Active,
            settled_by: None,
        };
        self.new_holds.push(hold.id);
        self.holds.push(hold.clone());
        Ok(UsageOutcome::Reserved {
            hold,
            replayed: false,
        })
    }

    /// Everything the reports changed.
    pub fn finish(mut self) -> OrgUsageChanges {
        let horizon = self.book.horizon(held_at(&self.holds, self.now));
        let pick = |ids: &[HoldId], holds: &[CreditHold]| -> Vec<CreditHold> {
            holds
                .iter()
                .filter(|hold| ids.contains(&hold.id))
                .cloned()
                .collect()
        };
        let new_holds = pick(&self.new_holds, &self.holds);
        // A hold made and settled in the same batch is written once, settled.
        let closed_holds = pick(&self.closed_holds, &self.holds)
            .into_iter()
            .filter(|hold| !self.new_holds.contains(&hold.id))
            .collect();
        OrgUsageChanges {
            balance: self.book.available().0,
            book: self.book.take_changes(),
            new_holds,
            closed_holds,
            horizon,
        }
    }
}

#[cfg(test)]
mod tests;
