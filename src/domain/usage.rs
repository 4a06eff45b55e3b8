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

use super::credits::{Balance, CreditEntry, CreditEntryKind, CreditHorizon, EntryDetails, Micros};
use super::ids::{HoldId, OrgId, UserId};
use super::ledger_book::{BookChanges, LedgerBook};

/// The most reports one `RecordUsageBatch` call carries.
pub const MAX_BATCH_REPORTS: usize = 1_000;

/// Where a hold stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    /// Set aside until settled or expired.
    Active,
    /// Settled by a usage debit.
    Settled,
    /// Released by a usage report of zero.
    Released,
    /// Released by the background loop after its expiry.
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Settled => "settled",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Active, Self::Settled, Self::Released, Self::Expired]
            .into_iter()
            .find(|status| status.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditHold {
    pub id: HoldId,
    pub org_id: OrgId,
    pub amount: Micros,
    pub idempotency_key: String,
    pub user_id: UserId,
    pub model: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub status: HoldStatus,
    /// The key of the usage report that settled or released it.
    pub settled_by: Option<String>,
}

impl CreditHold {
    /// Whether it still sets credit aside at `now`.
    pub fn counts_at(&self, now: DateTime<Utc>) -> bool {
        self.status == HoldStatus::Active && now < self.expires_at
    }
}

/// What active holds set aside at `now`.
pub fn held_at<'a>(holds: impl IntoIterator<Item = &'a CreditHold>, now: DateTime<Utc>) -> i64 {
    holds
        .into_iter()
        .filter(|hold| hold.counts_at(now))
        .map(|hold| hold.amount.get())
        .sum()
}

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
            book: self.book.take_changes(),
            new_holds,
            closed_holds,
            horizon,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::credits::{CreditBalance, CreditLot};
    use crate::domain::ids::CreditEntryId;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .expect("time")
            .to_utc()
    }

    fn org() -> OrgId {
        OrgId::from(uuid::Uuid::from_u128(1))
    }

    fn usage(balance: i64, locked: bool, holds: Vec<CreditHold>) -> OrgUsage {
        let lots = (balance > 0)
            .then(|| CreditLot {
                entry: CreditEntryId::from(uuid::Uuid::from_u128(9)),
                expires_at: None,
                remaining: balance,
            })
            .into_iter()
            .collect();
        let book = LedgerBook::open(org(), CreditBalance { lots, overdraft: 0 }, now());
        OrgUsage::new(book, holds, Vec::new(), locked, now())
    }

    fn user() -> UserId {
        UserId::parse("alice").expect("user")
    }

    fn debit(key: &str, amount: i64, hold: Option<HoldId>) -> UsageRequest {
        UsageRequest::Debit(UsageDebit {
            key: key.into(),
            amount: Micros::non_negative(amount).expect("amount"),
            user: user(),
            model: "gpt-4o".into(),
            hold,
        })
    }

    fn reserve(key: &str, amount: i64) -> UsageRequest {
        UsageRequest::Reserve(HoldRequest {
            key: key.into(),
            amount: Micros::parse_positive(amount).expect("amount"),
            user: user(),
            model: None,
            expires_at: now() + TimeDelta::minutes(10),
        })
    }

    /// A short name for each outcome, with the balance or hold it left.
    fn summary(outcome: &UsageOutcome) -> String {
        match outcome {
            UsageOutcome::Debited { entry, replayed } => {
                format!(
                    "debited {} -> {} replayed={replayed}",
                    entry.amount, entry.balance_after.0
                )
            }
            UsageOutcome::Released { replayed, .. } => format!("released replayed={replayed}"),
            UsageOutcome::Reserved { hold, replayed } => {
                format!("reserved {} replayed={replayed}", hold.amount.get())
            }
            UsageOutcome::Refused(refusal) => format!("refused: {refusal}"),
        }
    }

    #[test]
    fn reports_and_reservations_follow_the_rules_in_arrival_order() {
        let cases: Vec<(&str, i64, bool, Vec<UsageRequest>, Vec<&str>)> = vec![
            (
                "debits, a replay and a reused key",
                1_000,
                false,
                vec![
                    debit("a", 300, None),
                    debit("a", 300, None),
                    debit("a", 5, None),
                ],
                vec![
                    "debited -300 -> 700 replayed=false",
                    "debited -300 -> 700 replayed=true",
                    "refused: idempotency key \"a\" was used for a different amount",
                ],
            ),
            (
                "usage beyond the balance overdraws (the request was served)",
                100,
                false,
                vec![debit("a", 250, None)],
                vec!["debited -250 -> -150 replayed=false"],
            ),
            (
                "locked credits refuse usage and reservations",
                1_000,
                true,
                vec![debit("a", 1, None), reserve("r", 1)],
                vec![
                    "refused: credits are locked while organization 00000000-0000-0000-0000-000000000001 is not entitled",
                    "refused: credits are locked while organization 00000000-0000-0000-0000-000000000001 is not entitled",
                ],
            ),
            (
                "reservations count against each other, a replay does not",
                1_000,
                false,
                vec![
                    reserve("r1", 600),
                    reserve("r1", 600),
                    reserve("r2", 500),
                    reserve("r3", 400),
                ],
                vec![
                    "reserved 600 replayed=false",
                    "reserved 600 replayed=true",
                    "refused: the credit available ($0.0004) cannot cover the reservation ($0.0005)",
                    "reserved 400 replayed=false",
                ],
            ),
            (
                "a zero report needs a hold",
                1_000,
                false,
                vec![debit("z", 0, None)],
                vec!["refused: a usage report of zero must settle a hold"],
            ),
        ];
        for (name, balance, locked, requests, want) in cases {
            let mut usage = usage(balance, locked, Vec::new());
            let got: Vec<String> = requests
                .into_iter()
                .map(|request| summary(&usage.apply(request)))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_hold_is_settled_once_for_the_actual_cost() {
        let mut usage = usage(1_000, false, Vec::new());
        let UsageOutcome::Reserved { hold, .. } = usage.apply(reserve("r", 800)) else {
            panic!("reserved");
        };
        assert_eq!(usage.reservable(), Balance(200));
        // More than reserved is still debited in full.
        let settle = debit("u", 900, Some(hold.id));
        assert_eq!(
            summary(&usage.apply(settle.clone())),
            "debited -900 -> 100 replayed=false"
        );
        assert_eq!(
            summary(&usage.apply(settle)),
            "debited -900 -> 100 replayed=true"
        );
        assert_eq!(
            summary(&usage.apply(debit("other", 10, Some(hold.id)))),
            format!(
                "refused: hold {} was already settled by another usage report",
                hold.id
            )
        );
        assert_eq!(usage.reservable(), Balance(100), "nothing is held any more");
        let changes = usage.finish();
        // Made and settled in one batch: written once, settled.
        assert_eq!(changes.new_holds.len(), 1);
        assert_eq!(changes.new_holds[0].status, HoldStatus::Settled);
        assert!(changes.closed_holds.is_empty());
        assert_eq!(changes.book.entries.len(), 1);
    }

    #[test]
    fn a_stored_hold_is_released_by_zero_expired_ones_stop_counting() {
        let stored = |key: &str, expires_in: i64| CreditHold {
            id: HoldId::generate(),
            org_id: org(),
            amount: Micros::parse_positive(500).expect("amount"),
            idempotency_key: key.into(),
            user_id: user(),
            model: None,
            created_at: now() - TimeDelta::minutes(20),
            expires_at: now() + TimeDelta::minutes(expires_in),
            status: HoldStatus::Active,
            settled_by: None,
        };
        let live = stored("live", 5);
        let expired = stored("old", -5);
        let mut usage = usage(1_000, false, vec![live.clone(), expired.clone()]);
        assert_eq!(
            usage.reservable(),
            Balance(500),
            "the expired hold sets nothing aside"
        );
        assert_eq!(
            summary(&usage.apply(debit("z", 0, Some(live.id)))),
            "released replayed=false"
        );
        assert_eq!(
            summary(&usage.apply(debit("z", 0, Some(live.id)))),
            "released replayed=true"
        );
        assert_eq!(usage.reservable(), Balance(1_000));
        // A hold past its expiry still settles the usage it covered.
        assert_eq!(
            summary(&usage.apply(debit("late", 200, Some(expired.id)))),
            "debited -200 -> 800 replayed=false"
        );
        let unknown = HoldId::generate();
        assert_eq!(
            summary(&usage.apply(debit("x", 1, Some(unknown)))),
            format!("refused: hold {unknown} is not one of this organization's")
        );
        let changes = usage.finish();
        let statuses: Vec<_> = changes
            .closed_holds
            .iter()
            .map(|h| (h.idempotency_key.as_str(), h.status))
            .collect();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.contains(&("live", HoldStatus::Released)));
        assert!(statuses.contains(&("old", HoldStatus::Settled)));
        assert_eq!(changes.horizon, CreditHorizon::Always);
    }
}
