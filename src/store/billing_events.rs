//! The outbox of lifecycle events (see migration `..._billing_events.sql`):
//! recorded in the transaction of the change they report, fanned out to the
//! webhook endpoints whose filter takes them in the same statement, and read
//! back in commit order.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::ids::OrgId;
use crate::domain::lifecycle::NewEvent;
use crate::error::Result;
use crate::event_codec::{self, PublishedEvent};

/// Where an event stands in commit order: its transaction's state version,
/// then its place within the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub state_version: i64,
    pub seq: i64,
}

impl Position {
    /// Before every event.
    pub const START: Self = Self {
        state_version: 0,
        seq: 0,
    };
}

/// The organization key of an event's webhook lane: the nil UUID stands
/// for events without an organization.
pub fn lane_key(org: Option<OrgId>) -> Uuid {
    org.map_or(Uuid::nil(), |org| org.as_uuid())
}

/// Records `events` in the caller's transaction, in order, and queues a
/// delivery of each to every endpoint whose filter takes it.
#[tracing::instrument(name = "db billing_events::record", level = "debug", skip_all)]
pub async fn record(conn: &mut PgConnection, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut orgs = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut times = Vec::with_capacity(events.len());
    let mut data = Vec::with_capacity(events.len());
    let mut names = Vec::with_capacity(events.len());
    for event in events {
        ids.push(event.id);
        orgs.push(event.org.map(|o| o.as_uuid()));
        types.push(event.event.event_type().as_str().to_owned());
        times.push(event.occurred_at);
        data.push(event_codec::encode_data(&event.event)?);
        names.push(serde_json::Value::from(event.event.names()));
    }
    let now = events[0].occurred_at;
    sqlx::query!(
        r#"
        with recorded as (
            insert into billing_events (id, org_id, type, occurred_at, data, names)
            select e.id, e.org_id, e.type, e.occurred_at, e.data,
                   array(select jsonb_array_elements_text(e.names))
            from unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::jsonb[])
                with ordinality as e (id, org_id, type, occurred_at, data, names, n)
            order by e.n
            returning id, org_id, type
        ),
        queued as (
            insert into webhook_deliveries (endpoint_id, event_id, org_key, created_at, next_attempt_at)
            select w.id, r.id, coalesce(r.org_id, '00000000-0000-0000-0000-000000000000'), $7, $7
            from recorded r
            join webhook_endpoints w on endpoint_takes(w.event_types, r.type)
            returning endpoint_id, org_key
        )
        insert into webhook_lanes (endpoint_id, org_key, due_at)
        select distinct endpoint_id, org_key, $7::timestamptz from queued
        on conflict (endpoint_id, org_key)
            do update set due_at = coalesce(webhook_lanes.due_at, excluded.due_at)
        "#,
        &ids,
        &orgs as &[Option<Uuid>],
        &types,
        &times,
        &data,
        &names,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Where event `id` stands, if it is still retained.
#[tracing::instrument(name = "db billing_events::position_of", level = "debug", skip_all)]
pub async fn position_of(conn: &mut PgConnection, id: Uuid) -> Result<Option<Position>> {
    let row = sqlx::query!(
        r#"select state_version as "state_version!", seq from billing_events where id = $1"#,
        id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Position {
        state_version: r.state_version,
        seq: r.seq,
    }))
}

/// The newest event's position; before every event when there is none.
#[tracing::instrument(name = "db billing_events::newest_position", level = "debug", skip_all)]
pub async fn newest_position(conn: &mut PgConnection) -> Result<Position> {
    let row = sqlx::query!(
        r#"
        select state_version as "state_version!", seq from billing_events
        order by state_version desc, seq desc limit 1
        "#
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or(Position::START, |r| Position {
        state_version: r.state_version,
        seq: r.seq,
    }))
}

/// Up to `limit` events after `after`, in commit order, with positions.
#[tracing::instrument(name = "db billing_events::after", level = "debug", skip_all)]
pub async fn after(
    conn: &mut PgConnection,
    after: Position,
    limit: i64,
) -> Result<Vec<(Position, PublishedEvent)>> {
    let rows = sqlx::query!(
        r#"
        select id, org_id, type, occurred_at, state_version as "state_version!", seq, data
        from billing_events
        where (state_version, seq) > ($1, $2)
        order by state_version, seq
        limit $3
        "#,
        after.state_version,
        after.seq,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let position = Position {
                state_version: r.state_version,
                seq: r.seq,
            };
            let event = published(
                r.id,
                r.org_id,
                r.r#type,
                r.occurred_at,
                r.state_version,
                r.data,
            );
            (position, event)
        })
        .collect())
}

/// An event row as the codec reads it.
pub(super) fn published(
    id: Uuid,
    org_id: Option<Uuid>,
    event_type: String,
    occurred_at: DateTime<Utc>,
    state_version: i64,
    data: serde_json::Value,
) -> PublishedEvent {
    PublishedEvent {
        id,
        org_id: org_id.map(OrgId::from),
        event_type,
        occurred_at,
        state_version: u64::try_from(state_version).unwrap_or_default(),
        data,
    }
}

/// Deletes up to `limit` events that occurred before `cutoff` (their
/// deliveries go with them); returns how many.
#[tracing::instrument(name = "db billing_events::purge", level = "debug", skip_all)]
pub async fn purge(conn: &mut PgConnection, cutoff: DateTime<Utc>, limit: i64) -> Result<u64> {
    Ok(sqlx::query!(
        r#"
        delete from billing_events
        where id in (select id from billing_events where occurred_at < $1 limit $2)
        "#,
        cutoff,
        limit,
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// In the events that name any of `names`, replaces each needle (a quoted
/// JSON string naming the person) with its replacement and forgets the
/// names; returns how many events changed.
#[tracing::instrument(name = "db billing_events::erase_names", level = "debug", skip_all)]
pub async fn erase_names(
    conn: &mut PgConnection,
    names: &[String],
    replacements: &[(String, String)],
) -> Result<u64> {
    for (needle, replacement) in replacements {
        sqlx::query!(
            r#"
            update billing_events set data = replace(data::text, $2, $3)::jsonb
            where names && $1::text[]
            "#,
            names,
            needle,
            replacement,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(sqlx::query!(
        r#"
        update billing_events
        set names = array(select n from unnest(names) as n where n <> all($1))
        where names && $1::text[]
        "#,
        names,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
