//! The audit trail: one row per mutation, written in the mutation's own
//! transaction so the trail and the state never disagree.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::ids::OrgId;
use crate::error::Result;

/// An entry to write.
#[derive(Debug)]
pub struct NewAuditEvent<'a> {
    pub org_id: OrgId,
    pub actor: &'a str,
    pub action: &'a str,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub occurred_at: DateTime<Utc>,
}

/// An entry as read back.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: i64,
    pub org_id: OrgId,
    pub actor: String,
    pub action: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub occurred_at: DateTime<Utc>,
}

#[tracing::instrument(name = "db audit::record", level = "debug", skip_all)]
pub async fn record(conn: &mut PgConnection, event: NewAuditEvent<'_>) -> Result<()> {
    sqlx::query!(
        r#"
        insert into audit_events (org_id, actor, action, before, after, occurred_at)
        values ($1, $2, $3, $4, $5, $6)
        "#,
        event.org_id.as_uuid(),
        event.actor,
        event.action,
        event.before,
        event.after,
        event.occurred_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first, starting below `before_id` when given.
#[tracing::instrument(name = "db audit::list_page", level = "debug", skip_all)]
pub async fn list_page(
    conn: &mut PgConnection,
    org: OrgId,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEvent>> {
    struct Row {
        id: i64,
        org_id: Uuid,
        actor: String,
        action: String,
        before: Option<Value>,
        after: Option<Value>,
        occurred_at: DateTime<Utc>,
    }
    let rows = sqlx::query_as!(
        Row,
        r#"
        select id, org_id, actor, action, before, after, occurred_at
        from audit_events
        where org_id = $1 and ($2::bigint is null or id < $2)
        order by id desc
        limit $3
        "#,
        org.as_uuid(),
        before_id,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEvent {
            id: r.id,
            org_id: r.org_id.into(),
            actor: r.actor,
            action: r.action,
            before: r.before,
            after: r.after,
            occurred_at: r.occurred_at,
        })
        .collect())
}
