//! The catch-up cursor (`stripe_catch_up`): one row, shared by replicas.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Result;

/// A run's claim: the cursor, and the newest event stored (read only
/// before the first complete run, when there is no cursor yet).
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub listed_until: Option<DateTime<Utc>>,
    pub newest_stored: Option<DateTime<Utc>>,
}

/// Takes the run's lease until `lease_until`, unless another replica holds
/// it; one statement, so nothing stays open while Stripe is listed.
#[tracing::instrument(name = "db stripe_catch_up::claim", level = "debug", skip_all)]
pub async fn claim(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Claim>> {
    let claimed = sqlx::query!(
        r#"
        insert into stripe_catch_up (singleton, leased_until) values (true, $2)
        on conflict (singleton) do update set leased_until = excluded.leased_until
        where stripe_catch_up.leased_until <= $1
        returning listed_until,
            case when listed_until is null
                 then (select max(stripe_created_at) from stripe_events) end as newest_stored
        "#,
        now,
        lease_until,
    )
    .fetch_optional(conn)
    .await?;
    Ok(claimed.map(|row| Claim {
        listed_until: row.listed_until,
        newest_stored: row.newest_stored,
    }))
}

/// Records a complete run: every event created before `listed_until` has
/// been listed. The lease ends with it.
#[tracing::instrument(name = "db stripe_catch_up::finish", level = "debug", skip_all)]
pub async fn finish(
    conn: &mut PgConnection,
    listed_until: DateTime<Utc>,
    stored: i64,
) -> Result<()> {
    sqlx::query!(
        r#"
        update stripe_catch_up
        set listed_until = $1, leased_until = '-infinity', last_run_at = $1, last_stored = $2
        "#,
        listed_until,
        stored,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives the lease up after a failed run, so the next may start at once.
#[tracing::instrument(name = "db stripe_catch_up::release", level = "debug", skip_all)]
pub async fn release(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("update stripe_catch_up set leased_until = '-infinity'")
        .execute(conn)
        .await?;
    Ok(())
}
