//! The entitlement clock and each organization's version (see migration
//! `..._entitlement_versions.sql`): which changes a replica has seen.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::entitlement::StateVersion;
use crate::domain::ids::OrgId;
use crate::error::Result;

/// The channel the triggers announce changes on, as `<org id>:<version>`;
/// a version that changed no organization (events alone) as `:<version>`.
pub const CHANNEL: &str = "billing_entitlements";

/// What one announcement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// The organization changed at this version.
    Org(OrgId, StateVersion),
    /// This version changed no organization.
    VersionOnly(StateVersion),
}

/// Announces a version that changed no organization, in the caller's
/// transaction (delivered at its commit, after whatever it announced
/// before).
#[tracing::instrument(
    name = "db entitlement_versions::announce_version_only",
    level = "debug",
    skip_all
)]
pub async fn announce_version_only(conn: &mut PgConnection, version: i64) -> Result<()> {
    sqlx::query!(
        "select pg_notify($1, ':' || $2::bigint::text)",
        CHANNEL,
        version
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The newest version committed.
#[tracing::instrument(name = "db entitlement_versions::clock", level = "debug", skip_all)]
pub async fn clock(conn: &mut PgConnection) -> Result<StateVersion> {
    let version = sqlx::query_scalar!("select version from entitlement_clock")
        .fetch_one(conn)
        .await?;
    Ok(StateVersion::from_stored(version).unwrap_or_default())
}

/// Each organization's version, for all or those of `only`.
#[tracing::instrument(name = "db entitlement_versions::of_orgs", level = "debug", skip_all)]
pub async fn of_orgs(
    conn: &mut PgConnection,
    only: Option<&[Uuid]>,
) -> Result<Vec<(OrgId, StateVersion)>> {
    let rows = sqlx::query!(
        "select org_id, version from entitlement_versions where $1::uuid[] is null or org_id = any($1)",
        only,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.org_id.into(),
                StateVersion::from_stored(r.version).unwrap_or_default(),
            )
        })
        .collect())
}

/// Organizations changed after `version`.
#[tracing::instrument(
    name = "db entitlement_versions::changed_since",
    level = "debug",
    skip_all
)]
pub async fn changed_since(conn: &mut PgConnection, version: StateVersion) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar!(
        "select org_id from entitlement_versions where version > $1",
        i64::try_from(version.0).unwrap_or(i64::MAX),
    )
    .fetch_all(conn)
    .await?)
}

/// A connection listening on [`CHANNEL`].
#[tracing::instrument(name = "db entitlement_versions::listen", level = "debug", skip_all)]
pub async fn listen(store: &super::Store) -> Result<sqlx::postgres::PgListener> {
    let mut listener = sqlx::postgres::PgListener::connect_with(store.pool()).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Reads an announcement's payload: `<org id>:<version>` or `:<version>`.
pub fn parse_announcement(payload: &str) -> Option<Announcement> {
    let (org, version) = payload.split_once(':')?;
    let version = StateVersion(version.parse::<u64>().ok()?);
    match org {
        "" => Some(Announcement::VersionOnly(version)),
        org => Some(Announcement::Org(OrgId::parse(org).ok()?, version)),
    }
}
