//! Reading the credit ledger (`credit_entries`), what is left of each
//! credit (`credit_lots`) and the per-organization account
//! (`credit_accounts`); postings are written by `credit_postings`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::corrupt;
use crate::domain::credits::{
    Balance, CreditBalance, CreditEntry, CreditEntryKind, CreditHorizon, CreditLot, EntryDetails,
};
use crate::domain::ids::InstanceId;
use crate::domain::ids::{CreditEntryId, OrgId, UserId};
use crate::error::Result;

struct EntryRow {
    id: Uuid,
    org_id: Uuid,
    kind: String,
    amount_micros: i64,
    balance_after_micros: i64,
    idempotency_key: Option<String>,
    stripe_payment_id: Option<String>,
    reason: Option<String>,
    user_id: Option<String>,
    model: Option<String>,
    instance_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    expired_entry_id: Option<Uuid>,
    hold_id: Option<Uuid>,
    occurred_at: DateTime<Utc>,
}

impl TryFrom<EntryRow> for CreditEntry {
    type Error = crate::error::Error;

    fn try_from(row: EntryRow) -> Result<Self> {
        Ok(Self {
            id: row.id.into(),
            org_id: row.org_id.into(),
            kind: CreditEntryKind::parse(&row.kind).map_err(|e| corrupt("credit entry kind", e))?,
            amount: row.amount_micros,
            balance_after: Balance(row.balance_after_micros),
            details: EntryDetails {
                idempotency_key: row.idempotency_key,
                stripe_payment_id: row.stripe_payment_id,
                reason: row.reason,
                user_id: row
                    .user_id
                    .map(|u| UserId::parse(&u))
                    .transpose()
                    .map_err(|e| corrupt("credit entry user", e))?,
                model: row.model,
                instance_id: row
                    .instance_id
                    .map(|i| InstanceId::parse(&i))
                    .transpose()
                    .map_err(|e| corrupt("credit entry instance", e))?,
                expires_at: row.expires_at,
                expired_entry: row.expired_entry_id.map(Into::into),
                hold: row.hold_id.map(Into::into),
            },
            occurred_at: row.occurred_at,
        })
    }
}

/// Every organization's credit horizon (or those of `only`), for the
/// entitlement cache; organizations without an account have none.
#[tracing::instrument(name = "db credits::horizons_in_orgs", level = "debug", skip_all)]
pub async fn horizons_in_orgs(
    conn: &mut PgConnection,
    only: Option<&[Uuid]>,
) -> Result<Vec<(OrgId, CreditHorizon)>> {
    let rows = sqlx::query!(
        r#"
        select org_id, credit_positive, credit_positive_until from credit_accounts
        where $1::uuid[] is null or org_id = any($1)
        "#,
        only,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let horizon = CreditHorizon::from_stored(r.credit_positive, r.credit_positive_until);
            (r.org_id.into(), horizon)
        })
        .collect())
}

/// When the organization's credits are positive, as last stored.
#[tracing::instrument(name = "db credits::horizon", level = "debug", skip_all)]
pub async fn horizon(conn: &mut PgConnection, org: OrgId) -> Result<CreditHorizon> {
    let account = sqlx::query!(
        "select credit_positive, credit_positive_until from credit_accounts where org_id = $1",
        org.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(account.map_or(CreditHorizon::Never, |a| {
        CreditHorizon::from_stored(a.credit_positive, a.credit_positive_until)
    }))
}

/// The organization's credits without locking, for reads.
#[tracing::instrument(name = "db credits::balance", level = "debug", skip_all)]
pub async fn balance(conn: &mut PgConnection, org: OrgId) -> Result<CreditBalance> {
    let overdraft = sqlx::query_scalar!(
        "select overdraft_micros from credit_accounts where org_id = $1",
        org.as_uuid(),
    )
    .fetch_optional(&mut *conn)
    .await?
    .unwrap_or(0);
    Ok(CreditBalance {
        lots: open_lots(conn, org).await?,
        overdraft,
    })
}

async fn open_lots(conn: &mut PgConnection, org: OrgId) -> Result<Vec<CreditLot>> {
    let rows = sqlx::query!(
        r#"
        select entry_id, expires_at, remaining_micros
        from credit_lots
        where org_id = $1 and open
        "#,
        org.as_uuid(),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| CreditLot {
            entry: row.entry_id.into(),
            expires_at: row.expires_at,
            remaining: row.remaining_micros,
        })
        .collect())
}

/// The entry an earlier request with this key made, if any.
#[tracing::instrument(name = "db credits::by_idempotency_key", level = "debug", skip_all)]
pub async fn by_idempotency_key(
    conn: &mut PgConnection,
    org: OrgId,
    kind: CreditEntryKind,
    key: &str,
) -> Result<Option<CreditEntry>> {
    let row = sqlx::query_as!(
        EntryRow,
        r#"
        select id, org_id, kind, amount_micros, balance_after_micros, idempotency_key,
               stripe_payment_id, reason, user_id, model, instance_id, expires_at,
               expired_entry_id, hold_id, occurred_at
        from credit_entries
        where org_id = $1 and kind = $2 and idempotency_key = $3
        "#,
        org.as_uuid(),
        kind.as_str(),
        key,
    )
    .fetch_optional(conn)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// The usage entries with one of the (organization, key) pairs: every
/// earlier report a batch's keys replay. Each pair is one descent of the
/// idempotency index whatever the plan, since a lateral subquery can only
/// be run per pair (`offset 0` keeps the planner from turning it into a
/// plain join). (With the two lists as separate `= any` conditions,
/// PostgreSQL 15 would rather scan every usage entry of the organizations
/// and filter them by key; with a plain join, a generic plan made while the
/// ledger was small hashes all of it.)
#[tracing::instrument(name = "db credits::usage_by_keys", level = "debug", skip_all)]
pub async fn usage_by_keys(
    conn: &mut PgConnection,
    orgs: &[Uuid],
    keys: &[String],
) -> Result<Vec<CreditEntry>> {
    let rows = sqlx::query_as!(
        EntryRow,
        r#"
        select e.id, e.org_id, e.kind, e.amount_micros, e.balance_after_micros,
               e.idempotency_key, e.stripe_payment_id, e.reason, e.user_id, e.model,
               e.instance_id, e.expires_at, e.expired_entry_id, e.hold_id, e.occurred_at
        from unnest($1::uuid[], $2::text[]) as wanted (org_id, key)
        cross join lateral (
            select * from credit_entries e
            where e.org_id = wanted.org_id and e.kind = 'usage'
              and e.idempotency_key = wanted.key
            offset 0
        ) as e
        "#,
        orgs,
        keys,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Whether a Stripe payment has already been credited.
#[tracing::instrument(name = "db credits::payment_credited", level = "debug", skip_all)]
pub async fn payment_credited(conn: &mut PgConnection, payment_id: &str) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"select exists(select 1 from credit_entries where stripe_payment_id = $1) as "exists!""#,
        payment_id,
    )
    .fetch_one(conn)
    .await?)
}

/// A page of the ledger, newest first.
#[tracing::instrument(name = "db credits::list_entries", level = "debug", skip_all)]
pub async fn list_entries(
    conn: &mut PgConnection,
    org: OrgId,
    before: Option<CreditEntryId>,
    limit: i64,
) -> Result<Vec<CreditEntry>> {
    let rows = sqlx::query_as!(
        EntryRow,
        r#"
        select id, org_id, kind, amount_micros, balance_after_micros, idempotency_key,
               stripe_payment_id, reason, user_id, model, instance_id, expires_at,
               expired_entry_id, hold_id, occurred_at
        from credit_entries
        where org_id = $1 and ($2::uuid is null or id < $2)
        order by id desc
        limit $3
        "#,
        org.as_uuid(),
        before.map(|id| id.as_uuid()),
        limit,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Organizations holding credit that has expired but not yet been written
/// off, for the sweep.
#[tracing::instrument(
    name = "db credits::orgs_with_expired_credit",
    level = "debug",
    skip_all
)]
pub async fn orgs_with_expired_credit(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OrgId>> {
    let rows = sqlx::query_scalar!(
        r#"
        select distinct org_id
        from credit_lots
        where open and expires_at <= $1
        limit $2
        "#,
        now,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}
