//! Checkout sessions this service opened (`checkout_sessions`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::checkout::SessionStatus;
use crate::domain::ids::OrgId;
use crate::error::Result;

/// A session as recorded; its status is what we last saw.
#[derive(Debug, Clone)]
pub struct RecordedSession {
    pub id: String,
    pub url: String,
    pub request: String,
    pub status: SessionStatus,
}

fn status_text(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Open => "open",
        SessionStatus::Complete => "complete",
        SessionStatus::Expired => "expired",
    }
}

fn parse_status(raw: &str) -> SessionStatus {
    match raw {
        "complete" => SessionStatus::Complete,
        "expired" => SessionStatus::Expired,
        // The schema allows nothing else.
        _ => SessionStatus::Open,
    }
}

/// What kind of sale a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    Subscription,
    Payment,
}

#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub org: OrgId,
    pub operation: Uuid,
    pub mode: SessionMode,
    pub request: &'a str,
    pub url: &'a str,
    pub now: DateTime<Utc>,
}

/// Records a session this service opened (a replayed creation records it
/// once).
#[tracing::instrument(name = "db checkout_sessions::insert", level = "debug", skip_all)]
pub async fn insert(conn: &mut PgConnection, new: &NewSession<'_>) -> Result<()> {
    let mode = match new.mode {
        SessionMode::Subscription => "subscription",
        SessionMode::Payment => "payment",
    };
    sqlx::query!(
        r#"
        insert into checkout_sessions
            (stripe_session_id, org_id, operation_id, mode, request, url, status, created_at)
        values ($1, $2, $3, $4, $5, $6, 'open', $7)
        on conflict (stripe_session_id) do nothing
        "#,
        new.id,
        new.org.as_uuid(),
        new.operation,
        mode,
        new.request,
        new.url,
        new.now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The organization's latest subscription session that we have not seen
/// closed.
#[tracing::instrument(
    name = "db checkout_sessions::last_open_subscription_session",
    level = "debug",
    skip_all
)]
pub async fn last_open_subscription_session(
    conn: &mut PgConnection,
    org: OrgId,
) -> Result<Option<RecordedSession>> {
    let row = sqlx::query!(
        r#"
        select stripe_session_id, url, request, status from checkout_sessions
        where org_id = $1 and mode = 'subscription' and status = 'open'
        order by created_at desc
        limit 1
        "#,
        org.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| RecordedSession {
        id: r.stripe_session_id,
        url: r.url,
        request: r.request,
        status: parse_status(&r.status),
    }))
}

/// Records that a session was paid or expired.
#[tracing::instrument(name = "db checkout_sessions::set_status", level = "debug", skip_all)]
pub async fn set_status(conn: &mut PgConnection, id: &str, status: SessionStatus) -> Result<()> {
    sqlx::query!(
        "update checkout_sessions set status = $2 where stripe_session_id = $1",
        id,
        status_text(status),
    )
    .execute(conn)
    .await?;
    Ok(())
}
