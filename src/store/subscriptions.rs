//! Local state of Stripe subscriptions, keyed by Stripe's subscription id.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::corrupt;
use crate::domain::ids::OrgId;
use crate::domain::money::{Currency, Money};
use crate::domain::pricing::{BillingCycle, PlanId};
use crate::domain::subscription::{PendingCycleChange, PendingSeatDecrease, Subscription};
use crate::error::Result;

struct SubscriptionRow {
    stripe_subscription_id: String,
    status: String,
    plan: String,
    billing_cycle: Option<String>,
    paid_seats: i64,
    current_period_start: Option<DateTime<Utc>>,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
    ended_at: Option<DateTime<Utc>>,
    next_payment_minor: Option<i64>,
    currency: Option<String>,
    created_at: DateTime<Utc>,
    pending_seats: Option<i64>,
    pending_seats_from: Option<DateTime<Utc>>,
    pending_cycle: Option<String>,
    pending_cycle_from: Option<DateTime<Utc>>,
    pending_cycle_payment_minor: Option<i64>,
    schedule_id: Option<String>,
    purchaser_user_id: Option<String>,
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = crate::error::Error;

    fn try_from(row: SubscriptionRow) -> Result<Self> {
        let currency = row
            .currency
            .as_deref()
            .map(Currency::parse)
            .transpose()
            .map_err(|e| corrupt("currency", e))?;
        let next_payment = match (row.next_payment_minor, &currency) {
            (Some(amount), Some(currency)) => Some(Money::new(amount, currency.clone())),
            _ => None,
        };
        let pending_seat_decrease = match (row.pending_seats, row.pending_seats_from) {
            (Some(seats), Some(effective_at)) => Some(PendingSeatDecrease {
                seats,
                effective_at,
            }),
            _ => None,
        };
        let pending_cycle_change = match (
            row.pending_cycle.as_deref(),
            row.pending_cycle_from,
            row.pending_cycle_payment_minor,
            currency,
        ) {
            (Some(cycle), Some(effective_at), Some(amount), Some(currency)) => {
                Some(PendingCycleChange {
                    cycle: BillingCycle::parse(cycle)
                        .map_err(|e| corrupt("pending billing cycle", e))?,
                    effective_at,
                    next_payment: Money::new(amount, currency),
                })
            }
            _ => None,
        };
        Ok(Self {
            stripe_subscription_id: row.stripe_subscription_id,
            status_raw: row.status,
            plan: PlanId::new(row.plan),
            billing_cycle: row
                .billing_cycle
                .as_deref()
                .map(BillingCycle::parse)
                .transpose()
                .map_err(|e| corrupt("billing cycle", e))?,
            paid_seats: row.paid_seats,
            current_period_start: row.current_period_start,
            current_period_end: row.current_period_end,
            cancel_at_period_end: row.cancel_at_period_end,
            ended_at: row.ended_at,
            next_payment,
            created_at: row.created_at,
            pending_seat_decrease,
            pending_cycle_change,
            schedule_id: row.schedule_id,
            purchaser: row.purchaser_user_id,
        })
    }
}

#[tracing::instrument(name = "db subscriptions::list_for_org", level = "debug", skip_all)]
pub async fn list_for_org(conn: &mut PgConnection, org: OrgId) -> Result<Vec<Subscription>> {
    let rows = sqlx::query_as!(
        SubscriptionRow,
        r#"
        select stripe_subscription_id, status, plan, billing_cycle, paid_seats,
               current_period_start, current_period_end, cancel_at_period_end, ended_at,
               next_payment_minor, currency, created_at, pending_seats, pending_seats_from,
               pending_cycle, pending_cycle_from, pending_cycle_payment_minor, schedule_id,
               purchaser_user_id
        from subscriptions where org_id = $1
        order by created_at, stripe_subscription_id
        "#,
        org.as_uuid(),
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Every subscription with its organization, or those of `only`'s
/// organizations, for the entitlement cache.
#[tracing::instrument(name = "db subscriptions::list_for_orgs", level = "debug", skip_all)]
pub async fn list_for_orgs(
    conn: &mut PgConnection,
    only: Option<&[Uuid]>,
) -> Result<Vec<(OrgId, Subscription)>> {
    let rows = sqlx::query!(
        r#"
        select org_id, stripe_subscription_id, status, plan, billing_cycle, paid_seats,
               current_period_start, current_period_end, cancel_at_period_end, ended_at,
               next_payment_minor, currency, created_at, pending_seats, pending_seats_from,
               pending_cycle, pending_cycle_from, pending_cycle_payment_minor, schedule_id,
               purchaser_user_id
        from subscriptions
        where $1::uuid[] is null or org_id = any($1)
        order by created_at, stripe_subscription_id
        "#,
        only,
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let row = SubscriptionRow {
                stripe_subscription_id: r.stripe_subscription_id,
                status: r.status,
                plan: r.plan,
                billing_cycle: r.billing_cycle,
                paid_seats: r.paid_seats,
                current_period_start: r.current_period_start,
                current_period_end: r.current_period_end,
                cancel_at_period_end: r.cancel_at_period_end,
                ended_at: r.ended_at,
                next_payment_minor: r.next_payment_minor,
                currency: r.currency,
                created_at: r.created_at,
                pending_seats: r.pending_seats,
                pending_seats_from: r.pending_seats_from,
                pending_cycle: r.pending_cycle,
                pending_cycle_from: r.pending_cycle_from,
                pending_cycle_payment_minor: r.pending_cycle_payment_minor,
                schedule_id: r.schedule_id,
                purchaser_user_id: r.purchaser_user_id,
            };
            Ok((OrgId::from(r.org_id), row.try_into()?))
        })
        .collect()
}

/// The organization a subscription we already know belongs to.
#[tracing::instrument(name = "db subscriptions::org_of", level = "debug", skip_all)]
pub async fn org_of(
    conn: &mut PgConnection,
    stripe_subscription_id: &str,
) -> Result<Option<OrgId>> {
    let org = sqlx::query_scalar!(
        "select org_id from subscriptions where stripe_subscription_id = $1",
        stripe_subscription_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(org.map(Into::into))
}

/// Creates or replaces the local copy of a subscription.
#[tracing::instrument(name = "db subscriptions::upsert", level = "debug", skip_all)]
pub async fn upsert(conn: &mut PgConnection, org: OrgId, sub: &Subscription) -> Result<()> {
    let (next_payment_minor, currency) = match &sub.next_payment {
        Some(money) => (Some(money.amount_minor), Some(money.currency.as_str())),
        None => (None, None),
    };
    sqlx::query!(
        r#"
        insert into subscriptions
            (id, org_id, stripe_subscription_id, status, plan, billing_cycle, paid_seats,
             current_period_start, current_period_end, cancel_at_period_end, ended_at,
             next_payment_minor, currency, created_at, pending_seats, pending_seats_from,
             pending_cycle, pending_cycle_from, pending_cycle_payment_minor, schedule_id,
             purchaser_user_id)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                $15, $16, $17, $18, $19, $20, $21)
        on conflict (stripe_subscription_id) do update
        set status = excluded.status, plan = excluded.plan,
            billing_cycle = excluded.billing_cycle, paid_seats = excluded.paid_seats,
            current_period_start = excluded.current_period_start,
            current_period_end = excluded.current_period_end,
            cancel_at_period_end = excluded.cancel_at_period_end,
            ended_at = excluded.ended_at,
            next_payment_minor = excluded.next_payment_minor,
            currency = excluded.currency,
            pending_seats = excluded.pending_seats,
            pending_seats_from = excluded.pending_seats_from,
            pending_cycle = excluded.pending_cycle,
            pending_cycle_from = excluded.pending_cycle_from,
            pending_cycle_payment_minor = excluded.pending_cycle_payment_minor,
            schedule_id = excluded.schedule_id,
            purchaser_user_id = coalesce(excluded.purchaser_user_id, subscriptions.purchaser_user_id),
            updated_at = now()
        "#,
        Uuid::now_v7(),
        org.as_uuid(),
        sub.stripe_subscription_id,
        sub.status_raw,
        sub.plan.as_str(),
        sub.billing_cycle.map(BillingCycle::as_str),
        sub.paid_seats,
        sub.current_period_start,
        sub.current_period_end,
        sub.cancel_at_period_end,
        sub.ended_at,
        next_payment_minor,
        currency,
        sub.created_at,
        sub.pending_seat_decrease.as_ref().map(|p| p.seats),
        sub.pending_seat_decrease.as_ref().map(|p| p.effective_at),
        sub.pending_cycle_change.as_ref().map(|p| p.cycle.as_str()),
        sub.pending_cycle_change.as_ref().map(|p| p.effective_at),
        sub.pending_cycle_change
            .as_ref()
            .map(|p| p.next_payment.amount_minor),
        sub.schedule_id,
        sub.purchaser,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the next sync ticket of a subscription, before reading it from
/// Stripe (in its own statement: no transaction waits on the read).
#[tracing::instrument(name = "db subscriptions::take_sync_ticket", level = "debug", skip_all)]
pub async fn take_sync_ticket(
    conn: &mut PgConnection,
    stripe_subscription_id: &str,
) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"
        insert into subscription_sync_tickets (stripe_subscription_id, issued) values ($1, 1)
        on conflict (stripe_subscription_id)
            do update set issued = subscription_sync_tickets.issued + 1
        returning issued
        "#,
        stripe_subscription_id,
    )
    .fetch_one(conn)
    .await?)
}

/// Whether `ticket` is still the newest of the subscription; locks the
/// ticket row until the transaction ends, so no newer reading is stored in
/// between.
#[tracing::instrument(
    name = "db subscriptions::holds_newest_ticket",
    level = "debug",
    skip_all
)]
pub async fn holds_newest_ticket(
    conn: &mut PgConnection,
    stripe_subscription_id: &str,
    ticket: i64,
) -> Result<bool> {
    let issued = sqlx::query_scalar!(
        "select issued from subscription_sync_tickets where stripe_subscription_id = $1 for update",
        stripe_subscription_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(issued.is_none_or(|issued| issued <= ticket))
}
