//! Local state of Stripe subscriptions, keyed by Stripe's subscription id.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::corrupt;
use crate::domain::catalog::{BillingCycle, PlanId};
use crate::domain::ids::OrgId;
use crate::domain::money::{Currency, Money};
use crate::domain::subscription::Subscription;
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
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = crate::error::Error;

    fn try_from(row: SubscriptionRow) -> Result<Self> {
        let next_payment = match (row.next_payment_minor, row.currency) {
            (Some(amount), Some(currency)) => Some(Money::new(
                amount,
                Currency::parse(&currency).map_err(|e| corrupt("currency", e))?,
            )),
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
        })
    }
}

pub async fn list_for_org(conn: &mut PgConnection, org: OrgId) -> Result<Vec<Subscription>> {
    let rows = sqlx::query_as!(
        SubscriptionRow,
        r#"
        select stripe_subscription_id, status, plan, billing_cycle, paid_seats,
               current_period_start, current_period_end, cancel_at_period_end, ended_at,
               next_payment_minor, currency, created_at
        from subscriptions where org_id = $1
        order by created_at, stripe_subscription_id
        "#,
        org.as_uuid(),
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Creates or replaces the local copy of a subscription.
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
             next_payment_minor, currency, created_at)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        on conflict (stripe_subscription_id) do update
        set status = excluded.status, plan = excluded.plan,
            billing_cycle = excluded.billing_cycle, paid_seats = excluded.paid_seats,
            current_period_start = excluded.current_period_start,
            current_period_end = excluded.current_period_end,
            cancel_at_period_end = excluded.cancel_at_period_end,
            ended_at = excluded.ended_at,
            next_payment_minor = excluded.next_payment_minor,
            currency = excluded.currency, updated_at = now()
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
    )
    .execute(conn)
    .await?;
    Ok(())
}
