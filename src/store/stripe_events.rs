//! The Stripe webhook inbox (`stripe_events`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Result;

/// An event to store: verified as delivered, or found by catch-up.
#[derive(Debug, Clone)]
pub struct ReceivedEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub raw_body: &'a str,
    pub stripe_created_at: DateTime<Utc>,
    /// The subscription it only asks us to read again, if that is all.
    pub subscription_id: Option<&'a str>,
}

/// How an event reached the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// Delivered to the webhook endpoint.
    Webhook,
    /// Found by listing Stripe's Events API.
    CatchUp,
}

impl EventSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::CatchUp => "catch_up",
        }
    }
}

/// Stores, in one statement, the events not stored yet; returns the ids
/// this call stored (an id given twice is stored once).
#[tracing::instrument(name = "db stripe_events::insert_new", level = "debug", skip_all)]
pub async fn insert_new(
    conn: &mut PgConnection,
    events: &[ReceivedEvent<'_>],
    source: EventSource,
) -> Result<Vec<String>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let bodies: Vec<&str> = events.iter().map(|e| e.raw_body).collect();
    let created: Vec<DateTime<Utc>> = events.iter().map(|e| e.stripe_created_at).collect();
    let subscriptions: Vec<Option<&str>> = events.iter().map(|e| e.subscription_id).collect();
    let stored = sqlx::query_scalar!(
        r#"
        insert into stripe_events
            (id, event_type, raw_body, stripe_created_at, source, subscription_id)
        select id, event_type, raw_body, created, $6, subscription_id
        from unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
            as e (id, event_type, raw_body, created, subscription_id)
        on conflict (id) do nothing
        returning id
        "#,
        &ids as &[&str],
        &types as &[&str],
        &bodies as &[&str],
        &created,
        &subscriptions as &[Option<&str>],
        source.as_str(),
    )
    .fetch_all(conn)
    .await?;
    Ok(stored)
}

/// A stored event a worker has claimed.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub id: String,
    pub event_type: String,
    pub raw_body: String,
    /// Attempts made before this one.
    pub attempts: i32,
    /// When it was claimed, by the database's clock: every event stored
    /// before then was created at Stripe before any reading that follows.
    pub claimed_at: DateTime<Utc>,
}

/// Claims the next due pending event until `lease_until`: its next attempt
/// moves there, so no other worker (or replica) takes it meanwhile, and if
/// this one dies it is simply due again then. `SKIP LOCKED` lets workers
/// claim side by side; the claim is one statement, so nothing stays open
/// while the event is applied. An event whose subscription another worker
/// holds an event of is passed over: that worker's reading will cover it.
#[tracing::instrument(name = "db stripe_events::claim_due", level = "debug", skip_all)]
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<ClaimedEvent>> {
    let event = sqlx::query_as!(
        ClaimedEvent,
        r#"
        update stripe_events set next_attempt_at = $2, claimed_until = $2
        where id = (
            select id from stripe_events e
            where state = 'pending' and next_attempt_at <= $1
              and (e.subscription_id is null or not exists (
                  select 1 from stripe_events held
                  where held.subscription_id = e.subscription_id and held.state = 'pending'
                    and held.claimed_until > $1))
            order by next_attempt_at, stripe_created_at, id
            limit 1
            for update skip locked
        )
        returning id, event_type, raw_body, attempts, now() as "claimed_at!"
        "#,
        now,
        lease_until,
    )
    .fetch_optional(conn)
    .await?;
    Ok(event)
}

/// How applying an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// A type this service does not act on, or an object that is not ours.
    NoEffect,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::NoEffect => "no_effect",
        }
    }
}

/// Marks the event finished; `note` says why when it had no effect.
#[tracing::instrument(name = "db stripe_events::finish", level = "debug", skip_all)]
pub async fn finish(
    conn: &mut PgConnection,
    id: &str,
    outcome: Outcome,
    note: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        r#"
        update stripe_events
        set state = $2, attempts = attempts + 1, finished_at = $3, last_error = null, note = $4
        where id = $1
        "#,
        id,
        outcome.as_str(),
        now,
        note,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Finishes, as applied, the other pending events that only ask to read
/// `subscription_id` again and were stored before `covered_before` (when
/// the reading that covers them was claimed). Events claimed by another
/// worker, or waiting out a retry, are left to it. Returns how many.
#[tracing::instrument(name = "db stripe_events::finish_covered", level = "debug", skip_all)]
pub async fn finish_covered(
    conn: &mut PgConnection,
    subscription_id: &str,
    reading_for: &str,
    covered_before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let note = format!("covered by the reading of the subscription for {reading_for}");
    let finished = sqlx::query!(
        r#"
        update stripe_events
        set state = 'applied', attempts = attempts + 1, finished_at = $4, last_error = null,
            note = $5
        where subscription_id = $1 and state = 'pending' and id <> $2
          and received_at < $3 and next_attempt_at <= $3
        "#,
        subscription_id,
        reading_for,
        covered_before,
        now,
        note,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(finished)
}

/// Puts a claimed event back for `retry_at` without counting an attempt:
/// it did not fail, Stripe asked us to slow down.
#[tracing::instrument(name = "db stripe_events::defer", level = "debug", skip_all)]
pub async fn defer(
    conn: &mut PgConnection,
    id: &str,
    reason: &str,
    retry_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "update stripe_events set next_attempt_at = $2, last_error = $3, claimed_until = null where id = $1",
        id,
        retry_at,
        reason,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed attempt: retried at `retry_at`, or parked when `None`.
#[tracing::instrument(name = "db stripe_events::record_failure", level = "debug", skip_all)]
pub async fn record_failure(
    conn: &mut PgConnection,
    id: &str,
    error: &str,
    retry_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        r#"
        update stripe_events
        set attempts = attempts + 1, last_error = $2, claimed_until = null,
            state = case when $3::timestamptz is null then 'parked' else 'pending' end,
            next_attempt_at = coalesce($3, next_attempt_at),
            finished_at = case when $3::timestamptz is null then $4::timestamptz else null end
        where id = $1
        "#,
        id,
        error,
        retry_at,
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A parked event, for operators.
#[derive(Debug, Clone)]
pub struct ParkedEvent {
    pub id: String,
    pub event_type: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub parked_at: Option<DateTime<Utc>>,
}

/// Parked events, oldest first.
#[tracing::instrument(name = "db stripe_events::list_parked", level = "debug", skip_all)]
pub async fn list_parked(conn: &mut PgConnection, limit: i64) -> Result<Vec<ParkedEvent>> {
    let events = sqlx::query_as!(
        ParkedEvent,
        r#"
        select id, event_type, attempts, last_error, received_at, finished_at as parked_at
        from stripe_events where state = 'parked'
        order by received_at, id
        limit $1
        "#,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(events)
}

/// Puts a parked event back in line with a fresh set of attempts; false when
/// no parked event has this id.
#[tracing::instrument(name = "db stripe_events::retry_parked", level = "debug", skip_all)]
pub async fn retry_parked(conn: &mut PgConnection, id: &str, now: DateTime<Utc>) -> Result<bool> {
    let updated = sqlx::query!(
        r#"
        update stripe_events
        set state = 'pending', attempts = 0, next_attempt_at = $2, finished_at = null
        where id = $1 and state = 'parked'
        "#,
        id,
        now,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// How the inbox stands, for the metrics a scrape reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxDepth {
    pub pending: i64,
    pub parked: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// Counts pending and parked events (both on partial indexes).
#[tracing::instrument(name = "db stripe_events::depth", level = "debug", skip_all)]
pub async fn depth(conn: &mut PgConnection) -> Result<InboxDepth> {
    let row = sqlx::query!(
        r#"
        select
            count(*) filter (where state = 'pending') as "pending!",
            count(*) filter (where state = 'parked') as "parked!",
            min(received_at) filter (where state = 'pending') as oldest_pending
        from stripe_events where state in ('pending', 'parked')
        "#
    )
    .fetch_one(conn)
    .await?;
    Ok(InboxDepth {
        pending: row.pending,
        parked: row.parked,
        oldest_pending: row.oldest_pending,
    })
}
