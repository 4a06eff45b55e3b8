//! Posting to one organization's credits in memory: what each credit or
//! debit draws, owes and records, worked out on the balance the account
//! holds, so that a single posting and a batch of a thousand follow the
//! same arithmetic. The caller persists what the book says changed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::credits::{
    Balance, CreditBalance, CreditEntry, CreditEntryKind, CreditHorizon, CreditLot, EntryDetails,
    Micros,
};
use super::ids::{CreditEntryId, OrgId};

/// One organization's credits, as of `now`, with every change posted
/// through it remembered until [`LedgerBook::take_changes`].
#[derive(Debug, Clone)]
pub struct LedgerBook {
    org: OrgId,
    balance: CreditBalance,
    now: DateTime<Utc>,
    changes: BookChanges,
}

/// What postings changed, for the caller to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookChanges {
    /// New ledger entries, in posting order.
    pub entries: Vec<CreditEntry>,
    /// New lots: the entry that created each and its amount.
    pub new_lots: Vec<(CreditEntryId, i64)>,
    /// Amounts taken from existing lots, summed per lot.
    pub draws: BTreeMap<CreditEntryId, i64>,
    /// The overdraft after the postings, when it changed.
    pub overdraft: Option<i64>,
}

impl BookChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl LedgerBook {
    /// Opens the book on the stored balance and writes off credit that
    /// expired before `now` (booked when it stopped counting).
    pub fn open(org: OrgId, balance: CreditBalance, now: DateTime<Utc>) -> Self {
        let mut book = Self {
            org,
            balance,
            now,
            changes: BookChanges::default(),
        };
        let expired: Vec<CreditLot> = book.balance.expired_lots(now).cloned().collect();
        for lot in expired {
            book.draw(lot.entry, lot.remaining);
            let details = EntryDetails {
                expired_entry: Some(lot.entry),
                ..EntryDetails::default()
            };
            let occurred_at = lot.expires_at.unwrap_or(now);
            let id = CreditEntryId::generate();
            book.record(
                id,
                CreditEntryKind::Expiry,
                -lot.remaining,
                details,
                occurred_at,
            );
        }
        book
    }

    pub fn org(&self) -> OrgId {
        self.org
    }

    /// What may be spent now.
    pub fn available(&self) -> Balance {
        self.balance.available_at(self.now)
    }

    /// Until when the credits stay positive with `held` set aside for holds.
    pub fn horizon(&self, held: i64) -> CreditHorizon {
        let mut reserved = self.balance.clone();
        reserved.overdraft += held;
        reserved.horizon(self.now)
    }

    /// Adds credit: it first repays an overdraft, the rest stays available
    /// until `details.expires_at`, if set.
    pub fn credit(
        &mut self,
        kind: CreditEntryKind,
        amount: Micros,
        details: EntryDetails,
    ) -> CreditEntry {
        let plan = self.balance.plan_credit(amount);
        if plan.repays_overdraft > 0 {
            self.balance.overdraft -= plan.repays_overdraft;
            self.changes.overdraft = Some(self.balance.overdraft);
        }
        let id = CreditEntryId::generate();
        if plan.into_lot > 0 {
            self.balance.lots.push(CreditLot {
                entry: id,
                expires_at: details.expires_at,
                remaining: plan.into_lot,
            });
            self.changes.new_lots.push((id, plan.into_lot));
        }
        self.record(id, kind, amount.get(), details, self.now)
    }

    /// Takes `amount`, soonest-expiring credit first. What the credit does
    /// not cover is owed; callers that must not overdraw check
    /// [`Self::available`] first.
    pub fn debit(
        &mut self,
        kind: CreditEntryKind,
        amount: Micros,
        details: EntryDetails,
    ) -> CreditEntry {
        let plan = self.balance.plan_debit(amount, self.now);
        for (lot, take) in plan.draws {
            self.draw(lot, take);
        }
        if plan.overdraft_added > 0 {
            self.balance.overdraft += plan.overdraft_added;
            self.changes.overdraft = Some(self.balance.overdraft);
        }
        self.record(
            CreditEntryId::generate(),
            kind,
            -amount.get(),
            details,
            self.now,
        )
    }

    /// Hands over what changed since the last call.
    pub fn take_changes(&mut self) -> BookChanges {
        std::mem::take(&mut self.changes)
    }

    fn draw(&mut self, id: CreditEntryId, amount: i64) {
        if let Some(lot) = self.balance.lots.iter_mut().find(|lot| lot.entry == id) {
            lot.remaining -= amount;
        }
        self.balance.lots.retain(|lot| lot.remaining > 0);
        // A lot created in this book is written with what is left of it.
        if let Some((_, remaining)) = self.changes.new_lots.iter_mut().find(|(lot, _)| *lot == id) {
            *remaining -= amount;
        } else {
            *self.changes.draws.entry(id).or_default() += amount;
        }
    }

    /// Open lots less the overdraft, counting lots not yet written off.
    fn book_balance(&self) -> i64 {
        self.balance
            .lots
            .iter()
            .map(|lot| lot.remaining)
            .sum::<i64>()
            - self.balance.overdraft
    }

    fn record(
        &mut self,
        id: CreditEntryId,
        kind: CreditEntryKind,
        amount: i64,
        details: EntryDetails,
        occurred_at: DateTime<Utc>,
    ) -> CreditEntry {
        let entry = CreditEntry {
            id,
            org_id: self.org,
            kind,
            amount,
            balance_after: Balance(self.book_balance()),
            details,
            occurred_at,
        };
        self.changes.entries.push(entry.clone());
        entry
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .expect("time")
            .to_utc()
    }

    fn lot(n: u128, remaining: i64, expires_in_days: Option<i64>) -> CreditLot {
        CreditLot {
            entry: CreditEntryId::from(uuid::Uuid::from_u128(n)),
            expires_at: expires_in_days.map(|d| now() + TimeDelta::days(d)),
            remaining,
        }
    }

    fn micros(n: i64) -> Micros {
        Micros::parse_positive(n).expect("positive")
    }

    /// Name, balance, postings (credit?, amount), book balance after,
    /// entries written, lots drawn, overdraft written.
    type Case = (
        &'static str,
        CreditBalance,
        Vec<(bool, i64)>,
        i64,
        usize,
        usize,
        Option<i64>,
    );

    #[test]
    fn postings_record_what_to_write() {
        let org = OrgId::from(uuid::Uuid::from_u128(1));
        let cases: Vec<Case> = vec![
            (
                "a debit draws the soonest expiry first",
                CreditBalance {
                    lots: vec![lot(1, 500, None), lot(2, 300, Some(3))],
                    overdraft: 0,
                },
                vec![(false, 400)],
                400,
                1,
                2,
                None,
            ),
            (
                "expired credit is written off when the book opens",
                CreditBalance {
                    lots: vec![lot(1, 500, Some(-1)), lot(2, 300, None)],
                    overdraft: 0,
                },
                vec![(false, 100)],
                200,
                2,
                2,
                None,
            ),
            (
                "a debit beyond the balance overdraws, a credit repays it first",
                CreditBalance {
                    lots: vec![lot(1, 100, None)],
                    overdraft: 0,
                },
                vec![(false, 250), (true, 1_000)],
                850,
                2,
                1,
                Some(0),
            ),
            (
                "many debits on one lot are one draw",
                CreditBalance {
                    lots: vec![lot(1, 1_000, None)],
                    overdraft: 0,
                },
                vec![(false, 1), (false, 2), (false, 3)],
                994,
                3,
                1,
                None,
            ),
        ];
        for (name, balance, postings, after, entries, draws, overdraft) in cases {
            let mut book = LedgerBook::open(org, balance, now());
            for (credit, amount) in postings {
                if credit {
                    book.credit(
                        CreditEntryKind::Grant,
                        micros(amount),
                        EntryDetails::default(),
                    );
                } else {
                    book.debit(
                        CreditEntryKind::Usage,
                        micros(amount),
                        EntryDetails::default(),
                    );
                }
            }
            let changes = book.take_changes();
            assert_eq!(
                changes.entries.last().map(|e| e.balance_after.0),
                Some(after),
                "{name}"
            );
            assert_eq!(changes.entries.len(), entries, "{name}");
            assert_eq!(changes.draws.len(), draws, "{name}");
            assert_eq!(changes.overdraft, overdraft, "{name}");
            assert!(book.take_changes().is_empty(), "{name}: handed over once");
        }
    }

    #[test]
    fn what_is_held_counts_against_the_horizon() {
        let org = OrgId::from(uuid::Uuid::from_u128(1));
        let book = LedgerBook::open(
            org,
            CreditBalance {
                lots: vec![lot(1, 1_000, None)],
                overdraft: 0,
            },
            now(),
        );
        assert_eq!(book.horizon(0), CreditHorizon::Always);
        assert_eq!(book.horizon(999), CreditHorizon::Always);
        assert_eq!(book.horizon(1_000), CreditHorizon::Never);
    }
}
