//! Writing credit postings: locking the accounts they change and storing
//! what a [`BookChanges`] says, for one organization or a batch of many,
//! in a fixed number of statements however many entries there are.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::credits::{CreditBalance, CreditHorizon, CreditLot};
use crate::domain::ids::{InstanceId, OrgId, UserId};
use crate::domain::ledger_book::BookChanges;
use crate::domain::lifecycle::alerts::BalanceLevel;
use crate::error::Result;

/// An account as locked: its credits, the horizon last stored, and its
/// low-balance alert state.
#[derive(Debug, Clone)]
pub struct LockedAccount {
    pub balance: CreditBalance,
    pub horizon: CreditHorizon,
    /// The organization's own threshold; `None` follows the catalog's.
    pub low_balance_threshold: Option<i64>,
    /// The level last announced; `None` until the first posting looks.
    pub balance_level: Option<BalanceLevel>,
}

/// Creates the accounts that do not exist yet, each in its own short
/// statement outside any posting's transaction, so that creating one never
/// takes a lock out of the order [`lock_accounts`] takes them in.
#[tracing::instrument(
    name = "db credit_postings::create_accounts",
    level = "debug",
    skip_all
)]
pub async fn create_accounts(conn: &mut PgConnection, orgs: &[Uuid]) -> Result<()> {
    sqlx::query!(
        r#"
        insert into credit_accounts (org_id)
        select org_id from unnest($1::uuid[]) as o (org_id) order by org_id
        on conflict do nothing
        "#,
        orgs,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the accounts of `orgs` in id order (the one order every posting
/// takes them in, so batches of several organizations never deadlock) and
/// reads their open lots. Organizations without an account are missing from
/// the answer; create them with [`create_accounts`] and try again.
#[tracing::instrument(name = "db credit_postings::lock_accounts", level = "debug", skip_all)]
pub async fn lock_accounts(
    conn: &mut PgConnection,
    orgs: &[Uuid],
) -> Result<HashMap<OrgId, LockedAccount>> {
    let accounts = sqlx::query!(
        r#"
        select org_id, overdraft_micros, credit_positive, credit_positive_until,
               low_balance_threshold_micros, balance_level
        from credit_accounts where org_id = any($1)
        order by org_id
        for update
        "#,
        orgs,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut locked: HashMap<OrgId, LockedAccount> = accounts
        .into_iter()
        .map(|a| {
            let account = LockedAccount {
                balance: CreditBalance {
                    lots: Vec::new(),
                    overdraft: a.overdraft_micros,
                },
                horizon: CreditHorizon::from_stored(a.credit_positive, a.credit_positive_until),
                low_balance_threshold: a.low_balance_threshold_micros,
                balance_level: a.balance_level.as_deref().and_then(BalanceLevel::parse),
            };
            (a.org_id.into(), account)
        })
        .collect();
    let lots = sqlx::query!(
        r#"
        select org_id, entry_id, expires_at, remaining_micros
        from credit_lots
        where org_id = any($1) and open
        "#,
        orgs,
    )
    .fetch_all(&mut *conn)
    .await?;
    for lot in lots {
        if let Some(account) = locked.get_mut(&OrgId::from(lot.org_id)) {
            account.balance.lots.push(CreditLot {
                entry: lot.entry_id.into(),
                expires_at: lot.expires_at,
                remaining: lot.remaining_micros,
            });
        }
    }
    Ok(locked)
}

/// Stores the postings of one or many organizations' books. Each update
/// also names its rows with `= any(...)`, so the planner reaches them by
/// index rather than joining the whole table against the batch.
#[tracing::instrument(name = "db credit_postings::write", level = "debug", skip_all)]
pub async fn write(conn: &mut PgConnection, books: &[(OrgId, &BookChanges)]) -> Result<()> {
    let mut entries = EntryColumns::default();
    let (mut lot_ids, mut lot_orgs, mut lot_expiries, mut lot_remaining) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut draw_ids, mut draw_amounts) = (Vec::new(), Vec::new());
    let (mut overdraft_orgs, mut overdrafts) = (Vec::new(), Vec::new());
    for (org, changes) in books {
        for entry in &changes.entries {
            entries.push(entry);
        }
        for (lot, remaining) in &changes.new_lots {
            let expires_at = changes
                .entries
                .iter()
                .find(|entry| entry.id == *lot)
                .and_then(|entry| entry.details.expires_at);
            lot_ids.push(lot.as_uuid());
            lot_orgs.push(org.as_uuid());
            lot_expiries.push(expires_at);
            lot_remaining.push(*remaining);
        }
        for (lot, amount) in &changes.draws {
            draw_ids.push(lot.as_uuid());
            draw_amounts.push(*amount);
        }
        if let Some(overdraft) = changes.overdraft {
            overdraft_orgs.push(org.as_uuid());
            overdrafts.push(overdraft);
        }
    }
    if !entries.id.is_empty() {
        entries.insert(conn).await?;
    }
    if !lot_ids.is_empty() {
        sqlx::query!(
            r#"
            insert into credit_lots (entry_id, org_id, expires_at, remaining_micros)
            select * from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int8[])
            "#,
            &lot_ids,
            &lot_orgs,
            &lot_expiries as &[Option<DateTime<Utc>>],
            &lot_remaining,
        )
        .execute(&mut *conn)
        .await?;
    }
    if !draw_ids.is_empty() {
        sqlx::query!(
            r#"
            update credit_lots l set remaining_micros = l.remaining_micros - d.amount
            from unnest($1::uuid[], $2::int8[]) as d (entry_id, amount)
            where l.entry_id = d.entry_id and l.entry_id = any($1)
            "#,
            &draw_ids,
            &draw_amounts,
        )
        .execute(&mut *conn)
        .await?;
    }
    if !overdraft_orgs.is_empty() {
        sqlx::query!(
            r#"
            update credit_accounts a set overdraft_micros = o.overdraft
            from unnest($1::uuid[], $2::int8[]) as o (org_id, overdraft)
            where a.org_id = o.org_id and a.org_id = any($1)
            "#,
            &overdraft_orgs,
            &overdrafts,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Stores when each organization's credits are positive; a change
/// announces itself (the account's trigger), so only changed ones are
/// passed.
#[tracing::instrument(name = "db credit_postings::set_horizons", level = "debug", skip_all)]
pub async fn set_horizons(
    conn: &mut PgConnection,
    horizons: &[(OrgId, CreditHorizon)],
) -> Result<()> {
    if horizons.is_empty() {
        return Ok(());
    }
    let orgs: Vec<Uuid> = horizons.iter().map(|(org, _)| org.as_uuid()).collect();
    let (positive, until): (Vec<bool>, Vec<Option<DateTime<Utc>>>) =
        horizons.iter().map(|(_, h)| h.to_stored()).unzip();
    sqlx::query!(
        r#"
        update credit_accounts a
        set credit_positive = h.positive, credit_positive_until = h.until
        from unnest($1::uuid[], $2::bool[], $3::timestamptz[]) as h (org_id, positive, until)
        where a.org_id = h.org_id and a.org_id = any($1)
        "#,
        &orgs,
        &positive,
        &until as &[Option<DateTime<Utc>>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the balance level each organization was last announced at.
#[tracing::instrument(
    name = "db credit_postings::set_balance_levels",
    level = "debug",
    skip_all
)]
pub async fn set_balance_levels(
    conn: &mut PgConnection,
    levels: &[(OrgId, BalanceLevel)],
) -> Result<()> {
    if levels.is_empty() {
        return Ok(());
    }
    let orgs: Vec<Uuid> = levels.iter().map(|(org, _)| org.as_uuid()).collect();
    let names: Vec<String> = levels.iter().map(|(_, l)| l.as_str().to_owned()).collect();
    sqlx::query!(
        r#"
        update credit_accounts a set balance_level = l.level
        from unnest($1::uuid[], $2::text[]) as l (org_id, level)
        where a.org_id = l.org_id and a.org_id = any($1)
        "#,
        &orgs,
        &names,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets (or with `None` clears) the organization's own low-balance
/// threshold on its (locked) account.
#[tracing::instrument(
    name = "db credit_postings::set_low_balance_threshold",
    level = "debug",
    skip_all
)]
pub async fn set_low_balance_threshold(
    conn: &mut PgConnection,
    org: OrgId,
    threshold: Option<i64>,
) -> Result<()> {
    sqlx::query!(
        "update credit_accounts set low_balance_threshold_micros = $2 where org_id = $1",
        org.as_uuid(),
        threshold,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Ledger entries as columns, for one multi-row insert.
#[derive(Debug, Default)]
struct EntryColumns {
    id: Vec<Uuid>,
    org_id: Vec<Uuid>,
    kind: Vec<String>,
    amount: Vec<i64>,
    balance_after: Vec<i64>,
    idempotency_key: Vec<Option<String>>,
    stripe_payment_id: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    user_id: Vec<Option<String>>,
    model: Vec<Option<String>>,
    instance_id: Vec<Option<String>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
    expired_entry_id: Vec<Option<Uuid>>,
    hold_id: Vec<Option<Uuid>>,
    occurred_at: Vec<DateTime<Utc>>,
}

impl EntryColumns {
    fn push(&mut self, entry: &crate::domain::credits::CreditEntry) {
        let details = &entry.details;
        self.id.push(entry.id.as_uuid());
        self.org_id.push(entry.org_id.as_uuid());
        self.kind.push(entry.kind.as_str().to_owned());
        self.amount.push(entry.amount);
        self.balance_after.push(entry.balance_after.0);
        self.idempotency_key.push(details.idempotency_key.clone());
        self.stripe_payment_id
            .push(details.stripe_payment_id.clone());
        self.reason.push(details.reason.clone());
        self.user_id.push(
            details
                .user_id
                .as_ref()
                .map(|u| UserId::as_str(u).to_owned()),
        );
        self.model.push(details.model.clone());
        self.instance_id.push(
            details
                .instance_id
                .as_ref()
                .map(|i| InstanceId::as_str(i).to_owned()),
        );
        self.expires_at.push(details.expires_at);
        self.expired_entry_id
            .push(details.expired_entry.map(|id| id.as_uuid()));
        self.hold_id.push(details.hold.map(|id| id.as_uuid()));
        self.occurred_at.push(entry.occurred_at);
    }

    async fn insert(&self, conn: &mut PgConnection) -> Result<()> {
        sqlx::query!(
            r#"
            insert into credit_entries
                (id, org_id, kind, amount_micros, balance_after_micros, idempotency_key,
                 stripe_payment_id, reason, user_id, model, instance_id, expires_at,
                 expired_entry_id, hold_id, occurred_at)
            select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int8[],
                                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                                 $11::text[], $12::timestamptz[], $13::uuid[], $14::uuid[],
                                 $15::timestamptz[])
            "#,
            &self.id,
            &self.org_id,
            &self.kind,
            &self.amount,
            &self.balance_after,
            &self.idempotency_key as &[Option<String>],
            &self.stripe_payment_id as &[Option<String>],
            &self.reason as &[Option<String>],
            &self.user_id as &[Option<String>],
            &self.model as &[Option<String>],
            &self.instance_id as &[Option<String>],
            &self.expires_at as &[Option<DateTime<Utc>>],
            &self.expired_entry_id as &[Option<Uuid>],
            &self.hold_id as &[Option<Uuid>],
            &self.occurred_at,
        )
        .execute(conn)
        .await?;
        Ok(())
    }
}
