//! Billing operations (`billing_operations`): recorded before Stripe is
//! called, claimed while performed, finished once.
//!
//! A claim is a token and a deadline. Whoever holds the token may store the
//! plan and the outcome; once the deadline passes, the operations loop may
//! take the claim over and resume. Finishing checks the token, so of two
//! performers only one records the outcome.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::corrupt;
use crate::domain::ids::OrgId;
use crate::domain::operation::{OperationKind, OperationStatus};
use crate::error::Result;

/// An operation as stored.
#[derive(Debug, Clone)]
pub struct StoredOperation {
    pub id: Uuid,
    pub org_id: OrgId,
    pub kind: OperationKind,
    pub status: OperationStatus,
    pub actor: String,
    pub request: Value,
    pub plan: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub attempts: i32,
    pub claim_token: Option<Uuid>,
}

struct Row {
    id: Uuid,
    org_id: Uuid,
    kind: String,
    status: String,
    actor: String,
    request: Value,
    plan: Option<Value>,
    result: Option<Value>,
    error: Option<String>,
    attempts: i32,
    claim_token: Option<Uuid>,
}

impl TryFrom<Row> for StoredOperation {
    type Error = crate::error::Error;

    fn try_from(row: Row) -> Result<Self> {
        Ok(Self {
            id: row.id,
            org_id: row.org_id.into(),
            kind: OperationKind::parse(&row.kind).map_err(|e| corrupt("operation kind", e))?,
            status: OperationStatus::parse(&row.status)
                .map_err(|e| corrupt("operation status", e))?,
            actor: row.actor,
            request: row.request,
            plan: row.plan,
            result: row.result,
            error: row.error,
            attempts: row.attempts,
            claim_token: row.claim_token,
        })
    }
}

/// A new operation.
#[derive(Debug, Clone)]
pub struct NewOperation<'a> {
    pub id: Uuid,
    pub org_id: OrgId,
    pub kind: OperationKind,
    pub actor: &'a str,
    pub caller_key: Option<&'a str>,
    pub request: &'a Value,
    pub now: DateTime<Utc>,
}

/// How recording a running operation went.
#[derive(Debug)]
pub enum Recorded {
    /// Recorded and claimed with this token.
    Claimed(Uuid),
    /// Another change of the organization's subscription is running.
    Busy,
    /// The caller's key was used before: the operation it made.
    Replay(Box<StoredOperation>),
}

/// Records `new` as running, claimed until `lease_until`.
#[tracing::instrument(name = "db operations::record_running", level = "debug", skip_all)]
pub async fn record_running(
    conn: &mut PgConnection,
    new: &NewOperation<'_>,
    lease_until: DateTime<Utc>,
) -> Result<Recorded> {
    if let Some(key) = new.caller_key
        && let Some(first) = by_caller_key(conn, new.org_id, new.kind, key).await?
    {
        return Ok(Recorded::Replay(Box::new(first)));
    }
    let token = Uuid::new_v4();
    let inserted = sqlx::query!(
        r#"
        insert into billing_operations
            (id, org_id, kind, serialized, status, actor, caller_key, request, claim_token,
             claimed_until, created_at)
        values ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $9, $10)
        "#,
        new.id,
        new.org_id.as_uuid(),
        new.kind.as_str(),
        new.kind.serialized(),
        new.actor,
        new.caller_key,
        new.request,
        token,
        lease_until,
        new.now,
    )
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(Recorded::Claimed(token)),
        Err(sqlx::Error::Database(db))
            if db.constraint() == Some("billing_operations_one_running") =>
        {
            Ok(Recorded::Busy)
        }
        // Two first calls with one key at once: the other one won.
        Err(sqlx::Error::Database(db))
            if db.constraint() == Some("billing_operations_caller_key") =>
        {
            let key = new.caller_key.unwrap_or_default();
            match by_caller_key(conn, new.org_id, new.kind, key).await? {
                Some(first) => Ok(Recorded::Replay(Box::new(first))),
                None => Ok(Recorded::Busy),
            }
        }
        Err(error) => Err(error.into()),
    }
}

async fn by_caller_key(
    conn: &mut PgConnection,
    org: OrgId,
    kind: OperationKind,
    key: &str,
) -> Result<Option<StoredOperation>> {
    let row = sqlx::query_as!(
        Row,
        r#"
        select id, org_id, kind, status, actor, request, plan, result, error, attempts, claim_token
        from billing_operations where org_id = $1 and kind = $2 and caller_key = $3
        "#,
        org.as_uuid(),
        kind.as_str(),
        key,
    )
    .fetch_optional(conn)
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(name = "db operations::get", level = "debug", skip_all)]
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<StoredOperation>> {
    let row = sqlx::query_as!(
        Row,
        r#"
        select id, org_id, kind, status, actor, request, plan, result, error, attempts, claim_token
        from billing_operations where id = $1
        "#,
        id,
    )
    .fetch_optional(conn)
    .await?;
    row.map(TryInto::try_into).transpose()
}

/// Stores the plan; false when the claim was taken over meanwhile.
#[tracing::instrument(name = "db operations::store_plan", level = "debug", skip_all)]
pub async fn store_plan(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    plan: &Value,
) -> Result<bool> {
    let updated = sqlx::query!(
        r#"
        update billing_operations set plan = $3
        where id = $1 and claim_token = $2 and status = 'running'
        "#,
        id,
        token,
        plan,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Finishes the operation; false when the claim was taken over meanwhile
/// (the other performer records the outcome).
#[tracing::instrument(name = "db operations::finish", level = "debug", skip_all)]
pub async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    status: OperationStatus,
    result: Option<&Value>,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let updated = sqlx::query!(
        r#"
        update billing_operations
        set status = $3, result = $4, error = $5, finished_at = $6, attempts = attempts + 1,
            claim_token = null, claimed_until = null
        where id = $1 and claim_token = $2 and status = 'running'
        "#,
        id,
        token,
        status.as_str(),
        result,
        error,
        now,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}

/// Forgets an operation whose plan refused the change before anything was
/// sent: a refused request writes nothing.
#[tracing::instrument(name = "db operations::discard", level = "debug", skip_all)]
pub async fn discard(conn: &mut PgConnection, id: Uuid, token: Uuid) -> Result<()> {
    sqlx::query!(
        r#"
        delete from billing_operations
        where id = $1 and claim_token = $2 and status = 'running' and plan is null
        "#,
        id,
        token,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An attempt that could not finish (Stripe unreachable): the claim now
/// lapses at `retry_at`, when the operations loop resumes it.
#[tracing::instrument(name = "db operations::postpone", level = "debug", skip_all)]
pub async fn postpone(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    error: &str,
    retry_at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        r#"
        update billing_operations
        set attempts = attempts + 1, error = $3, claimed_until = $4
        where id = $1 and claim_token = $2 and status = 'running'
        "#,
        id,
        token,
        error,
        retry_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes over the oldest running operation whose claim has lapsed, or
/// starts the oldest queued one of an organization with nothing running.
#[tracing::instrument(name = "db operations::claim_next", level = "debug", skip_all)]
pub async fn claim_next(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<(StoredOperation, Uuid)>> {
    let token = Uuid::new_v4();
    let lapsed = sqlx::query_as!(
        Row,
        r#"
        update billing_operations set claim_token = $3, claimed_until = $2
        where id = (
            select id from billing_operations
            where status = 'running' and claimed_until <= $1
            order by claimed_until
            limit 1
            for update skip locked
        )
        returning id, org_id, kind, status, actor, request, plan, result, error, attempts,
                  claim_token
        "#,
        now,
        lease_until,
        token,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = lapsed {
        return Ok(Some((row.try_into()?, token)));
    }
    // A queued operation starts when its organization has none running;
    // the unique index settles a race between two loops.
    let started = sqlx::query_as!(
        Row,
        r#"
        update billing_operations set status = 'running', claim_token = $2, claimed_until = $1
        where id = (
            select q.id from billing_operations q
            where q.status = 'queued'
              and not exists (
                  select 1 from billing_operations r
                  where r.org_id = q.org_id and r.serialized and r.status = 'running')
            order by q.created_at
            limit 1
            for update skip locked
        )
        returning id, org_id, kind, status, actor, request, plan, result, error, attempts,
                  claim_token
        "#,
        lease_until,
        token,
    )
    .fetch_optional(&mut *conn)
    .await;
    claimed_unless_busy(started, token)
}

/// Queues an upkeep of the organization unless one is already waiting;
/// the id of the one waiting either way.
#[tracing::instrument(name = "db operations::queue_upkeep", level = "debug", skip_all)]
pub async fn queue_upkeep(
    conn: &mut PgConnection,
    org: OrgId,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    Ok(sqlx::query_scalar!(
        r#"
        insert into billing_operations
            (id, org_id, kind, serialized, status, actor, request, created_at)
        values ($1, $2, 'upkeep', true, 'queued', $3, '{}'::jsonb, $4)
        on conflict (org_id) where kind = 'upkeep' and status = 'queued'
            do update set created_at = billing_operations.created_at
        returning id
        "#,
        Uuid::now_v7(),
        org.as_uuid(),
        actor,
        now,
    )
    .fetch_one(conn)
    .await?)
}

/// Starts the organization's queued upkeep at once if nothing of the
/// organization runs; the claim token when it did.
#[tracing::instrument(name = "db operations::start_queued_upkeep", level = "debug", skip_all)]
pub async fn start_queued_upkeep(
    conn: &mut PgConnection,
    org: OrgId,
    lease_until: DateTime<Utc>,
) -> Result<Option<(StoredOperation, Uuid)>> {
    let token = Uuid::new_v4();
    let started = sqlx::query_as!(
        Row,
        r#"
        update billing_operations set status = 'running', claim_token = $3, claimed_until = $2
        where org_id = $1 and kind = 'upkeep' and status = 'queued'
        returning id, org_id, kind, status, actor, request, plan, result, error, attempts,
                  claim_token
        "#,
        org.as_uuid(),
        lease_until,
        token,
    )
    .fetch_optional(&mut *conn)
    .await;
    claimed_unless_busy(started, token)
}

/// The operation a claiming statement started, with its token; `None`
/// when none was due, or the organization turned out to have one running
/// (the unique index settles a race between two claimers).
fn claimed_unless_busy(
    started: std::result::Result<Option<Row>, sqlx::Error>,
    token: Uuid,
) -> Result<Option<(StoredOperation, Uuid)>> {
    match started {
        Ok(row) => row.map(|row| Ok((row.try_into()?, token))).transpose(),
        Err(sqlx::Error::Database(db))
            if db.constraint() == Some("billing_operations_one_running") =>
        {
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}
