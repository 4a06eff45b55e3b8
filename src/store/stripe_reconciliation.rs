//! The periodic reconciliation's lease (`stripe_reconciliation`): one row,
//! so one replica at a time reads every subscription from Stripe.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Result;

/// Takes the lease until `lease_until` unless another replica holds it or
/// ran a pass since `due_after`; true when this replica should run one.
#[tracing::instrument(name = "db stripe_reconciliation::claim", level = "debug", skip_all)]
pub async fn claim(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    due_after: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<bool> {
    let claimed = sqlx::query_scalar!(
        r#"
        insert into stripe_reconciliation (singleton, leased_until) values (true, $3)
        on conflict (singleton) do update set leased_until = excluded.leased_until
        where stripe_reconciliation.leased_until <= $1
          and (stripe_reconciliation.last_run_at is null
               or stripe_reconciliation.last_run_at <= $2)
        returning true as "claimed!"
        "#,
        now,
        due_after,
        lease_until,
    )
    .fetch_optional(conn)
    .await?;
    Ok(claimed.is_some())
}

/// Ends the lease; a finished pass records when it ran.
#[tracing::instrument(name = "db stripe_reconciliation::release", level = "debug", skip_all)]
pub async fn release(conn: &mut PgConnection, ran_at: Option<DateTime<Utc>>) -> Result<()> {
    sqlx::query!(
        r#"
        update stripe_reconciliation
        set leased_until = '-infinity', last_run_at = coalesce($1, last_run_at)
        "#,
        ran_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}
