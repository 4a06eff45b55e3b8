//! The `usage_quantities` table: the last count reported for each
//! quantity-billed item, and what Stripe was last set to for it (so a
//! repeated count asks nothing of Stripe).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::ids::OrgId;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuantity {
    pub item: String,
    pub reported_count: i64,
    /// The subscription and quantity Stripe was last set to.
    pub synced: Option<(String, i64)>,
}

/// Records the count and returns the item's row.
#[tracing::instrument(name = "db usage_quantities::record", level = "debug", skip_all)]
pub async fn record(
    conn: &mut PgConnection,
    org: OrgId,
    item: &str,
    count: i64,
    now: DateTime<Utc>,
) -> Result<UsageQuantity> {
    let row = sqlx::query!(
        r#"
        insert into usage_quantities (org_id, item, reported_count, reported_at)
        values ($1, $2, $3, $4)
        on conflict (org_id, item) do update
            set reported_count = excluded.reported_count, reported_at = excluded.reported_at
        returning item, reported_count, synced_subscription_id, synced_quantity
        "#,
        org.as_uuid(),
        item,
        count,
        now,
    )
    .fetch_one(conn)
    .await?;
    Ok(UsageQuantity {
        item: row.item,
        reported_count: row.reported_count,
        synced: row.synced_subscription_id.zip(row.synced_quantity),
    })
}

/// Every item the organization has reported a count for.
#[tracing::instrument(name = "db usage_quantities::list", level = "debug", skip_all)]
pub async fn list(conn: &mut PgConnection, org: OrgId) -> Result<Vec<UsageQuantity>> {
    let rows = sqlx::query!(
        r#"
        select item, reported_count, synced_subscription_id, synced_quantity
        from usage_quantities
        where org_id = $1
        order by item
        "#,
        org.as_uuid(),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| UsageQuantity {
            item: row.item,
            reported_count: row.reported_count,
            synced: row.synced_subscription_id.zip(row.synced_quantity),
        })
        .collect())
}

/// Records what Stripe was set to for the item.
#[tracing::instrument(name = "db usage_quantities::mark_synced", level = "debug", skip_all)]
pub async fn mark_synced(
    conn: &mut PgConnection,
    org: OrgId,
    item: &str,
    subscription_id: &str,
    quantity: i64,
) -> Result<()> {
    sqlx::query!(
        r#"
        update usage_quantities set synced_subscription_id = $3, synced_quantity = $4
        where org_id = $1 and item = $2
        "#,
        org.as_uuid(),
        item,
        subscription_id,
        quantity,
    )
    .execute(conn)
    .await?;
    Ok(())
}
