//! Posting to an organization's credit ledger within a use case's
//! transaction.
//!
//! [`Ledger::open`] locks the organization's credit account, so everything
//! posted through it is serialized with every other change of the same
//! credits, usage batches included, and each sees the balance the previous
//! one left. Opening also writes off credit that expired, so an expiry is
//! recorded at the latest by the next change (or by the sweep), and a read
//! in between already leaves it out. The arithmetic is the domain's
//! [`LedgerBook`]; this adapter persists what it says after each posting,
//! and announces the balance crossing its low-balance threshold or zero
//! (`credits.low`, `credits.exhausted`) in the same transaction.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Service;
use super::lifecycle::{BalanceAfter, record_balance_alerts};
use crate::domain::credits::{
    Balance, CreditEntry, CreditEntryKind, CreditHorizon, EntryDetails, Micros,
};
use crate::domain::ids::OrgId;
use crate::domain::ledger_book::LedgerBook;
use crate::domain::lifecycle::alerts::BalanceLevel;
use crate::error::{Error, Result};
use crate::store;

#[derive(Debug)]
pub(super) struct Ledger {
    org: OrgId,
    book: LedgerBook,
    /// What active holds set aside; it may not be spent by anything else.
    held: i64,
    /// When the credits are positive, as stored; kept current after each
    /// posting, so the entitlement decision (and its change announcements)
    /// follow only when positivity changes, not with every debit.
    horizon: CreditHorizon,
    /// The balance level last announced, and the threshold it is against.
    level: Option<BalanceLevel>,
    threshold: i64,
    now: DateTime<Utc>,
}

impl Service {
    /// Locks the organization's credit account and writes off expired
    /// credit (see [`Ledger`]).
    pub(super) async fn open_ledger(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        now: DateTime<Utc>,
    ) -> Result<Ledger> {
        let account = lock_account(conn, org).await?;
        let held = store::credit_holds::held(conn, org, now).await?;
        let mut ledger = Ledger {
            org,
            book: LedgerBook::open(org, account.balance, now),
            held,
            horizon: account.horizon,
            level: account.balance_level,
            threshold: self.low_balance_threshold(account.low_balance_threshold),
            now,
        };
        ledger.persist(conn).await?;
        Ok(ledger)
    }
}

impl Ledger {
    /// What may be spent now: the balance less what holds set aside.
    pub(super) fn available(&self) -> Balance {
        Balance(self.book.available().0 - self.held)
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
        let entry = self.book.credit(kind, amount, details);
        self.persist(conn).await?;
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
        let entry = self.book.debit(kind, amount, details);
        self.persist(conn).await?;
        Ok(entry)
    }

    /// Puts the balance against a new low-balance threshold: a balance
    /// already below a raised threshold is announced low now.
    pub(super) async fn set_threshold(
        &mut self,
        conn: &mut PgConnection,
        threshold: i64,
    ) -> Result<()> {
        self.threshold = threshold;
        self.persist(conn).await
    }

    async fn persist(&mut self, conn: &mut PgConnection) -> Result<()> {
        let changes = self.book.take_changes();
        if !changes.is_empty() {
            store::credit_postings::write(conn, &[(self.org, &changes)]).await?;
        }
        let horizon = self.book.horizon(self.held);
        if horizon != self.horizon {
            store::credit_postings::set_horizons(conn, &[(self.org, horizon)]).await?;
            self.horizon = horizon;
        }
        let after = BalanceAfter {
            org: self.org,
            previous: self.level,
            threshold: self.threshold,
            balance: self.book.available().0,
        };
        for (_, level) in record_balance_alerts(conn, self.now, &[after]).await? {
            self.level = Some(level);
        }
        Ok(())
    }
}

/// Locks one organization's account, creating it on first use (within the
/// caller's transaction: this path holds the organization's own lock, or
/// touches this account alone, so it cannot cross another's order).
async fn lock_account(
    conn: &mut PgConnection,
    org: OrgId,
) -> Result<store::credit_postings::LockedAccount> {
    let ids = [org.as_uuid()];
    if let Some(account) = store::credit_postings::lock_accounts(conn, &ids)
        .await?
        .remove(&org)
    {
        return Ok(account);
    }
    store::credit_postings::create_accounts(conn, &ids).await?;
    store::credit_postings::lock_accounts(conn, &ids)
        .await?
        .remove(&org)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("credit account {org} was not created")))
}
