//! Posting to an organization's credit ledger within a use case's
//! transaction.
//!
//! [`Ledger::open`] locks the organization's credit account, so everything
//! posted through it is serialized with every other change of the same
//! credits: 200 concurrent debits queue on the row and each sees the balance
//! the previous one left. Opening also writes off credit that expired, so
//! an expiry is recorded at the latest by the next change (or by the
//! sweep), and a read in between already leaves it out.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::credits::{
    Balance, CreditBalance, CreditEntry, CreditEntryKind, CreditHorizon, CreditLot, EntryDetails,
    Micros,
};
use crate::domain::ids::{CreditEntryId, OrgId};
use crate::error::Result;
use crate::store;

#[derive(Debug)]
pub(super) struct Ledger {
    org: OrgId,
    balance: CreditBalance,
    /// When the credits are positive, as stored; kept current after each
    /// posting, so the entitlement decision (and its change announcements)
    /// follow only when positivity changes, not with every debit.
    horizon: CreditHorizon,
    now: DateTime<Utc>,
}

impl Ledger {
    /// Locks the account and writes off expired credit.
    pub(super) async fn open(
        conn: &mut PgConnection,
        org: OrgId,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let (balance, horizon) = store::credits::lock_account(conn, org).await?;
        let mut ledger = Self {
            org,
            balance,
            horizon,
            now,
        };
        ledger.write_off_expired(conn).await?;
        ledger.store_horizon(conn).await?;
        Ok(ledger)
    }

    /// What may be spent now.
    pub(super) fn available(&self) -> Balance {
        self.balance.available_at(self.now)
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

    async fn write_off_expired(&mut self, conn: &mut PgConnection) -> Result<()> {
        let expired: Vec<CreditLot> = self.balance.expired_lots(self.now).cloned().collect();
        for lot in expired {
            store::credits::draw(conn, lot.entry, lot.remaining).await?;
            self.take_from_lot(lot.entry, lot.remaining);
            let entry = self.entry(
                CreditEntryKind::Expiry,
                -lot.remaining,
                EntryDetails {
                    expired_entry: Some(lot.entry),
                    ..EntryDetails::default()
                },
                // Booked when the credit stopped counting.
                lot.expires_at.unwrap_or(self.now),
            );
            store::credits::insert_entry(conn, &entry).await?;
        }
        Ok(())
    }

    /// Adds credit: it first repays an overdraft, the rest stays available
    /// until `details.expires_at`, if set.
    pub(super) async fn credit(
        &mut self,
        conn: &mut PgConnection,
        kind: CreditEntryKind,
        amount: Micros,
        details: EntryDetails,
    ) -> Result<CreditEntry> {
        let plan = self.balance.plan_credit(amount);
        if plan.repays_overdraft > 0 {
            self.balance.overdraft -= plan.repays_overdraft;
            store::credits::set_overdraft(conn, self.org, self.balance.overdraft).await?;
        }
        let expires_at = details.expires_at;
        let mut entry = self.entry(kind, amount.get(), details, self.now);
        entry.balance_after = Balance(self.book_balance() + plan.into_lot);
        store::credits::insert_entry(conn, &entry).await?;
        if plan.into_lot > 0 {
            store::credits::insert_lot(conn, &entry, plan.into_lot).await?;
            self.balance.lots.push(CreditLot {
                entry: entry.id,
                expires_at,
                remaining: plan.into_lot,
            });
        }
        self.store_horizon(conn).await?;
        Ok(entry)
    }

    /// Takes `amount`, soonest-expiring credit first. What the credit does
    /// not cover is owed; callers that must not overdraw check
    /// [`Self::available`] first.
    pub(super) async fn debit(
        &mut self,
        conn: &mut PgConnection,
        kind: CreditEntryKind,
        amount: Micros,
        details: EntryDetails,
    ) -> Result<CreditEntry> {
        let plan = self.balance.plan_debit(amount, self.now);
        for (lot, take) in &plan.draws {
            store::credits::draw(conn, *lot, *take).await?;
            self.take_from_lot(*lot, *take);
        }
        if plan.overdraft_added > 0 {
            self.balance.overdraft += plan.overdraft_added;
            store::credits::set_overdraft(conn, self.org, self.balance.overdraft).await?;
        }
        let entry = self.entry(kind, -amount.get(), details, self.now);
        store::credits::insert_entry(conn, &entry).await?;
        self.store_horizon(conn).await?;
        Ok(entry)
    }

    async fn store_horizon(&mut self, conn: &mut PgConnection) -> Result<()> {
        let horizon = self.balance.horizon(self.now);
        if horizon != self.horizon {
            store::credits::set_horizon(conn, self.org, horizon).await?;
            self.horizon = horizon;
        }
        Ok(())
    }

    fn take_from_lot(&mut self, id: CreditEntryId, amount: i64) {
        if let Some(lot) = self.balance.lots.iter_mut().find(|lot| lot.entry == id) {
            lot.remaining -= amount;
        }
        self.balance.lots.retain(|lot| lot.remaining > 0);
    }

    fn entry(
        &self,
        kind: CreditEntryKind,
        amount: i64,
        details: EntryDetails,
        occurred_at: DateTime<Utc>,
    ) -> CreditEntry {
        CreditEntry {
            id: CreditEntryId::generate(),
            org_id: self.org,
            kind,
            amount,
            balance_after: Balance(self.book_balance()),
            details,
            occurred_at,
        }
    }
}
