//! Memberships, invitations and removal records.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{corrupt, on_unique_violation};
use crate::domain::ids::{EmailAddress, InvitationId, OrgId, UserId};
use crate::domain::membership::{Invitation, Membership, RemovalRecord};
use crate::domain::reason::ErrorReason;
use crate::domain::role::Role;
use crate::domain::seats::SeatHolders;
use crate::error::Result;

fn parse_role(raw: &str) -> Result<Role> {
    Role::parse(raw).map_err(|e| corrupt("role", e))
}

struct MembershipRow {
    org_id: Uuid,
    user_id: String,
    role: String,
    joined_at: DateTime<Utc>,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = crate::error::Error;

    fn try_from(row: MembershipRow) -> Result<Self> {
        Ok(Self {
            org_id: row.org_id.into(),
            user_id: UserId::parse(&row.user_id).map_err(|e| corrupt("user id", e))?,
            role: parse_role(&row.role)?,
            joined_at: row.joined_at,
        })
    }
}

#[tracing::instrument(name = "db members::role_of", level = "debug", skip_all)]
pub async fn role_of(conn: &mut PgConnection, org: OrgId, user: &UserId) -> Result<Option<Role>> {
    let role = sqlx::query_scalar!(
        "select role from memberships where org_id = $1 and user_id = $2",
        org.as_uuid(),
        user.as_str(),
    )
    .fetch_optional(conn)
    .await?;
    role.as_deref().map(parse_role).transpose()
}

#[tracing::instrument(name = "db members::get_member", level = "debug", skip_all)]
pub async fn get_member(
    conn: &mut PgConnection,
    org: OrgId,
    user: &UserId,
) -> Result<Option<Membership>> {
    let row = sqlx::query_as!(
        MembershipRow,
        "select org_id, user_id, role, joined_at from memberships where org_id = $1 and user_id = $2",
        org.as_uuid(),
        user.as_str(),
    )
    .fetch_optional(conn)
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(name = "db members::list_members", level = "debug", skip_all)]
pub async fn list_members(conn: &mut PgConnection, org: OrgId) -> Result<Vec<Membership>> {
    let rows = sqlx::query_as!(
        MembershipRow,
        r#"
        select org_id, user_id, role, joined_at from memberships
        where org_id = $1
        order by joined_at, user_id
        "#,
        org.as_uuid(),
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

#[tracing::instrument(name = "db members::insert_member", level = "debug", skip_all)]
pub async fn insert_member(conn: &mut PgConnection, member: &Membership) -> Result<()> {
    sqlx::query!(
        "insert into memberships (org_id, user_id, role, joined_at) values ($1, $2, $3, $4)",
        member.org_id.as_uuid(),
        member.user_id.as_str(),
        member.role.as_str(),
        member.joined_at,
    )
    .execute(conn)
    .await
    .map_err(on_unique_violation(
        "memberships_pkey",
        ErrorReason::AlreadyAMember,
        || format!("{} is already a member", member.user_id),
    ))?;
    Ok(())
}

#[tracing::instrument(name = "db members::update_role", level = "debug", skip_all)]
pub async fn update_role(
    conn: &mut PgConnection,
    org: OrgId,
    user: &UserId,
    role: Role,
) -> Result<()> {
    sqlx::query!(
        "update memberships set role = $3 where org_id = $1 and user_id = $2",
        org.as_uuid(),
        user.as_str(),
        role.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(name = "db members::delete_member", level = "debug", skip_all)]
pub async fn delete_member(conn: &mut PgConnection, org: OrgId, user: &UserId) -> Result<()> {
    sqlx::query!(
        "delete from memberships where org_id = $1 and user_id = $2",
        org.as_uuid(),
        user.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(name = "db members::delete_all_members", level = "debug", skip_all)]
pub async fn delete_all_members(conn: &mut PgConnection, org: OrgId) -> Result<()> {
    sqlx::query!("delete from memberships where org_id = $1", org.as_uuid())
        .execute(conn)
        .await?;
    Ok(())
}

#[tracing::instrument(name = "db members::count_owners", level = "debug", skip_all)]
pub async fn count_owners(conn: &mut PgConnection, org: OrgId) -> Result<i64> {
    let count = sqlx::query_scalar!(
        r#"select count(*) as "count!" from memberships where org_id = $1 and role = 'owner'"#,
        org.as_uuid(),
    )
    .fetch_one(conn)
    .await?;
    Ok(count)
}

/// The inputs of the seat rule: every member's role, and the role and
/// expiry of every pending invitation. Who of them takes a seat is the
/// domain's to say ([`SeatHolders::from_roles`]).
#[tracing::instrument(name = "db members::seat_holders", level = "debug", skip_all)]
pub async fn seat_holders(
    conn: &mut PgConnection,
    org: OrgId,
    now: DateTime<Utc>,
) -> Result<SeatHolders> {
    let members = sqlx::query_scalar!(
        "select role from memberships where org_id = $1",
        org.as_uuid(),
    )
    .fetch_all(&mut *conn)
    .await?;
    let invitations = sqlx::query!(
        r#"
        select role, expires_at from invitations
        where org_id = $1 and accepted_at is null and revoked_at is null and expires_at > $2
        "#,
        org.as_uuid(),
        now,
    )
    .fetch_all(conn)
    .await?;
    let members = members
        .iter()
        .map(|role| parse_role(role))
        .collect::<Result<Vec<_>>>()?;
    let invitations = invitations
        .into_iter()
        .map(|r| Ok((parse_role(&r.role)?, r.expires_at)))
        .collect::<Result<Vec<_>>>()?;
    Ok(SeatHolders::from_roles(members, invitations))
}

/// Every membership as (organization, user, role), in every organization or
/// those of `only`, for the entitlement cache.
#[tracing::instrument(name = "db members::roles_in_orgs", level = "debug", skip_all)]
pub async fn roles_in_orgs(
    conn: &mut PgConnection,
    only: Option<&[Uuid]>,
) -> Result<Vec<(OrgId, UserId, Role)>> {
    let rows = sqlx::query!(
        r#"
        select org_id, user_id, role from memberships
        where $1::uuid[] is null or org_id = any($1)
        "#,
        only,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let user = UserId::parse(&r.user_id).map_err(|e| corrupt("member user id", e))?;
            Ok((r.org_id.into(), user, parse_role(&r.role)?))
        })
        .collect()
}

/// Every pending invitation's role and expiry, by organization.
#[tracing::instrument(
    name = "db members::pending_invitations_in_orgs",
    level = "debug",
    skip_all
)]
pub async fn pending_invitations_in_orgs(
    conn: &mut PgConnection,
    only: Option<&[Uuid]>,
    now: DateTime<Utc>,
) -> Result<Vec<(OrgId, Role, DateTime<Utc>)>> {
    let rows = sqlx::query!(
        r#"
        select org_id, role, expires_at from invitations
        where accepted_at is null and revoked_at is null
          and expires_at > $2 and ($1::uuid[] is null or org_id = any($1))
        "#,
        only,
        now,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| Ok((r.org_id.into(), parse_role(&r.role)?, r.expires_at)))
        .collect()
}

struct InvitationRow {
    id: Uuid,
    org_id: Uuid,
    email: String,
    role: String,
    invited_by: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    accepted_by: Option<String>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<InvitationRow> for Invitation {
    type Error = crate::error::Error;

    fn try_from(row: InvitationRow) -> Result<Self> {
        Ok(Self {
            id: row.id.into(),
            org_id: row.org_id.into(),
            email: EmailAddress::parse(&row.email).map_err(|e| corrupt("email", e))?,
            role: parse_role(&row.role)?,
            invited_by: row.invited_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            accepted_at: row.accepted_at,
            accepted_by: row
                .accepted_by
                .as_deref()
                .map(UserId::parse)
                .transpose()
                .map_err(|e| corrupt("user id", e))?,
            revoked_at: row.revoked_at,
        })
    }
}

#[tracing::instrument(name = "db members::insert_invitation", level = "debug", skip_all)]
pub async fn insert_invitation(conn: &mut PgConnection, invitation: &Invitation) -> Result<()> {
    sqlx::query!(
        r#"
        insert into invitations (id, org_id, email, role, invited_by, created_at, expires_at)
        values ($1, $2, $3, $4, $5, $6, $7)
        "#,
        invitation.id.as_uuid(),
        invitation.org_id.as_uuid(),
        invitation.email.as_str(),
        invitation.role.as_str(),
        invitation.invited_by,
        invitation.created_at,
        invitation.expires_at,
    )
    .execute(conn)
    .await
    .map_err(on_unique_violation(
        "invitations_one_open_per_email",
        ErrorReason::InvitationPending,
        || format!("{} already has a pending invitation", invitation.email),
    ))?;
    Ok(())
}

/// Closes (revokes) expired invitations to `email`, so a new one can be sent.
#[tracing::instrument(
    name = "db members::close_expired_invitations",
    level = "debug",
    skip_all
)]
pub async fn close_expired_invitations(
    conn: &mut PgConnection,
    org: OrgId,
    email: &EmailAddress,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        r#"
        update invitations set revoked_at = expires_at
        where org_id = $1 and email = $2
          and accepted_at is null and revoked_at is null and expires_at <= $3
        "#,
        org.as_uuid(),
        email.as_str(),
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Reads an invitation and locks it until the transaction ends.
#[tracing::instrument(name = "db members::lock_invitation", level = "debug", skip_all)]
pub async fn lock_invitation(
    conn: &mut PgConnection,
    id: InvitationId,
) -> Result<Option<Invitation>> {
    let row = sqlx::query_as!(
        InvitationRow,
        r#"
        select id, org_id, email, role, invited_by, created_at, expires_at,
               accepted_at, accepted_by, revoked_at
        from invitations where id = $1
        for update
        "#,
        id.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(name = "db members::list_invitations", level = "debug", skip_all)]
pub async fn list_invitations(
    conn: &mut PgConnection,
    org: OrgId,
    include_closed: bool,
    now: DateTime<Utc>,
) -> Result<Vec<Invitation>> {
    let rows = sqlx::query_as!(
        InvitationRow,
        r#"
        select id, org_id, email, role, invited_by, created_at, expires_at,
               accepted_at, accepted_by, revoked_at
        from invitations
        where org_id = $1
          and ($2 or (accepted_at is null and revoked_at is null and expires_at > $3))
        order by created_at, id
        "#,
        org.as_uuid(),
        include_closed,
        now,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

#[tracing::instrument(name = "db members::mark_accepted", level = "debug", skip_all)]
pub async fn mark_accepted(
    conn: &mut PgConnection,
    id: InvitationId,
    user: &UserId,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "update invitations set accepted_at = $2, accepted_by = $3 where id = $1",
        id.as_uuid(),
        now,
        user.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(name = "db members::mark_revoked", level = "debug", skip_all)]
pub async fn mark_revoked(
    conn: &mut PgConnection,
    id: InvitationId,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        "update invitations set revoked_at = $2 where id = $1",
        id.as_uuid(),
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every open invitation of an organization (on deletion).
#[tracing::instrument(name = "db members::revoke_all_invitations", level = "debug", skip_all)]
pub async fn revoke_all_invitations(
    conn: &mut PgConnection,
    org: OrgId,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query!(
        r#"
        update invitations set revoked_at = $2
        where org_id = $1 and accepted_at is null and revoked_at is null
        "#,
        org.as_uuid(),
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

struct RemovalRow {
    org_id: Uuid,
    user_id: String,
    removed_at: DateTime<Utc>,
    removed_by: String,
    previous_role: String,
}

impl TryFrom<RemovalRow> for RemovalRecord {
    type Error = crate::error::Error;

    fn try_from(row: RemovalRow) -> Result<Self> {
        Ok(Self {
            org_id: row.org_id.into(),
            user_id: row.user_id,
            removed_at: row.removed_at,
            removed_by: row.removed_by,
            previous_role: parse_role(&row.previous_role)?,
        })
    }
}

/// Records a removal; removing the same user again replaces the record.
#[tracing::instrument(name = "db members::upsert_removal", level = "debug", skip_all)]
pub async fn upsert_removal(conn: &mut PgConnection, record: &RemovalRecord) -> Result<()> {
    sqlx::query!(
        r#"
        insert into removal_records (org_id, user_id, removed_at, removed_by, previous_role)
        values ($1, $2, $3, $4, $5)
        on conflict (org_id, user_id) do update
        set removed_at = excluded.removed_at, removed_by = excluded.removed_by,
            previous_role = excluded.previous_role
        "#,
        record.org_id.as_uuid(),
        record.user_id,
        record.removed_at,
        record.removed_by,
        record.previous_role.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the user's removal record; true when there was one.
#[tracing::instrument(name = "db members::clear_removal", level = "debug", skip_all)]
pub async fn clear_removal(conn: &mut PgConnection, org: OrgId, user: &UserId) -> Result<bool> {
    let done = sqlx::query!(
        "delete from removal_records where org_id = $1 and user_id = $2",
        org.as_uuid(),
        user.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[tracing::instrument(name = "db members::list_removals", level = "debug", skip_all)]
pub async fn list_removals(conn: &mut PgConnection, org: OrgId) -> Result<Vec<RemovalRecord>> {
    let rows = sqlx::query_as!(
        RemovalRow,
        r#"
        select org_id, user_id, removed_at, removed_by, previous_role
        from removal_records where org_id = $1
        order by removed_at, user_id
        "#,
        org.as_uuid(),
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Whether the user was removed from the organization (and not re-admitted).
#[tracing::instrument(name = "db members::has_removal", level = "debug", skip_all)]
pub async fn has_removal(conn: &mut PgConnection, org: OrgId, user: &UserId) -> Result<bool> {
    let found = sqlx::query_scalar!(
        r#"select exists (select 1 from removal_records where org_id = $1 and user_id = $2) as "found!""#,
        org.as_uuid(),
        user.as_str(),
    )
    .fetch_one(conn)
    .await?;
    Ok(found)
}
