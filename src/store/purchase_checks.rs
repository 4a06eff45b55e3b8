//! Credit purchases read back from Stripe (`credit_purchase_checks`): which
//! credited payments still need checking, and what each check found.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::corrupt;
use crate::domain::credits::Micros;
use crate::domain::ids::OrgId;
use crate::domain::purchase_check::{CreditedPurchase, PurchaseFinding};
use crate::error::Result;

/// Every purchase credited from a Stripe payment (of `org`, or of every
/// organization) that no check has verified yet, oldest first. Flagged ones
/// are read again, so a payment that later shows up clears its flag.
#[tracing::instrument(name = "db purchase_checks::unverified", level = "debug", skip_all)]
pub async fn unverified(
    conn: &mut PgConnection,
    org: Option<OrgId>,
) -> Result<Vec<CreditedPurchase>> {
    let rows = sqlx::query!(
        r#"
        select e.stripe_payment_id as "payment_id!", e.org_id, e.amount_micros
        from credit_entries e
        left join credit_purchase_checks c on c.stripe_payment_id = e.stripe_payment_id
        where e.kind = 'purchase' and e.stripe_payment_id is not null
          and ($1::uuid is null or e.org_id = $1)
          and c.finding is distinct from 'verified'
        order by e.id
        "#,
        org.map(|org| org.as_uuid()),
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(CreditedPurchase {
                payment_id: row.payment_id,
                org: row.org_id.into(),
                credited: Micros::non_negative(row.amount_micros)
                    .map_err(|e| corrupt("purchase amount", e))?,
            })
        })
        .collect()
}

/// Stores what checking `purchase` found; returns the finding stored before
/// (as stored), if it had been checked already.
#[tracing::instrument(name = "db purchase_checks::record", level = "debug", skip_all)]
pub async fn record(
    conn: &mut PgConnection,
    purchase: &CreditedPurchase,
    finding: &PurchaseFinding,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let before = sqlx::query_scalar!(
        r#"
        with previous as (
            select finding from credit_purchase_checks where stripe_payment_id = $1
        ), stored as (
            insert into credit_purchase_checks
                (stripe_payment_id, org_id, finding, reason, checked_at)
            values ($1, $2, $3, $4, $5)
            on conflict (stripe_payment_id) do update
                set finding = excluded.finding, reason = excluded.reason,
                    checked_at = excluded.checked_at
        )
        select finding from previous
        "#,
        purchase.payment_id,
        purchase.org.as_uuid(),
        finding.as_str(),
        finding.reason(),
        now,
    )
    .fetch_optional(conn)
    .await?;
    Ok(before)
}
