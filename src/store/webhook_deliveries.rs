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
use crate::domain::webhooks::DeliveryState;
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

/// What a delivery becomes after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
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

/// The lane's first `limit` pending deliveries, in event order.
#[tracing::instrument(name = "db webhook_deliveries::pending", level = "debug", skip_all)]
pub async fn pending(conn: &mut PgConnection, lane: Lane, limit: i64) -> Result<Vec<Head>> {
    let rows = sqlx::query!(
        r#"
        select d.id as delivery_id, d.attempts, d.first_attempt_at, d.next_attempt_at,
               e.id, e.org_id, e.type, e.occurred_at, e.state_version as "state_version!", e.data
        from webhook_deliveries d
        join billing_events e on e.id = d.event_id
        where d.endpoint_id = $1 and d.org_key = $2 and d.state = 'pending'
        order by e.state_version, e.seq, d.id
        limit $3
        "#,
        lane.endpoint_id,
        lane.org_key,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Head {
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
        })
        .collect())
}

/// When the lane's first pending delivery (in event order) is due: when
/// the lane is; `None` when nothing is pending.
#[tracing::instrument(name = "db webhook_deliveries::next_due", level = "debug", skip_all)]
pub async fn next_due(conn: &mut PgConnection, lane: Lane) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        r#"
        select d.next_attempt_at
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
    .await?)
}

/// Records a delivered attempt in one statement, if `worker` still holds
/// the lane, and extends its lease. Answers `None` when the lane was lost,
/// else whether the endpoint's deliveries still run (it is not paused).
#[tracing::instrument(
    name = "db webhook_deliveries::record_delivered",
    level = "debug",
    skip_all
)]
pub async fn record_delivered(
    conn: &mut PgConnection,
    lane: Lane,
    worker: Uuid,
    head: &Head,
    attempt: &Attempt,
    lease_until: DateTime<Utc>,
) -> Result<Option<bool>> {
    let row = sqlx::query!(
        r#"
        with lane as (
            update webhook_lanes set claimed_until = $4
            where endpoint_id = $1 and org_key = $2 and claimed_by = $3
            returning endpoint_id
        ),
        attempt as (
            insert into webhook_attempts
                (delivery_id, attempt, attempted_at, http_status, error, duration_ms)
            select $5, $6, $7, $8, null, $9 from lane
        ),
        delivery as (
            update webhook_deliveries
            set attempts = $6, state = 'delivered', first_attempt_at = coalesce(first_attempt_at, $7)
            where id = $5 and exists (select 1 from lane)
        ),
        endpoint as (
            update webhook_endpoints set failing_since = null, last_error = null
            where id = $1 and failing_since is not null and exists (select 1 from lane)
        )
        select exists (select 1 from lane) as "held!",
               exists (select 1 from webhook_endpoints where id = $1 and paused_at is null)
                   as "active!"
        "#,
        lane.endpoint_id,
        lane.org_key,
        worker,
        lease_until,
        head.delivery_id,
        head.attempts + 1,
        attempt.attempted_at,
        attempt.http_status,
        attempt.duration_ms,
    )
    .fetch_one(conn)
    .await?;
    Ok(row.held.then_some(row.active))
}

#[tracing::instrument(
    name = "db webhook_deliveries::record_failure",
    level = "debug",
    skip_all
)]
pub async fn record_failure(
    conn: &mut PgConnection,
    head: &Head,
    attempt: &Attempt,
    after: AfterFailure,
) -> Result<()> {
    let (state, next_attempt_at) = match after {
        AfterFailure::RetryAt(at) => (DeliveryState::Pending, at),
        AfterFailure::GivenUp => (DeliveryState::Failed, head.next_attempt_at),
    };
    // One statement: this runs once per delivery.
    sqlx::query!(
        r#"
        with attempt as (
            insert into webhook_attempts
                (delivery_id, attempt, attempted_at, http_status, error, duration_ms)
            values ($1, $2, $3, $4, $5, $6)
        )
        update webhook_deliveries
        set attempts = $2, state = $7, next_attempt_at = $8,
            first_attempt_at = coalesce(first_attempt_at, $3)
        where id = $1
        "#,
        head.delivery_id,
        head.attempts + 1,
        attempt.attempted_at,
        attempt.http_status,
        attempt.error,
        attempt.duration_ms,
        state.as_str(),
        next_attempt_at,
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
