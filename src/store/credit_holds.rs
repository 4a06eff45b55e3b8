//! Credit holds (`credit_holds`): written under the credit account's lock,
//! like every posting.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::corrupt;
use crate::domain::credit_holds::{CreditHold, HoldStatus};
use crate::domain::credits::Micros;
use crate::domain::ids::{OrgId, UserId};
use crate::error::Result;

struct HoldRow {
    id: Uuid,
    org_id: Uuid,
    amount_micros: i64,
    idempotency_key: String,
    user_id: String,
    model: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    status: String,
    settled_by_key: Option<String>,
}

impl TryFrom<HoldRow> for CreditHold {
    type Error = crate::error::Error;

    fn try_from(row: HoldRow) -> Result<Self> {
        Ok(Self {
            id: row.id.into(),
            org_id: row.org_id.into(),
            amount: Micros::parse_positive(row.amount_micros)
                .map_err(|e| corrupt("credit hold amount", e))?,
            idempotency_key: row.idempotency_key,
            user_id: UserId::parse(&row.user_id).map_err(|e| corrupt("credit hold user", e))?,
            model: row.model,
            created_at: row.created_at,
            expires_at: row.expires_at,
            status: HoldStatus::parse(&row.status)
                .ok_or_else(|| corrupt("credit hold status", row.status.clone()))?,
            settled_by: row.settled_by_key,
        })
    }
}

/// For a batch: the active holds of `orgs`, any hold with one of `ids`
/// (the caller keeps those of its organizations), and any with one of the
/// (organization, reservation key) pairs `key_orgs` and `keys`. One arm per
/// index, each a lateral subquery run per value of the batch (`offset 0`
/// keeps it one), so each stays
/// an index descent per value whatever the plan and however many settled
/// holds there are.
#[tracing::instrument(name = "db credit_holds::for_batch", level = "debug", skip_all)]
pub async fn for_batch(
    conn: &mut PgConnection,
    orgs: &[Uuid],
    ids: &[Uuid],
    key_orgs: &[Uuid],
    keys: &[String],
) -> Result<Vec<CreditHold>> {
    let rows = sqlx::query_as!(
        HoldRow,
        r#"
        select id as "id!", org_id as "org_id!", amount_micros as "amount_micros!",
               idempotency_key as "idempotency_key!", user_id as "user_id!", model,
               created_at as "created_at!", expires_at as "expires_at!", status as "status!",
               settled_by_key
        from (
            select h.* from unnest($1::uuid[]) as o (org_id)
            cross join lateral (
                select * from credit_holds h where h.org_id = o.org_id and h.status = 'active'
                offset 0
            ) as h
            union
            select * from credit_holds where id = any($2)
            union
            select h.* from unnest($3::uuid[], $4::text[]) as k (org_id, key)
            cross join lateral (
                select * from credit_holds h
                where h.org_id = k.org_id and h.idempotency_key = k.key
                offset 0
            ) as h
        ) as holds
        "#,
        orgs,
        ids,
        key_orgs,
        keys,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// The organization's active holds, soonest expiry first.
#[tracing::instrument(name = "db credit_holds::active", level = "debug", skip_all)]
pub async fn active(conn: &mut PgConnection, org: OrgId) -> Result<Vec<CreditHold>> {
    let rows = sqlx::query_as!(
        HoldRow,
        r#"
        select id, org_id, amount_micros, idempotency_key, user_id, model, created_at,
               expires_at, status, settled_by_key
        from credit_holds
        where org_id = $1 and status = 'active'
        order by expires_at, id
        "#,
        org.as_uuid(),
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

#[tracing::instrument(name = "db credit_holds::insert", level = "debug", skip_all)]
pub async fn insert(conn: &mut PgConnection, holds: &[CreditHold]) -> Result<()> {
    if holds.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&CreditHold) -> Uuid| holds.iter().map(f).collect::<Vec<_>>();
    let ids = column(|h| h.id.as_uuid());
    let orgs = column(|h| h.org_id.as_uuid());
    let amounts: Vec<i64> = holds.iter().map(|h| h.amount.get()).collect();
    let keys: Vec<String> = holds.iter().map(|h| h.idempotency_key.clone()).collect();
    let users: Vec<String> = holds
        .iter()
        .map(|h| h.user_id.as_str().to_owned())
        .collect();
    let models: Vec<Option<String>> = holds.iter().map(|h| h.model.clone()).collect();
    let created: Vec<DateTime<Utc>> = holds.iter().map(|h| h.created_at).collect();
    let expires: Vec<DateTime<Utc>> = holds.iter().map(|h| h.expires_at).collect();
    let statuses: Vec<String> = holds.iter().map(|h| h.status.as_str().to_owned()).collect();
    let settled_by: Vec<Option<String>> = holds.iter().map(|h| h.settled_by.clone()).collect();
    sqlx::query!(
        r#"
        insert into credit_holds
            (id, org_id, amount_micros, idempotency_key, user_id, model, created_at,
             expires_at, status, settled_by_key, closed_at)
        select id, org_id, amount, key, user_id, model, created_at, expires_at, status,
               settled_by, case when status = 'active' then null else created_at end
        from unnest($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[], $6::text[],
                    $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[])
            as h (id, org_id, amount, key, user_id, model, created_at, expires_at, status,
                  settled_by)
        "#,
        &ids,
        &orgs,
        &amounts,
        &keys,
        &users,
        &models as &[Option<String>],
        &created,
        &expires,
        &statuses,
        &settled_by as &[Option<String>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records holds settled or released at `now`.
#[tracing::instrument(name = "db credit_holds::close", level = "debug", skip_all)]
pub async fn close(
    conn: &mut PgConnection,
    holds: &[CreditHold],
    now: DateTime<Utc>,
) -> Result<()> {
    if holds.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = holds.iter().map(|h| h.id.as_uuid()).collect();
    let statuses: Vec<String> = holds.iter().map(|h| h.status.as_str().to_owned()).collect();
    let settled_by: Vec<Option<String>> = holds.iter().map(|h| h.settled_by.clone()).collect();
    sqlx::query!(
        r#"
        update credit_holds c
        set status = h.status, settled_by_key = h.settled_by,
            closed_at = coalesce(c.closed_at, $4)
        from unnest($1::uuid[], $2::text[], $3::text[]) as h (id, status, settled_by)
        where c.id = h.id and c.id = any($1)
        "#,
        &ids,
        &statuses,
        &settled_by as &[Option<String>],
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What the organization's active holds set aside at `now`.
#[tracing::instrument(name = "db credit_holds::held", level = "debug", skip_all)]
pub async fn held(conn: &mut PgConnection, org: OrgId, now: DateTime<Utc>) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"
        select coalesce(sum(amount_micros), 0)::int8 as "held!"
        from credit_holds
        where org_id = $1 and status = 'active' and expires_at > $2
        "#,
        org.as_uuid(),
        now,
    )
    .fetch_one(conn)
    .await?)
}

/// Organizations with active holds past their expiry, for the sweep.
#[tracing::instrument(
    name = "db credit_holds::orgs_with_expired_holds",
    level = "debug",
    skip_all
)]
pub async fn orgs_with_expired_holds(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OrgId>> {
    let rows = sqlx::query_scalar!(
        r#"
        select distinct org_id from credit_holds
        where status = 'active' and expires_at <= $1
        limit $2
        "#,
        now,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Releases the organization's holds that expired by `now`; returns how many.
#[tracing::instrument(name = "db credit_holds::expire", level = "debug", skip_all)]
pub async fn expire(conn: &mut PgConnection, org: OrgId, now: DateTime<Utc>) -> Result<u64> {
    let done = sqlx::query!(
        r#"
        update credit_holds set status = 'expired', closed_at = $2
        where org_id = $1 and status = 'active' and expires_at <= $2
        "#,
        org.as_uuid(),
        now,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
