//! Operators' webhook endpoints: their settings, signing secrets, and
//! whether deliveries to them run.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::lifecycle::EventType;
use crate::domain::webhooks::Endpoint;
use crate::error::Result;

struct Row {
    id: Uuid,
    url: String,
    description: String,
    event_types: Vec<String>,
    max_in_flight: i32,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    paused_at: Option<DateTime<Utc>>,
    paused_reason: Option<String>,
    failing_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    last_rotation_key: Option<String>,
}

impl TryFrom<Row> for Endpoint {
    type Error = crate::error::Error;

    fn try_from(row: Row) -> Result<Self> {
        let event_types = EventType::parse_list(&row.event_types)
            .map_err(|e| super::corrupt("webhook endpoint event type", e))?;
        Ok(Self {
            id: row.id,
            url: row.url,
            description: row.description,
            event_types,
            max_in_flight: row.max_in_flight,
            secret: row.secret,
            previous_secret: row.previous_secret.zip(row.previous_secret_expires_at),
            paused: row
                .paused_at
                .map(|at| (at, row.paused_reason.unwrap_or_default())),
            failing_since: row.failing_since,
            last_error: row.last_error,
            created_at: row.created_at,
            last_rotation_key: row.last_rotation_key,
        })
    }
}

fn type_names(types: &[EventType]) -> Vec<String> {
    types.iter().map(|t| t.as_str().to_owned()).collect()
}

/// Inserts the endpoint; false when `creation_key` made one already (see
/// [`created_under`]).
#[tracing::instrument(name = "db webhook_endpoints::insert", level = "debug", skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    endpoint: &Endpoint,
    creation_key: Option<&str>,
) -> Result<bool> {
    let inserted = sqlx::query!(
        r#"
        insert into webhook_endpoints
            (id, url, description, event_types, max_in_flight, secret, created_at, updated_at,
             creation_idempotency_key)
        values ($1, $2, $3, $4, $5, $6, $7, $7, $8)
        on conflict (creation_idempotency_key) do nothing
        "#,
        endpoint.id,
        endpoint.url,
        endpoint.description,
        &type_names(&endpoint.event_types),
        endpoint.max_in_flight,
        endpoint.secret,
        endpoint.created_at,
        creation_key,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The id of the endpoint a creation under `key` made, if it still exists.
#[tracing::instrument(
    name = "db webhook_endpoints::created_under",
    level = "debug",
    skip_all
)]
pub async fn created_under(conn: &mut PgConnection, key: &str) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar!(
        "select id from webhook_endpoints where creation_idempotency_key = $1",
        key,
    )
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(name = "db webhook_endpoints::list", level = "debug", skip_all)]
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Endpoint>> {
    sqlx::query_as!(
        Row,
        r#"
        select id, url, description, event_types, max_in_flight, secret, previous_secret,
               previous_secret_expires_at, paused_at, paused_reason, failing_since, last_error,
               created_at, last_rotation_key
        from webhook_endpoints order by created_at, id
        "#
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(Endpoint::try_from)
    .collect()
}

#[tracing::instrument(name = "db webhook_endpoints::get", level = "debug", skip_all)]
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Endpoint>> {
    sqlx::query_as!(
        Row,
        r#"
        select id, url, description, event_types, max_in_flight, secret, previous_secret,
               previous_secret_expires_at, paused_at, paused_reason, failing_since, last_error,
               created_at, last_rotation_key
        from webhook_endpoints where id = $1
        "#,
        id,
    )
    .fetch_optional(conn)
    .await?
    .map(Endpoint::try_from)
    .transpose()
}

/// Locks the endpoint for the rest of the transaction; false when unknown.
#[tracing::instrument(name = "db webhook_endpoints::lock", level = "debug", skip_all)]
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        r#"select true as "found!" from webhook_endpoints where id = $1 for no key update"#,
        id,
    )
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// Stores the settings and secrets of `endpoint` (not its pause or
/// failure state, which deliveries keep).
#[tracing::instrument(name = "db webhook_endpoints::update", level = "debug", skip_all)]
pub async fn update(
    conn: &mut PgConnection,
    endpoint: &Endpoint,
    now: DateTime<Utc>,
) -> Result<()> {
    let (previous, previous_until) = endpoint.previous_secret.clone().unzip();
    sqlx::query!(
        r#"
        update webhook_endpoints
        set url = $2, description = $3, event_types = $4, max_in_flight = $5, secret = $6,
            previous_secret = $7, previous_secret_expires_at = $8, last_rotation_key = $9,
            updated_at = $10
        where id = $1
        "#,
        endpoint.id,
        endpoint.url,
        endpoint.description,
        &type_names(&endpoint.event_types),
        endpoint.max_in_flight,
        endpoint.secret,
        previous,
        previous_until,
        endpoint.last_rotation_key,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stops deliveries; false when it was paused already.
#[tracing::instrument(name = "db webhook_endpoints::pause", level = "debug", skip_all)]
pub async fn pause(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    Ok(sqlx::query!(
        r#"
        update webhook_endpoints set paused_at = $2, paused_reason = $3, updated_at = $2
        where id = $1 and paused_at is null
        "#,
        id,
        now,
        reason,
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Starts deliveries again: every pending delivery gets a fresh retry
/// schedule and is due at once, oldest first as always.
#[tracing::instrument(name = "db webhook_endpoints::resume", level = "debug", skip_all)]
pub async fn resume(conn: &mut PgConnection, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    sqlx::query!(
        r#"
        update webhook_endpoints
        set paused_at = null, paused_reason = null, failing_since = null, last_error = null,
            updated_at = $2
        where id = $1
        "#,
        id,
        now,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        r#"
        update webhook_deliveries set first_attempt_at = null, next_attempt_at = $2
        where endpoint_id = $1 and state = 'pending'
        "#,
        id,
        now,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update webhook_lanes set due_at = $2 where endpoint_id = $1 and due_at is not null",
        id,
        now,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes the endpoint with everything queued for it; false when unknown.
#[tracing::instrument(name = "db webhook_endpoints::delete", level = "debug", skip_all)]
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query!("delete from webhook_endpoints where id = $1", id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Notes a failed attempt; returns since when the endpoint has been failing
/// (unless it is paused: a paused endpoint is not paused again).
#[tracing::instrument(name = "db webhook_endpoints::note_failure", level = "debug", skip_all)]
pub async fn note_failure(
    conn: &mut PgConnection,
    id: Uuid,
    error: &str,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let failing_since = sqlx::query_scalar!(
        r#"
        update webhook_endpoints
        set failing_since = coalesce(failing_since, $3), last_error = $2
        where id = $1 and paused_at is null
        returning failing_since as "failing_since!"
        "#,
        id,
        error,
        now,
    )
    .fetch_optional(conn)
    .await?;
    Ok(failing_since)
}

/// How many endpoints are paused, for the gauge.
#[tracing::instrument(name = "db webhook_endpoints::count_paused", level = "debug", skip_all)]
pub async fn count_paused(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "count!" from webhook_endpoints where paused_at is not null"#
    )
    .fetch_one(conn)
    .await?)
}
