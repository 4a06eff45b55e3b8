//! The Stripe webhook inbox (`stripe_events`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Result;

/// A verified event as received.
#[derive(Debug, Clone)]
pub struct ReceivedEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub raw_body: &'a str,
    pub stripe_created_at: DateTime<Utc>,
}

/// Stores the event unless it is already stored; true when this call stored it.
pub async fn insert_if_new(conn: &mut PgConnection, event: &ReceivedEvent<'_>) -> Result<bool> {
    let inserted = sqlx::query!(
        r#"
        insert into stripe_events (id, event_type, raw_body, stripe_created_at)
        values ($1, $2, $3, $4)
        on conflict (id) do nothing
        "#,
        event.id,
        event.event_type,
        event.raw_body,
        event.stripe_created_at,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}
