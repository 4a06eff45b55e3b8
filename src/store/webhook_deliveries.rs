//! Deliveries of lifecycle events to webhook endpoints, their attempts, and
//! the lanes that keep one organization's deliveries to one endpoint in
//! order (see migration `..._billing_events.sql`).
//!
//! A worker claims a lane with a lease and sends its pending deliveries
//! one at a time, oldest event first. Every change of a lane's state takes
//! the lane's row lock first, the same lock the fan-out of a new event
//! takes, so a lane released as empty never misses an event queued at that
//! moment.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::billing_events::published;
use crate::error::Result;
use crate::event_codec::PublishedEvent;

/// One endpoint's deliveries of one organization's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lane {
    pub endpoint_id: Uuid,
    pub org_key: Uuid,
}

/// A lane's first pending delivery.
#[derive(Debug, Clone)]
pub struct Head {
    pub delivery_id: i64,
    pub attempts: i32,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
    pub event: PublishedEvent,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempted_at: DateTime<Utc>,
    /// `None` when no answer came back.
    pub http_status: Option<i32>,
    /// `None` on success.
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// What a delivery becomes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(DateTime<Utc>),
    GivenUp,
}

/// Endpoints (not paused) with a lane that is due and not claimed.
#[tracing::instrument(
    name = "db webhook_deliveries::due_endpoints",
    level = "debug",
    skip_all
)]
pub async fn due_endpoints(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        r#"
        select distinct l.endpoint_id as "endpoint_id!"
        from webhook_lanes l
        join webhook_endpoints e on e.id = l.endpoint_id and e.paused_at is null
        where l.due_at <= $1 and (l.claimed_until is null or l.claimed_until <= $1)
        "#,
        now,
    )
    .fetch_all(conn)
    .await?)
}

/// Claims up to `room` due lanes of the endpoint for `worker` until
/// `lease_until`, never past the endpoint's cap of lanes in flight across
/// replicas. Claims of one endpoint are serialized by a transaction-scoped
/// advisory lock; a claimer that finds it taken comes back later.
#[tracing::instrument(name = "db webhook_deliveries::claim", level = "debug", skip_all)]
pub async fn claim(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    worker: Uuid,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    room: i64,
) -> Result<Vec<Lane>> {
    let locked = sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock(hashtextextended($1::text, 0)) as "locked!""#,
        endpoint_id.to_string(),
    )
    .fetch_one(&mut *conn)
    .await?;
    if !locked {
        return Ok(Vec::new());
    }
    let keys = sqlx::query_scalar!(
        r#"
        with cap as (
            select greatest(e.max_in_flight - (
                select count(*) from webhook_lanes
                where endpoint_id = e.id and claimed_until > $2
            ), 0) as room
            from webhook_endpoints e where e.id = $1 and e.paused_at is null
        ),
        due as (
            select endpoint_id, org_key from webhook_lanes
            where endpoint_id = $1 and due_at <= $2
              and (claimed_until is null or claimed_until <= $2)
            order by due_at
            limit least($5, coalesce((select room from cap), 0))
            for update skip locked
        )
        update webhook_lanes l set claimed_by = $3, claimed_until = $4
        from due where l.endpoint_id = due.endpoint_id and l.org_key = due.org_key
        returning l.org_key
        "#,
        endpoint_id,
        now,
        worker,
        lease_until,
        room,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(keys
        .into_iter()
        .map(|org_key| Lane {
            endpoint_id,
            org_key,
        })
        .collect())
}

/// Locks the lane if `worker` still holds it, and says whether its
/// endpoint's deliveries run (it is not paused).
#[tracing::instrument(name = "db webhook_deliveries::lock_lane", level = "debug", skip_all)]
pub async fn lock_lane(conn: &mut PgConnection, lane: Lane, worker: Uuid) -> Result<Option<bool>> {
    Ok(sqlx::query_scalar!(
        r#"
        select e.paused_at is null as "active!"
        from webhook_lanes l join webhook_endpoints e on e.id = l.endpoint_id
        where l.endpoint_id = $1 and l.org_key = $2 and l.claimed_by = $3
        for update of l
        "#,
        lane.endpoint_id,
        lane.org_key,
        worker,
    )
    .fetch_optional(conn)
    .await?)
}

/// The lane's first pending delivery, in event order.
#[tracing::instrument(name = "db webhook_deliveries::head", level = "debug", skip_all)]
pub async fn head(conn: &mut PgConnection, lane: Lane) -> Result<Option<Head>> {
    let row = sqlx::query!(
        r#"
        select d.id as delivery_id, d.attempts, d.first_attempt_at, d.next_attempt_at,
               e.id, e.org_id, e.type, e.occurred_at, e.state_version as "state_version!", e.data
        from webhook_deliveries d
        join billing_events e on e.id = d.event_id
        where d.endpoint_id = $1 and d.org_key = $2 and d.state = 'pending'
        order by e.state_version, e.seq, d.id
        limit 1
        "#,
        lane.endpoint_id,
        lane.org_key,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Head {
        delivery_id: r.delivery_id,
        attempts: r.attempts,
        first_attempt_at: r.first_attempt_at,
        next_attempt_at: r.next_attempt_at,
        event: published(
            r.id,
            r.org_id,
            r.r#type,
            r.occurred_at,
            r.state_version,
            r.data,
        ),
    }))
}

/// Records an attempt at the head and what the delivery becomes.
#[tracing::instrument(
    name = "db webhook_deliveries::record_attempt",
    level = "debug",
    skip_all
)]
pub async fn record_attempt(
    conn: &mut PgConnection,
    head: &Head,
    attempt: &Attempt,
    after: AfterAttempt,
) -> Result<()> {
    let number = head.attempts + 1;
    sqlx::query!(
        r#"
        insert into webhook_attempts
            (delivery_id, attempt, attempted_at, http_status, error, duration_ms)
        values ($1, $2, $3, $4, $5, $6)
        "#,
        head.delivery_id,
        number,
        attempt.attempted_at,
        attempt.http_status,
        attempt.error,
        attempt.duration_ms,
    )
    .execute(&mut *conn)
    .await?;
    let (state, next_attempt_at) = match after {
        AfterAttempt::Delivered => ("delivered", head.next_attempt_at),
        AfterAttempt::RetryAt(at) => ("pending", at),
        AfterAttempt::GivenUp => ("failed", head.next_attempt_at),
    };
    sqlx::query!(
        r#"
        update webhook_deliveries
        set attempts = $2, state = $3, next_attempt_at = $4,
            first_attempt_at = coalesce(first_attempt_at, $5)
        where id = $1
        "#,
        head.delivery_id,
        number,
        state,
        next_attempt_at,
        attempt.attempted_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets when the (locked) lane is next due, and either keeps it claimed
/// until `lease_until` or releases it.
#[tracing::instrument(name = "db webhook_deliveries::set_lane", level = "debug", skip_all)]
pub async fn set_lane(
    conn: &mut PgConnection,
    lane: Lane,
    due_at: Option<DateTime<Utc>>,
    lease_until: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query!(
        r#"
        update webhook_lanes
        set due_at = $3, claimed_until = $4,
            claimed_by = case when $4::timestamptz is null then null else claimed_by end
        where endpoint_id = $1 and org_key = $2
        "#,
        lane.endpoint_id,
        lane.org_key,
        due_at,
        lease_until,
    )
    .execute(conn)
    .await?;
    Ok(())
}
