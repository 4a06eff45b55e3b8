//! Prepaid credits: balance, operator grants and adjustments (purchases
//! are in `credit_purchases`, the gateway's usage and holds in `usage`).
//!
//! Credits are locked while the organization is not entitled (its trial is
//! hard-expired with no subscription, or its subscription ended): the
//! balance stays, usage is refused, and buying a subscription unlocks it.
//!
//! Lock order, the same for every credit change so none can deadlock:
//! grants, adjustments, purchases and instance charges lock the
//! organization (`for no key update`) and then the credit account; usage
//! batches, holds and expiry write-offs lock accounts alone, several in one
//! batch always in id order, and create missing accounts outside their
//! transaction.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::audit_trail::{AuditAction, record};
use super::{Actor, Service, lifecycle, load_org, load_state, lock_org};
use crate::domain::credit_holds::{CreditHold, held_at};
use crate::domain::credits::{
    Balance, CreditEntry, CreditEntryKind, EntryDetails, Micros, NextExpiry,
};
use crate::domain::ids::{CreditEntryId, OrgId};
use crate::domain::lifecycle::LifecycleEvent;
use crate::domain::reason::ErrorReason;
use crate::domain::role::{OrgAction, Role};
use crate::error::{Error, Result};
use crate::store;

/// The most entries one ledger page holds.
pub const MAX_LEDGER_PAGE: i64 = 200;

/// An operator's grant.
#[derive(Debug, Clone)]
pub struct CreditGrant {
    pub amount: Micros,
    pub reason: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub idempotency_key: String,
}

/// An operator's correction; negative amounts take credit away.
#[derive(Debug, Clone)]
pub struct CreditAdjustment {
    pub amount: i64,
    pub reason: String,
    pub idempotency_key: String,
}

/// A ledger write and whether it is a replay of an earlier request.
#[derive(Debug, Clone)]
pub struct Posted {
    pub entry: CreditEntry,
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct CreditBalanceView {
    /// `None` for members who may not see amounts.
    pub balance: Option<Balance>,
    /// What active holds set aside; `None` when amounts are hidden.
    pub held: Option<i64>,
    pub active_holds: usize,
    pub next_expiry: Option<NextExpiry>,
    pub locked: bool,
    pub amounts_visible: bool,
}

/// Whether owners and billing managers (and operators) see amounts.
fn sees_amounts(role: Option<Role>) -> bool {
    role.is_none_or(|role| role.permits(OrgAction::ManageBilling))
}

impl Service {
    pub async fn get_credit_balance(&self, actor: &Actor, org: OrgId) -> Result<CreditBalanceView> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let organization = load_org(&mut tx, org).await?;
        let role = self.authorize(&mut tx, actor, org, OrgAction::View).await?;
        let state = load_state(&mut tx, organization, now).await?;
        let credits = store::credits::balance(&mut tx, org).await?;
        let holds = store::credit_holds::active(&mut tx, org).await?;
        let visible = sees_amounts(role);
        Ok(CreditBalanceView {
            balance: visible.then(|| credits.available_at(now)),
            held: visible.then(|| held_at(&holds, now)),
            active_holds: holds.iter().filter(|hold| hold.counts_at(now)).count(),
            next_expiry: credits.next_expiry(now),
            locked: state.access(now).locks_credits(),
            amounts_visible: visible,
        })
    }

    /// The ledger, newest first, and the active holds: owners, billing
    /// managers and operators.
    pub async fn list_credit_entries(
        &self,
        actor: &Actor,
        org: OrgId,
        before: Option<CreditEntryId>,
        limit: i64,
    ) -> Result<(Vec<CreditEntry>, Vec<CreditHold>)> {
        let mut conn = self.store().pool().acquire().await?;
        load_org(&mut conn, org).await?;
        self.authorize(&mut conn, actor, org, OrgAction::ManageBilling)
            .await?;
        let limit = limit.clamp(1, MAX_LEDGER_PAGE);
        let entries = store::credits::list_entries(&mut conn, org, before, limit).await?;
        let holds = store::credit_holds::active(&mut conn, org).await?;
        Ok((entries, holds))
    }

    pub async fn grant_credits(
        &self,
        actor: &Actor,
        org: OrgId,
        grant: CreditGrant,
    ) -> Result<Posted> {
        Self::require_operator(actor, "grant credits")?;
        let now = self.now();
        if grant.expires_at.is_some_and(|at| at <= now) {
            return Err(Error::invalid("expires_at", "must be in the future"));
        }
        let mut tx = self.store().begin().await?;
        lock_org(&mut tx, org).await?;
        let mut ledger = self.open_ledger(&mut tx, org, now).await?;
        let kind = CreditEntryKind::Grant;
        if let Some(first) = self
            .replay(
                &mut tx,
                org,
                kind,
                &grant.idempotency_key,
                grant.amount.get(),
            )
            .await?
        {
            return Ok(first);
        }
        let entry = ledger
            .credit(
                &mut tx,
                kind,
                grant.amount,
                EntryDetails {
                    idempotency_key: Some(grant.idempotency_key),
                    reason: Some(grant.reason),
                    expires_at: grant.expires_at,
                    ..EntryDetails::default()
                },
            )
            .await?;
        let granted = LifecycleEvent::CreditsGranted(entry.clone());
        lifecycle::record(&mut tx, Some(org), now, [granted]).await?;
        record(
            &mut tx,
            org,
            actor,
            AuditAction::CreditsGranted,
            None,
            Some(entry_snapshot(&entry)),
            now,
        )
        .await?;
        self.renew_due_instances(&mut tx, org, &mut ledger).await?;
        self.commit(tx).await?;
        Ok(Posted {
            entry,
            replayed: false,
        })
    }

    /// Owners, billing managers and operators: the balance below which
    /// `credits.low` is announced for this organization (`None`: the
    /// catalog's); returns the threshold that applies now.
    pub async fn set_low_balance_threshold(
        &self,
        actor: &Actor,
        org: OrgId,
        threshold: Option<Micros>,
    ) -> Result<Micros> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        lock_org(&mut tx, org).await?;
        self.authorize(&mut tx, actor, org, OrgAction::ManageBilling)
            .await?;
        let mut ledger = self.open_ledger(&mut tx, org, now).await?;
        let own = threshold.map(Micros::get);
        store::credit_postings::set_low_balance_threshold(&mut tx, org, own).await?;
        let applies = self.low_balance_threshold(own);
        ledger.set_threshold(&mut tx, applies).await?;
        self.commit(tx).await?;
        Micros::non_negative(applies).map_err(|e| Error::internal(anyhow::anyhow!(e.0)))
    }

    /// An operator's correction. Taking credit away never overdraws.
    pub async fn adjust_credits(
        &self,
        actor: &Actor,
        org: OrgId,
        adjustment: CreditAdjustment,
    ) -> Result<Posted> {
        Self::require_operator(actor, "adjust credits")?;
        let now = self.now();
        let amount = Micros::parse_positive(adjustment.amount.saturating_abs())
            .map_err(|e| Error::invalid("amount_micros", e.0))?;
        let mut tx = self.store().begin().await?;
        lock_org(&mut tx, org).await?;
        let mut ledger = self.open_ledger(&mut tx, org, now).await?;
        let kind = CreditEntryKind::Adjustment;
        if let Some(first) = self
            .replay(
                &mut tx,
                org,
                kind,
                &adjustment.idempotency_key,
                adjustment.amount,
            )
            .await?
        {
            return Ok(first);
        }
        let details = EntryDetails {
            idempotency_key: Some(adjustment.idempotency_key),
            reason: Some(adjustment.reason),
            ..EntryDetails::default()
        };
        let entry = if adjustment.amount > 0 {
            ledger.credit(&mut tx, kind, amount, details).await?
        } else {
            if !ledger.available().covers(amount) {
                return Err(Error::precondition(
                    ErrorReason::InsufficientCredits,
                    format!(
                        "the balance is {}; an adjustment may not take away more ({amount})",
                        ledger.available()
                    ),
                ));
            }
            ledger.debit(&mut tx, kind, amount, details).await?
        };
        record(
            &mut tx,
            org,
            actor,
            AuditAction::CreditsAdjusted,
            None,
            Some(entry_snapshot(&entry)),
            now,
        )
        .await?;
        if adjustment.amount > 0 {
            self.renew_due_instances(&mut tx, org, &mut ledger).await?;
        }
        self.commit(tx).await?;
        Ok(Posted {
            entry,
            replayed: false,
        })
    }

    /// The first result of an earlier request with the same key; a key used
    /// for a different amount is refused rather than silently replayed.
    async fn replay(
        &self,
        conn: &mut PgConnection,
        org: OrgId,
        kind: CreditEntryKind,
        key: &str,
        amount: i64,
    ) -> Result<Option<Posted>> {
        let Some(first) = store::credits::by_idempotency_key(conn, org, kind, key).await? else {
            return Ok(None);
        };
        if first.amount.abs() != amount.abs() {
            return Err(Error::exists(
                ErrorReason::IdempotencyKeyReused,
                format!("idempotency key {key:?} was used for a different amount"),
            ));
        }
        Ok(Some(Posted {
            entry: first,
            replayed: true,
        }))
    }

    /// Writes off expired credit of up to `limit` organizations; returns how
    /// many it visited.
    pub async fn expire_credits(&self, limit: i64) -> Result<usize> {
        let now = self.now();
        let orgs = {
            let mut conn = self.store().pool().acquire().await?;
            store::credits::orgs_with_expired_credit(&mut conn, now, limit).await?
        };
        for org in &orgs {
            let mut tx = self.store().begin().await?;
            self.open_ledger(&mut tx, *org, now).await?;
            self.commit(tx).await?;
        }
        Ok(orgs.len())
    }
}

/// A ledger entry for the audit trail.
pub(super) fn entry_snapshot(entry: &CreditEntry) -> serde_json::Value {
    json!({
        "entry_id": entry.id,
        "kind": entry.kind.as_str(),
        "amount_micros": entry.amount,
        "balance_after_micros": entry.balance_after.0,
        "reason": entry.details.reason,
        "expires_at": entry.details.expires_at,
        "stripe_payment_id": entry.details.stripe_payment_id,
    })
}
