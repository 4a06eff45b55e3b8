//! The `organizations` table. Deleted organizations stay (for their audit
//! trail) but are invisible to every query here.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::ids::{OrgId, UserId};
use crate::domain::organization::{ModelRestrictions, Organization};
use crate::domain::pricing::PlanId;
use crate::error::Result;

struct OrganizationRow {
    id: Uuid,
    name: String,
    plan: String,
    trial_end: DateTime<Utc>,
    require_seats: bool,
    sponsorship_tier: Option<String>,
    suppress_trial_messaging: bool,
    instances_opted_out: bool,
    model_deny_list: Vec<String>,
    provider_allow_list: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<OrganizationRow> for Organization {
    fn from(row: OrganizationRow) -> Self {
        Self {
            id: row.id.into(),
            name: row.name,
            plan: PlanId::new(row.plan),
            trial_end: row.trial_end,
            require_seats: row.require_seats,
            sponsorship_tier: row.sponsorship_tier,
            suppress_trial_messaging: row.suppress_trial_messaging,
            instances_opted_out: row.instances_opted_out,
            restrictions: ModelRestrictions {
                model_deny_list: row.model_deny_list,
                provider_allow_list: row.provider_allow_list,
            },
            created_at: row.created_at,
        }
    }
}

/// Inserts `org`, or, when `idempotency_key` was used before by the same
/// creator, returns the organization that call created. The boolean tells
/// whether this call created it.
#[tracing::instrument(name = "db organizations::insert", level = "debug", skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    org: &Organization,
    creator: &UserId,
    idempotency_key: Option<&str>,
) -> Result<(Organization, bool)> {
    let inserted = sqlx::query_scalar!(
        r#"
        insert into organizations
            (id, name, plan, trial_end, require_seats, creator_user_id,
             creation_idempotency_key, created_at)
        values ($1, $2, $3, $4, $5, $6, $7, $8)
        on conflict on constraint organizations_creation_idempotency_key do nothing
        returning id
        "#,
        org.id.as_uuid(),
        org.name,
        org.plan.as_str(),
        org.trial_end,
        org.require_seats,
        creator.as_str(),
        idempotency_key,
        org.created_at,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok((org.clone(), true));
    }
    let existing = sqlx::query_as!(
        OrganizationRow,
        r#"
        select id, name, plan, trial_end, require_seats, sponsorship_tier,
               suppress_trial_messaging, instances_opted_out, model_deny_list, provider_allow_list,
               created_at
        from organizations
        where creator_user_id = $1 and creation_idempotency_key = $2
        "#,
        creator.as_str(),
        idempotency_key,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((existing.into(), false))
}

#[tracing::instrument(name = "db organizations::get", level = "debug", skip_all)]
pub async fn get(conn: &mut PgConnection, id: OrgId) -> Result<Option<Organization>> {
    let row = sqlx::query_as!(
        OrganizationRow,
        r#"
        select id, name, plan, trial_end, require_seats, sponsorship_tier,
               suppress_trial_messaging, instances_opted_out, model_deny_list, provider_allow_list,
               created_at
        from organizations
        where id = $1 and deleted_at is null
        "#,
        id.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// Reads the organization and locks its row until the transaction ends, so
/// that changes to its members and seats are serialized. `for no key
/// update` still lets rows that reference the organization be written
/// (their foreign keys take a key-share lock), so a usage debit holding the
/// credit account never waits here: every credit posting locks the
/// organization, then the account, or the account alone, and none can
/// deadlock with another.
#[tracing::instrument(name = "db organizations::lock", level = "debug", skip_all)]
pub async fn lock(conn: &mut PgConnection, id: OrgId) -> Result<Option<Organization>> {
    let row = sqlx::query_as!(
        OrganizationRow,
        r#"
        select id, name, plan, trial_end, require_seats, sponsorship_tier,
               suppress_trial_messaging, instances_opted_out, model_deny_list, provider_allow_list,
               created_at
        from organizations
        where id = $1 and deleted_at is null
        for no key update
        "#,
        id.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// Every live organization, or those of `only`, for the entitlement cache.
#[tracing::instrument(name = "db organizations::list_live", level = "debug", skip_all)]
pub async fn list_live(
    conn: &mut PgConnection,
    only: Option<&[Uuid]>,
) -> Result<Vec<Organization>> {
    let rows = sqlx::query_as!(
        OrganizationRow,
        r#"
        select id, name, plan, trial_end, require_seats, sponsorship_tier,
               suppress_trial_messaging, instances_opted_out, model_deny_list, provider_allow_list,
               created_at
        from organizations
        where deleted_at is null and ($1::uuid[] is null or id = any($1))
        "#,
        only,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// One page of live organizations in creation order (ids are time-ordered).
#[tracing::instrument(name = "db organizations::list_page", level = "debug", skip_all)]
pub async fn list_page(
    conn: &mut PgConnection,
    after: Option<OrgId>,
    limit: i64,
) -> Result<Vec<Organization>> {
    let rows = sqlx::query_as!(
        OrganizationRow,
        r#"
        select id, name, plan, trial_end, require_seats, sponsorship_tier,
               suppress_trial_messaging, instances_opted_out, model_deny_list, provider_allow_list,
               created_at
        from organizations
        where deleted_at is null and ($1::uuid is null or id > $1)
        order by id
        limit $2
        "#,
        after.map(|id| id.as_uuid()),
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Writes every setting an operator or owner can change.
#[tracing::instrument(name = "db organizations::update_settings", level = "debug", skip_all)]
pub async fn update_settings(conn: &mut PgConnection, org: &Organization) -> Result<()> {
    sqlx::query!(
        r#"
        update organizations
        set plan = $2, trial_end = $3, require_seats = $4, sponsorship_tier = $5,
            suppress_trial_messaging = $6, model_deny_list = $7, provider_allow_list = $8,
            instances_opted_out = $9
        where id = $1 and deleted_at is null
        "#,
        org.id.as_uuid(),
        org.plan.as_str(),
        org.trial_end,
        org.require_seats,
        org.sponsorship_tier,
        org.suppress_trial_messaging,
        &org.restrictions.model_deny_list,
        &org.restrictions.provider_allow_list,
        org.instances_opted_out,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(name = "db organizations::mark_deleted", level = "debug", skip_all)]
pub async fn mark_deleted(conn: &mut PgConnection, id: OrgId, now: DateTime<Utc>) -> Result<()> {
    sqlx::query!(
        "update organizations set deleted_at = $2 where id = $1 and deleted_at is null",
        id.as_uuid(),
        now,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The organization's Stripe customer, once one was created.
#[tracing::instrument(name = "db organizations::stripe_customer", level = "debug", skip_all)]
pub async fn stripe_customer(conn: &mut PgConnection, id: OrgId) -> Result<Option<String>> {
    let customer = sqlx::query_scalar!(
        "select stripe_customer_id from organizations where id = $1",
        id.as_uuid(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(customer.flatten())
}

/// Records the organization's Stripe customer unless one is recorded
/// already, and returns the one that is.
#[tracing::instrument(
    name = "db organizations::remember_stripe_customer",
    level = "debug",
    skip_all
)]
pub async fn remember_stripe_customer(
    conn: &mut PgConnection,
    id: OrgId,
    customer: &str,
) -> Result<String> {
    let recorded = sqlx::query_scalar!(
        r#"
        update organizations set stripe_customer_id = coalesce(stripe_customer_id, $2)
        where id = $1
        returning stripe_customer_id as "stripe_customer_id!"
        "#,
        id.as_uuid(),
        customer,
    )
    .fetch_one(conn)
    .await?;
    Ok(recorded)
}

/// The organization whose Stripe customer this is.
#[tracing::instrument(
    name = "db organizations::by_stripe_customer",
    level = "debug",
    skip_all
)]
pub async fn by_stripe_customer(conn: &mut PgConnection, customer: &str) -> Result<Option<OrgId>> {
    let org = sqlx::query_scalar!(
        "select id from organizations where stripe_customer_id = $1 and deleted_at is null",
        customer,
    )
    .fetch_optional(conn)
    .await?;
    Ok(org.map(Into::into))
}

/// Moves the organization to the plan its paid subscription is on.
#[tracing::instrument(name = "db organizations::set_plan", level = "debug", skip_all)]
pub async fn set_plan(conn: &mut PgConnection, id: OrgId, plan: &PlanId) -> Result<()> {
    sqlx::query!(
        "update organizations set plan = $2 where id = $1 and deleted_at is null",
        id.as_uuid(),
        plan.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}
