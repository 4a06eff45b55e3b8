//! The `instance_subscriptions` table: credit-funded add-on subscriptions.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{corrupt, on_unique_violation};
use crate::domain::credits::Micros;
use crate::domain::ids::InstanceId;
use crate::domain::ids::{OrgId, UserId};
use crate::domain::instances::{InstanceStatus, InstanceSubscription};
use crate::domain::reason::ErrorReason;
use crate::error::{Error, Result};

struct InstanceRow {
    org_id: Uuid,
    instance_id: String,
    user_id: String,
    add_on: String,
    status: String,
    price_micros: i64,
    trial_end: Option<DateTime<Utc>>,
    current_period_start: DateTime<Utc>,
    current_period_end: DateTime<Utc>,
    cancel_at_period_end: bool,
    canceled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl TryFrom<InstanceRow> for InstanceSubscription {
    type Error = Error;

    fn try_from(row: InstanceRow) -> Result<Self> {
        Ok(Self {
            org_id: row.org_id.into(),
            instance_id: InstanceId::parse(&row.instance_id)
                .map_err(|e| corrupt("instance id", e))?,
            user_id: UserId::parse(&row.user_id).map_err(|e| corrupt("instance user", e))?,
            add_on: row.add_on,
            status: InstanceStatus::parse(&row.status)
                .map_err(|e| corrupt("instance status", e))?,
            price: Micros::non_negative(row.price_micros)
                .map_err(|e| corrupt("instance price", e))?,
            trial_end: row.trial_end,
            current_period_start: row.current_period_start,
            current_period_end: row.current_period_end,
            cancel_at_period_end: row.cancel_at_period_end,
            canceled_at: row.canceled_at,
            created_at: row.created_at,
        })
    }
}

/// Ends the user's running instances and gives every instance of theirs a
/// pseudonym of its own instead of the user; returns those that ended now.
#[tracing::instrument(name = "db instances::end_for_erasure", level = "debug", skip_all)]
pub async fn end_for_erasure(
    conn: &mut PgConnection,
    user: &UserId,
) -> Result<Vec<InstanceSubscription>> {
    let ended = sqlx::query_as!(
        InstanceRow,
        r#"
        update instance_subscriptions
        set user_id = 'erased-' || gen_random_uuid()::text,
            status = 'canceled',
            canceled_at = now()
        where user_id = $1 and status <> 'canceled'
        returning org_id, instance_id, user_id, add_on, status, price_micros, trial_end,
                  current_period_start, current_period_end, cancel_at_period_end, canceled_at,
                  created_at
        "#,
        user.as_str(),
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!(
        "update instance_subscriptions set user_id = 'erased-' || gen_random_uuid()::text where user_id = $1",
        user.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    ended
        .into_iter()
        .map(InstanceSubscription::try_from)
        .collect()
}

/// Inserts a new subscription. A second live subscription for the instance,
/// or a second trial for the user, is `AlreadyExists`.
#[tracing::instrument(name = "db instances::insert", level = "debug", skip_all)]
pub async fn insert(conn: &mut PgConnection, instance: &InstanceSubscription) -> Result<()> {
    sqlx::query!(
        r#"
        insert into instance_subscriptions
            (id, org_id, instance_id, user_id, add_on, status, price_micros, trial_end,
             current_period_start, current_period_end, cancel_at_period_end, canceled_at,
             created_at)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        "#,
        Uuid::now_v7(),
        instance.org_id.as_uuid(),
        instance.instance_id.as_str(),
        instance.user_id.as_str(),
        instance.add_on,
        instance.status.as_str(),
        instance.price.get(),
        instance.trial_end,
        instance.current_period_start,
        instance.current_period_end,
        instance.cancel_at_period_end,
        instance.canceled_at,
        instance.created_at,
    )
    .execute(conn)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(db)
            if db.constraint() == Some("instance_subscriptions_one_trial") =>
        {
            Error::exists(
                ErrorReason::TrialAlreadyUsed,
                format!(
                    "user {} has already had the {} trial in this organization",
                    instance.user_id, instance.add_on
                ),
            )
        }
        _ => on_unique_violation(
            "instance_subscriptions_one_live",
            ErrorReason::InstanceSubscribed,
            || {
                format!(
                    "instance {} already has a subscription",
                    instance.instance_id.as_str()
                )
            },
        )(error),
    })?;
    Ok(())
}

/// Writes the changing fields of the instance's live subscription.
#[tracing::instrument(name = "db instances::update", level = "debug", skip_all)]
pub async fn update(conn: &mut PgConnection, instance: &InstanceSubscription) -> Result<()> {
    sqlx::query!(
        r#"
        update instance_subscriptions
        set status = $3, trial_end = $4, current_period_start = $5, current_period_end = $6,
            cancel_at_period_end = $7, canceled_at = $8
        where org_id = $1 and instance_id = $2 and status <> 'canceled'
        "#,
        instance.org_id.as_uuid(),
        instance.instance_id.as_str(),
        instance.status.as_str(),
        instance.trial_end,
        instance.current_period_start,
        instance.current_period_end,
        instance.cancel_at_period_end,
        instance.canceled_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The instance's live subscription, or else its latest canceled one.
#[tracing::instrument(name = "db instances::get", level = "debug", skip_all)]
pub async fn get(
    conn: &mut PgConnection,
    org: OrgId,
    instance: &InstanceId,
) -> Result<Option<InstanceSubscription>> {
    let row = sqlx::query_as!(
        InstanceRow,
        r#"
        select org_id, instance_id, user_id, add_on, status, price_micros, trial_end,
               current_period_start, current_period_end, cancel_at_period_end, canceled_at,
               created_at
        from instance_subscriptions
        where org_id = $1 and instance_id = $2
        order by (status <> 'canceled') desc, id desc
        limit 1
        "#,
        org.as_uuid(),
        instance.as_str(),
    )
    .fetch_optional(conn)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// Every subscription of the organization (optionally one user's), live
/// ones first, newest first within each.
#[tracing::instrument(name = "db instances::list", level = "debug", skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    org: OrgId,
    user: Option<&UserId>,
) -> Result<Vec<InstanceSubscription>> {
    let rows = sqlx::query_as!(
        InstanceRow,
        r#"
        select org_id, instance_id, user_id, add_on, status, price_micros, trial_end,
               current_period_start, current_period_end, cancel_at_period_end, canceled_at,
               created_at
        from instance_subscriptions
        where org_id = $1 and ($2::text is null or user_id = $2)
        order by (status <> 'canceled') desc, id desc
        "#,
        org.as_uuid(),
        user.map(UserId::as_str),
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Each instance's live subscription, or else its latest canceled one, in
/// every organization or those of `only`, for the entitlement cache.
#[tracing::instrument(name = "db instances::list_current", level = "debug", skip_all)]
pub async fn list_current(
    conn: &mut PgConnection,
    only: Option<&[Uuid]>,
) -> Result<Vec<InstanceSubscription>> {
    let rows = sqlx::query_as!(
        InstanceRow,
        r#"
        select distinct on (org_id, instance_id)
               org_id, instance_id, user_id, add_on, status, price_micros, trial_end,
               current_period_start, current_period_end, cancel_at_period_end, canceled_at,
               created_at
        from instance_subscriptions
        where $1::uuid[] is null or org_id = any($1)
        order by org_id, instance_id, (status <> 'canceled') desc, id desc
        "#,
        only,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Whether the user has had the add-on's trial in the organization.
#[tracing::instrument(name = "db instances::had_trial", level = "debug", skip_all)]
pub async fn had_trial(
    conn: &mut PgConnection,
    org: OrgId,
    user: &UserId,
    add_on: &str,
) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"
        select exists(
            select 1 from instance_subscriptions
            where org_id = $1 and user_id = $2 and add_on = $3 and trial_end is not null
        ) as "exists!"
        "#,
        org.as_uuid(),
        user.as_str(),
        add_on,
    )
    .fetch_one(conn)
    .await?)
}

/// Organizations with an instance subscription due for renewal (or waiting
/// to resume), for the sweep.
#[tracing::instrument(name = "db instances::orgs_due", level = "debug", skip_all)]
pub async fn orgs_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OrgId>> {
    let rows = sqlx::query_scalar!(
        r#"
        select distinct org_id
        from instance_subscriptions
        where (status in ('trialing', 'active') and current_period_end <= $1)
           or status = 'suspended'
        limit $2
        "#,
        now,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Ends every live subscription of the organization now.
#[tracing::instrument(name = "db instances::cancel_all", level = "debug", skip_all)]
pub async fn cancel_all(
    conn: &mut PgConnection,
    org: OrgId,
    now: DateTime<Utc>,
) -> Result<Vec<InstanceSubscription>> {
    sqlx::query_as!(
        InstanceRow,
        r#"
        update instance_subscriptions
        set status = 'canceled', canceled_at = $2
        where org_id = $1 and status <> 'canceled'
        returning org_id, instance_id, user_id, add_on, status, price_micros, trial_end,
                  current_period_start, current_period_end, cancel_at_period_end, canceled_at,
                  created_at
        "#,
        org.as_uuid(),
        now,
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(InstanceSubscription::try_from)
    .collect()
}
