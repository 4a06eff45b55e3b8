//! GDPR erasure of one user across every table that names them.
//!
//! Memberships and invitations are deleted. Records that must survive for
//! other reasons (removal records, the audit trail, the creator of an
//! organization) keep their shape but lose the identity: removal records get a
//! random pseudonym (a hash of the id could be reversed by hashing candidate
//! ids), audit entries the constant [`ERASED`].

use std::collections::HashSet;

use sqlx::PgConnection;

use crate::domain::ids::{EmailAddress, OrgId, UserId};
use crate::domain::instances::InstanceSubscription;
use crate::domain::role::Role;
use crate::error::Result;

pub use crate::domain::ids::ERASED;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureReport {
    pub memberships_removed: u64,
    pub invitations_removed: u64,
    pub removal_records_anonymized: u64,
    pub audit_events_anonymized: u64,
    pub billing_events_anonymized: u64,
    /// Organizations the user was a member of, with the role they had.
    pub former_orgs: Vec<(OrgId, Role)>,
    /// The user's add-on instances that were running and ended now (under
    /// the pseudonym that replaced the user).
    pub ended_instances: Vec<InstanceSubscription>,
}

/// How an end user appears as an actor in records ("user:<id>").
pub fn user_actor(user: &UserId) -> String {
    format!("user:{user}")
}

#[tracing::instrument(name = "db erasure::erase_user", level = "debug", skip_all)]
pub async fn erase_user(
    conn: &mut PgConnection,
    user: &UserId,
    emails: &[EmailAddress],
) -> Result<ErasureReport> {
    let actor = user_actor(user);
    let emails: Vec<String> = emails.iter().map(|e| e.as_str().to_owned()).collect();

    let former_orgs = sqlx::query!(
        "delete from memberships where user_id = $1 returning org_id, role",
        user.as_str()
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| {
        let role = Role::parse(&row.role).map_err(|e| super::corrupt("member role", e))?;
        Ok((OrgId::from(row.org_id), role))
    })
    .collect::<Result<Vec<_>>>()?;

    let invitations_removed = sqlx::query!(
        "delete from invitations where accepted_by = $1 or email = any($2)",
        user.as_str(),
        &emails,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();

    sqlx::query!(
        "update invitations set invited_by = $2 where invited_by = $1",
        actor,
        ERASED,
    )
    .execute(&mut *conn)
    .await?;

    let removal_records_anonymized = sqlx::query!(
        r#"
        update removal_records
        set user_id = case when user_id = $1 then 'erased-' || gen_random_uuid()::text
                           else user_id end,
            removed_by = case when removed_by = $2 then $3 else removed_by end
        where user_id = $1 or removed_by = $2
        "#,
        user.as_str(),
        actor,
        ERASED,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();

    // The idempotency key goes too: together with the creator it identified
    // the person's request.
    sqlx::query!(
        r#"
        update organizations
        set creator_user_id = 'erased-' || gen_random_uuid()::text,
            creation_idempotency_key = null
        where creator_user_id = $1
        "#,
        user.as_str(),
    )
    .execute(&mut *conn)
    .await?;

    // The ledger keeps its amounts (the organization's money) but forgets
    // whose usage it was.
    sqlx::query!(
        "update credit_entries set user_id = 'erased-' || gen_random_uuid()::text where user_id = $1",
        user.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update credit_holds set user_id = 'erased-' || gen_random_uuid()::text where user_id = $1",
        user.as_str(),
    )
    .execute(&mut *conn)
    .await?;

    // The person's add-on instances end with their membership; each row
    // gets its own pseudonym, as the one-trial-per-user index needs.
    let ended_instances = super::instances::end_for_erasure(&mut *conn, user).await?;

    // Whoever paid is forgotten; the subscription (the organization's) stays.
    sqlx::query!(
        "update subscriptions set purchaser_user_id = null where purchaser_user_id = $1",
        user.as_str(),
    )
    .execute(&mut *conn)
    .await?;

    // Billing operations and checkout sessions name the person as the actor
    // and as the buyer in the stored request.
    let buyer = json_string(user.as_str());
    sqlx::query!(
        r#"
        update billing_operations
        set actor = case when actor = $2 then $4 else actor end,
            request = replace(request::text, $1, $3)::jsonb
        where actor = $2 or strpos(request::text, $1) > 0
        "#,
        buyer,
        actor,
        json_string(ERASED),
        format!("user:{ERASED}"),
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update checkout_sessions set request = replace(request, $1, $2) where strpos(request, $1) > 0",
        buyer,
        json_string(ERASED),
    )
    .execute(&mut *conn)
    .await?;

    // Audit snapshots are JSON; the identity appears there only as whole
    // string values, which user ids and emails cannot break out of (their
    // allowed characters need no JSON escaping), so replacing the quoted
    // value is exact.
    let mut needles = vec![json_string(user.as_str()), json_string(&actor)];
    needles.extend(emails.iter().map(|e| json_string(e)));
    let replacement = json_string(ERASED);
    let erased_actor = format!("user:{ERASED}");
    let mut anonymized = HashSet::new();
    for needle in &needles {
        let ids = sqlx::query_scalar!(
            r#"
            update audit_events
            set actor = case when actor = $2 then $4 else actor end,
                before = replace(before::text, $1, $3)::jsonb,
                after = replace(after::text, $1, $3)::jsonb
            where actor = $2
               or strpos(before::text, $1) > 0
               or strpos(after::text, $1) > 0
            returning id
            "#,
            needle,
            actor,
            replacement,
            erased_actor,
        )
        .fetch_all(&mut *conn)
        .await?;
        anonymized.extend(ids);
    }

    // Lifecycle events name people the same way (user ids, emails, and
    // actors as "user:<id>").
    let mut names = vec![user.as_str().to_owned(), actor.clone()];
    names.extend(emails.iter().cloned());
    let mut replacements = vec![
        (json_string(user.as_str()), replacement.clone()),
        (json_string(&actor), json_string(&erased_actor)),
    ];
    replacements.extend(emails.iter().map(|e| (json_string(e), replacement.clone())));
    let billing_events_anonymized =
        super::billing_events::erase_names(&mut *conn, &names, &replacements).await?;

    Ok(ErasureReport {
        memberships_removed: former_orgs.len() as u64,
        invitations_removed,
        removal_records_anonymized,
        audit_events_anonymized: anonymized.len() as u64,
        billing_events_anonymized,
        former_orgs,
        ended_instances,
    })
}

fn json_string(value: &str) -> String {
    format!("\"{value}\"")
}
