//! The Stripe API client: the calls this service makes, in our own terms.
//!
//! Every write carries an idempotency key the caller derives from its own
//! request, so a retried RPC repeats the same Stripe call instead of making a
//! second customer, session or schedule. Reads of subscriptions expand the
//! schedule and the prices of its phases, so one call returns everything
//! [`crate::domain::subscription_sync::reconcile`] needs.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionPaymentBehavior, UpdateSubscriptionProrationBehavior,
};
use stripe_billing::subscription_item::{
    CreateSubscriptionItem, CreateSubscriptionItemProrationBehavior, DeleteSubscriptionItem,
    DeleteSubscriptionItemProrationBehavior, UpdateSubscriptionItem,
    UpdateSubscriptionItemProrationBehavior,
};
use stripe_billing::subscription_schedule::{
    CreateSubscriptionSchedule, ReleaseSubscriptionSchedule, RetrieveSubscriptionSchedule,
    UpdateSubscriptionSchedule, UpdateSubscriptionSchedulePhases,
    UpdateSubscriptionSchedulePhasesBillingCycleAnchor, UpdateSubscriptionSchedulePhasesDiscounts,
    UpdateSubscriptionSchedulePhasesEndDate, UpdateSubscriptionSchedulePhasesItems,
    UpdateSubscriptionSchedulePhasesProrationBehavior, UpdateSubscriptionSchedulePhasesStartDate,
};
use stripe_billing::{
    Subscription, SubscriptionItem, SubscriptionSchedule, SubscriptionScheduleEndBehavior,
    SubscriptionScheduleStatus,
};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionSubscriptionData, ProductData,
};
use stripe_core::customer::CreateCustomer;
use stripe_product::{Price, RecurringInterval};

use crate::domain::add_ons::Proration;
use crate::domain::catalog::BillingCycle;
use crate::domain::ids::OrgId;
use crate::domain::line_items::LineItem;
use crate::domain::money::Currency;
use crate::domain::subscription_sync::{
    CYCLE_CHANGE_KEY, ORG_ID_KEY, PURCHASER_KEY, ProviderSchedule, ProviderSubscription,
    SchedulePhase,
};
use crate::error::{Error, Result};

/// Stripe's API, for the default `STRIPE_API_BASE`.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com/";

/// Where and as whom to call Stripe. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct StripeSettings {
    pub secret_key: String,
    pub api_base: String,
}

impl fmt::Debug for StripeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeSettings")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// The expansions that make a subscription self-contained: its schedule,
/// and the prices of the schedule's phases (items carry their price already).
const SUBSCRIPTION_EXPANSIONS: [&str; 2] = ["schedule", "schedule.phases.items.price"];

#[derive(Clone)]
pub struct StripeApi {
    client: Client,
}

impl fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StripeApi")
    }
}

/// A new Checkout session for a seat subscription.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    pub customer_id: &'a str,
    pub price_id: &'a str,
    pub seats: u64,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    /// Goes on the subscription Checkout creates.
    pub subscription_metadata: HashMap<String, String>,
}

/// A new Checkout session for a one-off payment (credits).
#[derive(Debug, Clone)]
pub struct PaymentCheckoutRequest<'a> {
    pub customer_id: &'a str,
    pub currency: &'a str,
    pub amount_minor: i64,
    pub product_name: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    /// Goes on the session and on its payment, so either event names it.
    pub metadata: HashMap<String, String>,
}

/// A change of a per-unit item on a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitItemChange<'a> {
    Add {
        subscription_id: &'a str,
        price_id: &'a str,
        quantity: u64,
    },
    SetQuantity {
        item_id: &'a str,
        quantity: u64,
    },
    Remove {
        item_id: &'a str,
    },
}

/// What a seat change left to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatChangeOutcome {
    Done(ProviderSubscription),
    /// The prorated invoice needs the customer to authenticate the payment;
    /// Stripe keeps the old quantity until they do.
    NeedsAuthentication {
        subscription: ProviderSubscription,
        invoice_url: Option<String>,
    },
}

/// The second phase of a billing-cycle change: the subscription's items
/// with the paid seat price swapped.
#[derive(Debug, Clone)]
pub struct CycleChange<'a> {
    pub subscription_id: &'a str,
    pub current_items: &'a [LineItem],
    pub next_items: &'a [LineItem],
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

impl StripeApi {
    pub fn new(settings: &StripeSettings) -> anyhow::Result<Self> {
        // The client appends `v1/...` to the base as given.
        let mut base = settings.api_base.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = ClientBuilder::new(settings.secret_key.clone())
            .url(base)
            .timeout(std::time::Duration::from_secs(20))
            .build()?;
        Ok(Self { client })
    }

    pub async fn create_customer(&self, org: OrgId, name: &str) -> Result<String> {
        let customer = CreateCustomer::new()
            .name(name)
            .metadata(HashMap::from([(ORG_ID_KEY.to_owned(), org.to_string())]))
            .customize()
            .request_strategy(idempotent(format!("customer:{org}"))?)
            .send(&self.client)
            .await
            .map_err(|e| stripe_error("creating the customer", e))?;
        Ok(customer.id.as_str().to_owned())
    }

    /// Creates a Checkout session in subscription mode and returns its URL.
    pub async fn create_checkout_session(
        &self,
        request: CheckoutRequest<'_>,
        idempotency_key: String,
    ) -> Result<String> {
        let mut line_item = CreateCheckoutSessionLineItems::new();
        line_item.price = Some(request.price_id.to_owned());
        line_item.quantity = Some(request.seats);
        let mut subscription_data = CreateCheckoutSessionSubscriptionData::new();
        subscription_data.metadata = Some(request.subscription_metadata.clone());
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(request.customer_id)
            .line_items(vec![line_item])
            .subscription_data(subscription_data)
            .metadata(request.subscription_metadata)
            .allow_promotion_codes(true)
            .success_url(request.success_url)
            .cancel_url(request.cancel_url);
        self.send_checkout(session, idempotency_key, "creating the checkout session")
            .await
    }

    /// Creates a Checkout session in payment mode for one amount and returns
    /// its URL.
    pub async fn create_payment_checkout_session(
        &self,
        request: PaymentCheckoutRequest<'_>,
        idempotency_key: String,
    ) -> Result<String> {
        let currency = request
            .currency
            .parse::<stripe_types::Currency>()
            .map_err(|_| {
                Error::internal(anyhow::anyhow!("unknown currency {}", request.currency))
            })?;
        let mut price_data = CreateCheckoutSessionLineItemsPriceData::new(currency);
        price_data.unit_amount = Some(request.amount_minor);
        price_data.product_data = Some(ProductData::new(request.product_name));
        let mut line_item = CreateCheckoutSessionLineItems::new();
        line_item.price_data = Some(price_data);
        line_item.quantity = Some(1);
        let mut payment_intent_data = CreateCheckoutSessionPaymentIntentData::new();
        payment_intent_data.metadata = Some(request.metadata.clone());
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .customer(request.customer_id)
            .line_items(vec![line_item])
            .payment_intent_data(payment_intent_data)
            .metadata(request.metadata)
            .success_url(request.success_url)
            .cancel_url(request.cancel_url);
        self.send_checkout(
            session,
            idempotency_key,
            "creating the credit checkout session",
        )
        .await
    }

    /// Creates a Checkout session (either mode) and returns its URL.
    async fn send_checkout(
        &self,
        session: CreateCheckoutSession,
        idempotency_key: String,
        doing: &str,
    ) -> Result<String> {
        let session = session
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| stripe_error(doing, e))?;
        session
            .url
            .ok_or_else(|| Error::internal(anyhow::anyhow!("Stripe returned no checkout URL")))
    }

    /// Adds, resizes or removes a per-unit item, settled as `proration` says.
    pub async fn change_unit_item(
        &self,
        change: UnitItemChange<'_>,
        proration: Proration,
        idempotency_key: String,
    ) -> Result<()> {
        let strategy = idempotent(idempotency_key)?;
        let sent = match change {
            UnitItemChange::Add {
                subscription_id,
                price_id,
                quantity,
            } => CreateSubscriptionItem::new(subscription_id)
                .price(price_id)
                .quantity(quantity)
                .proration_behavior(match proration {
                    Proration::AlwaysInvoice => {
                        CreateSubscriptionItemProrationBehavior::AlwaysInvoice
                    }
                    Proration::CreateProrations => {
                        CreateSubscriptionItemProrationBehavior::CreateProrations
                    }
                    Proration::None => CreateSubscriptionItemProrationBehavior::None,
                })
                .customize()
                .request_strategy(strategy)
                .send(&self.client)
                .await
                .map(drop),
            UnitItemChange::SetQuantity { item_id, quantity } => {
                UpdateSubscriptionItem::new(item_id)
                    .quantity(quantity)
                    .proration_behavior(match proration {
                        Proration::AlwaysInvoice => {
                            UpdateSubscriptionItemProrationBehavior::AlwaysInvoice
                        }
                        Proration::CreateProrations => {
                            UpdateSubscriptionItemProrationBehavior::CreateProrations
                        }
                        Proration::None => UpdateSubscriptionItemProrationBehavior::None,
                    })
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client)
                    .await
                    .map(drop)
            }
            UnitItemChange::Remove { item_id } => DeleteSubscriptionItem::new(item_id)
                .proration_behavior(match proration {
                    Proration::AlwaysInvoice => {
                        DeleteSubscriptionItemProrationBehavior::AlwaysInvoice
                    }
                    Proration::CreateProrations => {
                        DeleteSubscriptionItemProrationBehavior::CreateProrations
                    }
                    Proration::None => DeleteSubscriptionItemProrationBehavior::None,
                })
                .customize()
                .request_strategy(strategy)
                .send(&self.client)
                .await
                .map(drop),
        };
        sent.map_err(|e| stripe_error("changing a per-unit item", e))
    }

    pub async fn create_portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        idempotency_key: String,
    ) -> Result<String> {
        let session = CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url)
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| stripe_error("creating the billing portal session", e))?;
        Ok(session.url)
    }

    /// The subscription as Stripe reports it now, with its schedule.
    pub async fn subscription(&self, id: &str) -> Result<ProviderSubscription> {
        let subscription = RetrieveSubscription::new(id)
            .expand(expansions())
            .send(&self.client)
            .await
            .map_err(|e| stripe_error("reading the subscription", e))?;
        self.to_provider(subscription).await
    }

    /// Sets the quantity of one item. An increase is prorated and invoiced at
    /// once, and only kept if the invoice is paid; a decrease is not prorated
    /// (the paid seats run to the end of the period).
    pub async fn set_item_quantity(
        &self,
        subscription_id: &str,
        item_id: &str,
        quantity: u64,
        increase: bool,
        idempotency_key: String,
    ) -> Result<SeatChangeOutcome> {
        let mut item = UpdateSubscriptionItems::new();
        item.id = Some(item_id.to_owned());
        item.quantity = Some(quantity);
        let mut update = UpdateSubscription::new(subscription_id)
            .items(vec![item])
            .expand(
                expansions()
                    .into_iter()
                    .chain(["latest_invoice".to_owned()])
                    .collect::<Vec<_>>(),
            );
        update = if increase {
            update
                .proration_behavior(UpdateSubscriptionProrationBehavior::AlwaysInvoice)
                .payment_behavior(UpdateSubscriptionPaymentBehavior::PendingIfIncomplete)
        } else {
            update.proration_behavior(UpdateSubscriptionProrationBehavior::None)
        };
        let subscription = update
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| stripe_error("changing the seat count", e))?;
        let invoice_url = subscription
            .latest_invoice
            .as_ref()
            .and_then(|invoice| invoice.as_object())
            .and_then(|invoice| invoice.hosted_invoice_url.clone());
        let pending = subscription.pending_update.is_some();
        let subscription = self.to_provider(subscription).await?;
        Ok(if pending {
            SeatChangeOutcome::NeedsAuthentication {
                subscription,
                invoice_url,
            }
        } else {
            SeatChangeOutcome::Done(subscription)
        })
    }

    pub async fn set_cancel_at_period_end(
        &self,
        subscription_id: &str,
        cancel: bool,
        idempotency_key: String,
    ) -> Result<ProviderSubscription> {
        let subscription = UpdateSubscription::new(subscription_id)
            .cancel_at_period_end(cancel)
            .expand(expansions())
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| stripe_error("changing the cancellation", e))?;
        self.to_provider(subscription).await
    }

    /// Creates the schedule from the subscription and returns its id. It
    /// starts as Stripe makes it (one phase mirroring the subscription).
    pub async fn create_schedule_from(
        &self,
        subscription_id: &str,
        idempotency_key: String,
    ) -> Result<String> {
        let schedule = CreateSubscriptionSchedule::new()
            .from_subscription(subscription_id)
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| stripe_error("creating the subscription schedule", e))?;
        Ok(schedule.id.as_str().to_owned())
    }

    /// Gives the schedule its two phases: the current items to the end of
    /// the period, then `next_items` from the renewal, billed from the phase
    /// start, never prorated, with the subscription's discounts carried into
    /// both; then the schedule releases the subscription. The metadata that
    /// marks it as ours goes on here, since Stripe refuses metadata together
    /// with `from_subscription`.
    pub async fn set_cycle_change_phases(
        &self,
        schedule_id: &str,
        change: CycleChange<'_>,
        discounts: &[String],
        idempotency_key: String,
    ) -> Result<()> {
        let phase_discounts = || -> Vec<UpdateSubscriptionSchedulePhasesDiscounts> {
            discounts
                .iter()
                .map(|discount| UpdateSubscriptionSchedulePhasesDiscounts {
                    coupon: None,
                    discount: Some(discount.clone()),
                    promotion_code: None,
                })
                .collect()
        };
        let phase_items = |items: &[LineItem]| -> Vec<UpdateSubscriptionSchedulePhasesItems> {
            items
                .iter()
                .map(|item| {
                    let mut phase_item = UpdateSubscriptionSchedulePhasesItems::new();
                    phase_item.price = Some(item.price_id.clone());
                    phase_item.quantity = u64::try_from(item.quantity).ok();
                    phase_item
                })
                .collect()
        };
        let mut current = UpdateSubscriptionSchedulePhases::new(phase_items(change.current_items));
        current.start_date = Some(UpdateSubscriptionSchedulePhasesStartDate::Timestamp(
            change.period_start.timestamp(),
        ));
        current.end_date = Some(UpdateSubscriptionSchedulePhasesEndDate::Timestamp(
            change.period_end.timestamp(),
        ));
        current.discounts = Some(phase_discounts());
        current.proration_behavior = Some(UpdateSubscriptionSchedulePhasesProrationBehavior::None);
        let mut next = UpdateSubscriptionSchedulePhases::new(phase_items(change.next_items));
        next.start_date = Some(UpdateSubscriptionSchedulePhasesStartDate::Timestamp(
            change.period_end.timestamp(),
        ));
        next.billing_cycle_anchor =
            Some(UpdateSubscriptionSchedulePhasesBillingCycleAnchor::PhaseStart);
        next.discounts = Some(phase_discounts());
        next.proration_behavior = Some(UpdateSubscriptionSchedulePhasesProrationBehavior::None);
        UpdateSubscriptionSchedule::new(schedule_id)
            .phases(vec![current, next])
            .end_behavior(SubscriptionScheduleEndBehavior::Release)
            .metadata(HashMap::from([(
                CYCLE_CHANGE_KEY.to_owned(),
                change.subscription_id.to_owned(),
            )]))
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| stripe_error("setting the schedule's phases", e))?;
        Ok(())
    }

    /// Releases the schedule: the subscription keeps its current items and
    /// goes on without it.
    pub async fn release_schedule(&self, schedule_id: &str, idempotency_key: String) -> Result<()> {
        ReleaseSubscriptionSchedule::new(schedule_id)
            .customize()
            .request_strategy(idempotent(idempotency_key)?)
            .send(&self.client)
            .await
            .map_err(|e| stripe_error("releasing the subscription schedule", e))?;
        Ok(())
    }

    async fn to_provider(&self, subscription: Subscription) -> Result<ProviderSubscription> {
        let schedule = match &subscription.schedule {
            None => None,
            Some(expandable) => Some(match expandable.as_object() {
                Some(schedule) => provider_schedule(schedule)?,
                None => {
                    let schedule = RetrieveSubscriptionSchedule::new(expandable.id().clone())
                        .expand(vec!["phases.items.price".to_owned()])
                        .send(&self.client)
                        .await
                        .map_err(|e| stripe_error("reading the subscription schedule", e))?;
                    provider_schedule(&schedule)?
                }
            }),
        };
        provider_subscription(subscription, schedule)
    }
}

fn expansions() -> Vec<String> {
    SUBSCRIPTION_EXPANSIONS.map(str::to_owned).to_vec()
}

fn idempotent(key: String) -> Result<RequestStrategy> {
    let key = IdempotencyKey::new(key).map_err(Error::internal)?;
    Ok(RequestStrategy::Idempotent(key))
}

/// Card and request errors are the caller's to see; the rest (network,
/// parsing, our own configuration) are internal.
fn stripe_error(doing: &str, error: StripeError) -> Error {
    match error {
        StripeError::Stripe(details, status) if status == 402 || (400..500).contains(&status) => {
            let message = details
                .message
                .clone()
                .unwrap_or_else(|| format!("Stripe refused the request ({status})"));
            match status {
                // Authentication and rate limits are ours to fix, not the caller's.
                401 | 403 | 429 => Error::internal(anyhow::anyhow!(
                    "Stripe answered {status} while {doing}: {message}"
                )),
                404 => Error::NotFound(format!("Stripe: {message}")),
                _ => Error::FailedPrecondition(format!("Stripe refused {doing}: {message}")),
            }
        }
        other => Error::internal(anyhow::Error::new(other).context(format!("while {doing}"))),
    }
}

fn timestamp(seconds: i64) -> Result<DateTime<Utc>> {
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

fn provider_schedule(schedule: &SubscriptionSchedule) -> Result<ProviderSchedule> {
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

fn provider_subscription(
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
        discount_ids: subscription
            .discounts
            .iter()
            .map(|discount| discount.id().as_str().to_owned())
            .collect(),
        schedule,
    })
}
