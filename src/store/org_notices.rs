//! What was last announced about an organization, so each announcement is
//! made once: the trial stage (and when it may next change), and whether
//! it is over its paid seats (`org_notices`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::ids::OrgId;
use crate::domain::trial::{TrialNotice, TrialStage};
use crate::error::Result;

#[tracing::instrument(
    name = "db org_notices::over_seats_announced",
    level = "debug",
    skip_all
)]
pub async fn over_seats_announced(conn: &mut PgConnection, org: OrgId) -> Result<bool> {
    Ok(sqlx::query_scalar!(
        "select over_seats_announced from org_notices where org_id = $1",
        org.as_uuid(),
    )
    .fetch_optional(conn)
    .await?
    .unwrap_or(false))
}

#[tracing::instrument(
    name = "db org_notices::set_over_seats_announced",
    level = "debug",
    skip_all
)]
pub async fn set_over_seats_announced(
    conn: &mut PgConnection,
    org: OrgId,
    announced: bool,
) -> Result<()> {
    sqlx::query!(
        r#"
        insert into org_notices (org_id, over_seats_announced) values ($1, $2)
        on conflict (org_id) do update set over_seats_announced = excluded.over_seats_announced
        "#,
        org.as_uuid(),
        announced,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Organizations last announced as over their seats: invitations expiring
/// can bring them back within them with no change to announce it.
#[tracing::instrument(name = "db org_notices::over_seats", level = "debug", skip_all)]
pub async fn over_seats(conn: &mut PgConnection, limit: i64) -> Result<Vec<OrgId>> {
    let ids: Vec<Uuid> = sqlx::query_scalar!(
        r#"
        select n.org_id as "org_id!" from org_notices n
        join organizations o on o.id = n.org_id and o.deleted_at is null
        where n.over_seats_announced
        limit $1
        "#,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(OrgId::from).collect())
}

/// Organizations whose trial stage may have changed by `now`, oldest due
/// first.
#[tracing::instrument(name = "db org_notices::trial_checks_due", level = "debug", skip_all)]
pub async fn trial_checks_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OrgId>> {
    let ids: Vec<Uuid> = sqlx::query_scalar!(
        r#"
        select n.org_id as "org_id!" from org_notices n
        join organizations o on o.id = n.org_id and o.deleted_at is null
        where n.trial_stage_check_at <= $1
        order by n.trial_stage_check_at
        limit $2
        "#,
        now,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(OrgId::from).collect())
}

/// The trial stage last considered, and when the stage is next due to be
/// looked at, of a (locked) organization.
#[tracing::instrument(name = "db org_notices::trial_notice", level = "debug", skip_all)]
pub async fn trial_notice(
    conn: &mut PgConnection,
    org: OrgId,
) -> Result<(Option<TrialStage>, Option<DateTime<Utc>>)> {
    let row = sqlx::query!(
        "select trial_stage_considered, trial_stage_check_at from org_notices where org_id = $1",
        org.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or((None, None), |r| {
        (
            r.trial_stage_considered
                .as_deref()
                .and_then(TrialStage::parse),
            r.trial_stage_check_at,
        )
    }))
}

#[tracing::instrument(name = "db org_notices::set_trial_notice", level = "debug", skip_all)]
pub async fn set_trial_notice(
    conn: &mut PgConnection,
    org: OrgId,
    notice: &TrialNotice,
) -> Result<()> {
    sqlx::query!(
        r#"
        insert into org_notices (org_id, trial_stage_considered, trial_stage_check_at)
        values ($1, $2, $3)
        on conflict (org_id) do update
            set trial_stage_considered = excluded.trial_stage_considered,
                trial_stage_check_at = excluded.trial_stage_check_at
        "#,
        org.as_uuid(),
        notice.considered.map(TrialStage::as_str),
        notice.check_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}
