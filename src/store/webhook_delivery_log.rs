//! What was delivered to webhook endpoints: deliveries with their
//! attempts, replays of a range of events, and the backlog for the gauges.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::billing_events::Position;
use super::webhook_deliveries::Attempt;
use crate::domain::webhooks::DeliveryState;
use crate::error::Result;

/// A delivery as listed.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub org_id: Option<Uuid>,
    pub state: DeliveryState,
    pub replay: bool,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub attempts: Vec<Attempt>,
}

/// The endpoint's deliveries, newest first, below `before` when given.
#[tracing::instrument(name = "db webhook_deliveries::list", level = "debug", skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    event_id: Option<Uuid>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRecord>> {
    let rows = sqlx::query!(
        r#"
        select d.id, d.event_id, e.type, e.org_id, d.state, d.replay, d.created_at,
               d.next_attempt_at
        from webhook_deliveries d join billing_events e on e.id = d.event_id
        where d.endpoint_id = $1
          and ($2::uuid is null or d.event_id = $2)
          and ($3::bigint is null or d.id < $3)
        order by d.id desc
        limit $4
        "#,
        endpoint_id,
        event_id,
        before,
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut attempts: HashMap<i64, Vec<Attempt>> = HashMap::new();
    for a in sqlx::query!(
        r#"
        select delivery_id, attempted_at, http_status, error, duration_ms
        from webhook_attempts where delivery_id = any($1)
        order by delivery_id, attempt
        "#,
        &ids,
    )
    .fetch_all(&mut *conn)
    .await?
    {
        attempts.entry(a.delivery_id).or_default().push(Attempt {
            attempted_at: a.attempted_at,
            http_status: a.http_status,
            error: a.error,
            duration_ms: a.duration_ms,
        });
    }
    rows.into_iter()
        .map(|r| {
            Ok(DeliveryRecord {
                id: r.id,
                event_id: r.event_id,
                event_type: r.r#type,
                org_id: r.org_id,
                state: DeliveryState::parse(&r.state)
                    .map_err(|e| super::corrupt("webhook delivery state", e.0))?,
                replay: r.replay,
                created_at: r.created_at,
                next_attempt_at: r.next_attempt_at,
                attempts: attempts.remove(&r.id).unwrap_or_default(),
            })
        })
        .collect()
}

/// How many retained events between `from` and `to` (inclusive) the
/// endpoint's filter takes.
#[tracing::instrument(name = "db webhook_deliveries::count_range", level = "debug", skip_all)]
pub async fn count_range(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    from: Position,
    to: Position,
) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"
        select count(*) as "count!"
        from billing_events e join webhook_endpoints w on w.id = $1
        where endpoint_takes(w.event_types, e.type)
          and (e.state_version, e.seq) >= ($2, $3) and (e.state_version, e.seq) <= ($4, $5)
        "#,
        endpoint_id,
        from.state_version,
        from.seq,
        to.state_version,
        to.seq,
    )
    .fetch_one(conn)
    .await?)
}

/// Queues those events again for the endpoint; returns how many.
#[tracing::instrument(name = "db webhook_deliveries::replay", level = "debug", skip_all)]
pub async fn replay(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    from: Position,
    to: Position,
    now: DateTime<Utc>,
) -> Result<u64> {
    let queued = sqlx::query_scalar!(
        r#"
        with queued as (
            insert into webhook_deliveries
                (endpoint_id, event_id, org_key, replay, created_at, next_attempt_at)
            select w.id, e.id, coalesce(e.org_id, '00000000-0000-0000-0000-000000000000'),
                   true, $6, $6
            from billing_events e join webhook_endpoints w on w.id = $1
            where endpoint_takes(w.event_types, e.type)
              and (e.state_version, e.seq) >= ($2, $3) and (e.state_version, e.seq) <= ($4, $5)
            order by e.state_version, e.seq
            returning endpoint_id, org_key
        ),
        lanes as (
            insert into webhook_lanes (endpoint_id, org_key, due_at)
            select distinct endpoint_id, org_key, $6::timestamptz from queued
            on conflict (endpoint_id, org_key)
                do update set due_at = coalesce(webhook_lanes.due_at, excluded.due_at)
        )
        select count(*) as "count!" from queued
        "#,
        endpoint_id,
        from.state_version,
        from.seq,
        to.state_version,
        to.seq,
        now,
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(queued).unwrap_or_default())
}

/// Pending deliveries and the oldest one's creation, for the gauges.
#[tracing::instrument(name = "db webhook_deliveries::backlog", level = "debug", skip_all)]
pub async fn backlog(conn: &mut PgConnection) -> Result<(i64, Option<DateTime<Utc>>)> {
    let row = sqlx::query!(
        r#"
        select count(*) as "pending!", min(created_at) as oldest
        from webhook_deliveries where state = 'pending'
        "#
    )
    .fetch_one(conn)
    .await?;
    Ok((row.pending, row.oldest))
}
