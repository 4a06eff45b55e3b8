//! Stripe's objects in our terms: subscriptions with their items, periods,
//! metadata and schedule, read into the domain's `ProviderSubscription`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use stripe_billing::{
    Subscription, SubscriptionItem, SubscriptionSchedule, SubscriptionScheduleStatus,
};
use stripe_product::{Price, RecurringInterval};

use crate::domain::ids::OrgId;
use crate::domain::line_items::LineItem;
use crate::domain::metadata::{
    CYCLE_CHANGE_KEY, KeptSeats, ORG_ID_KEY, PAID_SEATS_KEY, PURCHASER_KEY,
};
use crate::domain::money::Currency;
use crate::domain::pricing::BillingCycle;
use crate::domain::subscription_sync::{ProviderSchedule, ProviderSubscription, SchedulePhase};
use crate::error::{Error, Result};

/// The organization a Stripe object's metadata names, if it names a valid
/// one.
pub(super) fn org_named(metadata: &HashMap<String, String>) -> Option<OrgId> {
    metadata
        .get(ORG_ID_KEY)
        .and_then(|raw| OrgId::parse(raw).ok())
}

pub(super) fn timestamp(seconds: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| Error::internal(anyhow::anyhow!("Stripe timestamp {seconds} out of range")))
}

fn cycle_of(price: &Price) -> Option<BillingCycle> {
    let recurring = price.recurring.as_ref()?;
    match (&recurring.interval, recurring.interval_count) {
        (RecurringInterval::Month, 1) => Some(BillingCycle::Monthly),
        (RecurringInterval::Year, 1) => Some(BillingCycle::Yearly),
        _ => None,
    }
}

fn line_item(price: &Price, quantity: Option<u64>, item_id: Option<String>) -> LineItem {
    LineItem {
        item_id,
        price_id: price.id.as_str().to_owned(),
        unit_amount_minor: price.unit_amount.unwrap_or(0),
        quantity: quantity.map_or(0, |q| i64::try_from(q).unwrap_or(i64::MAX)),
        interval: cycle_of(price),
    }
}

fn subscription_item(item: &SubscriptionItem) -> LineItem {
    line_item(
        &item.price,
        item.quantity,
        Some(item.id.as_str().to_owned()),
    )
}

pub(super) fn provider_schedule(schedule: &SubscriptionSchedule) -> Result<ProviderSchedule> {
    let active = match schedule.status {
        SubscriptionScheduleStatus::Active | SubscriptionScheduleStatus::NotStarted => true,
        SubscriptionScheduleStatus::Canceled
        | SubscriptionScheduleStatus::Completed
        | SubscriptionScheduleStatus::Released
        | SubscriptionScheduleStatus::Unknown(_) => false,
        // The enum is non-exhaustive: a status added later does not drive
        // the subscription until someone decides it does.
        _ => false,
    };
    let phases = schedule
        .phases
        .iter()
        .map(|phase| {
            Ok(SchedulePhase {
                start: timestamp(phase.start_date)?,
                end: Some(timestamp(phase.end_date)?),
                items: phase
                    .items
                    .iter()
                    .filter_map(|item| {
                        item.price
                            .as_object()
                            .map(|price| line_item(price, item.quantity, None))
                    })
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ProviderSchedule {
        id: schedule.id.as_str().to_owned(),
        ours: schedule
            .metadata
            .as_ref()
            .is_some_and(|m| m.contains_key(CYCLE_CHANGE_KEY)),
        active,
        phases,
    })
}

pub(super) fn provider_subscription(
    subscription: Subscription,
    schedule: Option<ProviderSchedule>,
) -> Result<ProviderSubscription> {
    let items: Vec<LineItem> = subscription
        .items
        .data
        .iter()
        .map(subscription_item)
        .collect();
    // Items of one subscription share its billing period.
    let period_start = subscription
        .items
        .data
        .iter()
        .map(|item| item.current_period_start)
        .max();
    let period_end = subscription
        .items
        .data
        .iter()
        .map(|item| item.current_period_end)
        .max();
    Ok(ProviderSubscription {
        id: subscription.id.as_str().to_owned(),
        customer_id: subscription.customer.id().as_str().to_owned(),
        status_raw: subscription.status.as_str().to_owned(),
        currency: Currency::parse(&subscription.currency.to_string()).map_err(Error::internal)?,
        items,
        current_period_start: period_start.map(timestamp).transpose()?,
        current_period_end: period_end.map(timestamp).transpose()?,
        cancel_at_period_end: subscription.cancel_at_period_end,
        ended_at: subscription.ended_at.map(timestamp).transpose()?,
        created_at: timestamp(subscription.created)?,
        org_id: subscription.metadata.get(ORG_ID_KEY).cloned(),
        purchaser: subscription.metadata.get(PURCHASER_KEY).cloned(),
        kept_seats: subscription
            .metadata
            .get(PAID_SEATS_KEY)
            .and_then(|raw| KeptSeats::decode(raw)),
        discount_ids: subscription
            .discounts
            .iter()
            .map(|discount| discount.id().as_str().to_owned())
            .collect(),
        schedule,
    })
}
