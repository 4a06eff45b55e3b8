//! The `usage_quantities` table: the last count reported for each
//! quantity-billed item, and what Stripe was last set to for it.

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
    pub sync_seq: i64,
}

/// Records the count and returns the item's row, locked for the rest of the
/// transaction so two reports for one item are applied one at a time.
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
        returning item, reported_count, synced_subscription_id, synced_quantity, sync_seq
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
        sync_seq: row.sync_seq,
    })
}

/// Every item the organization has reported a count for, locked.
pub async fn lock_all(conn: &mut PgConnection, org: OrgId) -> Result<Vec<UsageQuantity>> {
    let rows = sqlx::query!(
        r#"
        select item, reported_count, synced_subscription_id, synced_quantity, sync_seq
        from usage_quantities
        where org_id = $1
        order by item
        for update
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
            sync_seq: row.sync_seq,
        })
        .collect())
}

/// Takes the next Stripe write number for the item.
pub async fn next_sync_seq(conn: &mut PgConnection, org: OrgId, item: &str) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"
        update usage_quantities set sync_seq = sync_seq + 1
        where org_id = $1 and item = $2
        returning sync_seq
        "#,
        org.as_uuid(),
        item,
    )
    .fetch_one(conn)
    .await?)
}

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
