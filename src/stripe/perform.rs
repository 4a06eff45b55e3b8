//! Performing a planned step: one domain [`Step`] becomes one Stripe request,
//! sent with the idempotency key the operation gave it.

use std::collections::HashMap;

use stripe::StripeRequest;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::VoidInvoiceInvoice;
use stripe_billing::subscription::{
    CancelSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionPaymentBehavior, UpdateSubscriptionProrationBehavior,
};
use stripe_billing::subscription_item::{
    CreateSubscriptionItem, CreateSubscriptionItemProrationBehavior, DeleteSubscriptionItem,
    DeleteSubscriptionItemProrationBehavior, UpdateSubscriptionItem,
    UpdateSubscriptionItemProrationBehavior,
};
use stripe_billing::subscription_schedule::{
    CreateSubscriptionSchedule, ReleaseSubscriptionSchedule, UpdateSubscriptionSchedule,
    UpdateSubscriptionSchedulePhases, UpdateSubscriptionSchedulePhasesBillingCycleAnchor,
    UpdateSubscriptionSchedulePhasesDiscounts, UpdateSubscriptionSchedulePhasesEndDate,
    UpdateSubscriptionSchedulePhasesItems, UpdateSubscriptionSchedulePhasesProrationBehavior,
    UpdateSubscriptionSchedulePhasesStartDate, UpdateSubscriptionScheduleProrationBehavior,
};
use stripe_billing::{Subscription, SubscriptionScheduleEndBehavior};
use stripe_checkout::CheckoutSessionMode;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, CreateCheckoutSessionSubscriptionData,
    ExpireCheckoutSession, ProductData,
};
use stripe_core::refund::CreateRefund;

use super::StripeApi;
use super::api::{expansions, idempotent, stripe_error};
use crate::domain::add_ons::Proration;
use crate::domain::metadata::CYCLE_CHANGE_KEY;
use crate::domain::operation::{
    CheckoutSale, CheckoutSession, CycleChangePhases, ItemsUpdate, PriceQuantity, Step, StepResult,
    resolve_schedule,
};
use crate::error::{Error, Result};

impl StripeApi {
    /// Sends `step` under `key`. `earlier` holds what the plan's earlier
    /// steps returned (a schedule a step created, say).
    pub async fn perform(
        &self,
        step: &Step,
        key: String,
        earlier: &[StepResult],
    ) -> Result<StepResult> {
        let strategy = idempotent(key)?;
        let schedule_of = |schedule| {
            resolve_schedule(schedule, earlier)
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::internal(anyhow::anyhow!("the plan names a schedule no step made"))
                })
        };
        match step {
            Step::ExpireCheckoutSession { session_id } => {
                ExpireCheckoutSession::new(session_id.as_str())
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client.endpoint("expire_checkout_session"))
                    .await
                    .map_err(|e| stripe_error("expiring the open checkout session", e))?;
                Ok(StepResult::Done)
            }
            Step::CreateCheckoutSession(session) => self.create_session(session, strategy).await,
            Step::UpdateItems(update) => self.update_items(update, strategy).await,
            Step::SetCancelAtPeriodEnd {
                subscription_id,
                cancel,
            } => {
                let subscription = UpdateSubscription::new(subscription_id.as_str())
                    .cancel_at_period_end(*cancel)
                    .expand(expansions())
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client.endpoint("update_subscription"))
                    .await
                    .map_err(|e| stripe_error("changing the cancellation", e))?;
                self.subscription_result(subscription).await
            }
            Step::CreateSchedule { subscription_id } => {
                let schedule = CreateSubscriptionSchedule::new()
                    .from_subscription(subscription_id.as_str())
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client.endpoint("create_subscription_schedule"))
                    .await
                    .map_err(|e| stripe_error("creating the subscription schedule", e))?;
                Ok(StepResult::Schedule {
                    id: schedule.id.as_str().to_owned(),
                })
            }
            Step::SetCycleChangePhases(phases) => {
                let schedule = schedule_of(&phases.schedule)?;
                self.set_phases(&schedule, phases, strategy).await
            }
            Step::ReleaseSchedule { schedule } => {
                ReleaseSubscriptionSchedule::new(schedule_of(schedule)?)
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client.endpoint("release_subscription_schedule"))
                    .await
                    .map_err(|e| stripe_error("releasing the subscription schedule", e))?;
                Ok(StepResult::Done)
            }
            Step::AddItem {
                subscription_id,
                price_id,
                quantity,
                proration,
            } => {
                CreateSubscriptionItem::new(subscription_id.as_str())
                    .price(price_id.as_str())
                    .quantity(count(*quantity))
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
                    .send(&self.client.endpoint("create_subscription_item"))
                    .await
                    .map_err(|e| stripe_error("adding a per-unit item", e))?;
                Ok(StepResult::Done)
            }
            Step::SetItemQuantity {
                item_id,
                quantity,
                proration,
            } => {
                UpdateSubscriptionItem::new(item_id.as_str())
                    .quantity(count(*quantity))
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
                    .send(&self.client.endpoint("update_subscription_item"))
                    .await
                    .map_err(|e| stripe_error("resizing a per-unit item", e))?;
                Ok(StepResult::Done)
            }
            Step::RemoveItem { item_id, proration } => {
                DeleteSubscriptionItem::new(item_id.as_str())
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
                    .send(&self.client.endpoint("delete_subscription_item"))
                    .await
                    .map_err(|e| stripe_error("removing a per-unit item", e))?;
                Ok(StepResult::Done)
            }
            Step::CancelSubscriptionNow { subscription_id } => {
                let subscription = CancelSubscription::new(subscription_id.as_str())
                    .expand(expansions())
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client.endpoint("cancel_subscription"))
                    .await
                    .map_err(|e| stripe_error("canceling the duplicate subscription", e))?;
                self.subscription_result(subscription).await
            }
            Step::Refund { payment_intent_id } => {
                CreateRefund::new()
                    .payment_intent(payment_intent_id.as_str())
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client.endpoint("create_refund"))
                    .await
                    .map_err(|e| stripe_error("refunding the payment", e))?;
                Ok(StepResult::Done)
            }
            Step::VoidInvoice { invoice_id } => {
                VoidInvoiceInvoice::new(invoice_id.as_str())
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client.endpoint("void_invoice"))
                    .await
                    .map_err(|e| stripe_error("voiding the unpaid invoice", e))?;
                Ok(StepResult::Done)
            }
            Step::CreatePortalSession {
                customer_id,
                return_url,
            } => {
                let session = CreateBillingPortalSession::new()
                    .customer(customer_id.as_str())
                    .return_url(return_url.as_str())
                    .customize()
                    .request_strategy(strategy)
                    .send(&self.client.endpoint("create_billing_portal_session"))
                    .await
                    .map_err(|e| stripe_error("creating the billing portal session", e))?;
                Ok(StepResult::Url(session.url))
            }
        }
    }

    async fn create_session(
        &self,
        session: &CheckoutSession,
        strategy: stripe::RequestStrategy,
    ) -> Result<StepResult> {
        let metadata: HashMap<String, String> = session.metadata.clone().into_iter().collect();
        let mut create = CreateCheckoutSession::new()
            .customer(session.customer_id.as_str())
            .metadata(metadata.clone())
            .success_url(session.success_url.as_str())
            .cancel_url(session.cancel_url.as_str());
        create = match &session.sale {
            CheckoutSale::Subscription {
                lines,
                subscription_metadata,
            } => {
                let mut data = CreateCheckoutSessionSubscriptionData::new();
                data.metadata = Some(subscription_metadata.clone().into_iter().collect());
                create
                    .mode(CheckoutSessionMode::Subscription)
                    .line_items(lines.iter().map(checkout_line).collect::<Vec<_>>())
                    .subscription_data(data)
                    .allow_promotion_codes(true)
            }
            CheckoutSale::Payment {
                currency,
                amount_minor,
                product_name,
            } => {
                let currency = currency
                    .parse::<stripe_types::Currency>()
                    .map_err(|_| Error::internal(anyhow::anyhow!("unknown currency {currency}")))?;
                let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency);
                price.unit_amount = Some(*amount_minor);
                price.product_data = Some(ProductData::new(product_name.as_str()));
                let mut line = CreateCheckoutSessionLineItems::new();
                line.price_data = Some(price);
                line.quantity = Some(1);
                let mut intent = CreateCheckoutSessionPaymentIntentData::new();
                intent.metadata = Some(metadata);
                create
                    .mode(CheckoutSessionMode::Payment)
                    .line_items(vec![line])
                    .payment_intent_data(intent)
            }
        };
        let created = create
            .customize()
            .request_strategy(strategy)
            .send(&self.client.endpoint("create_checkout_session"))
            .await
            .map_err(|e| stripe_error("creating the checkout session", e))?;
        let url = created
            .url
            .ok_or_else(|| Error::internal(anyhow::anyhow!("Stripe returned no checkout URL")))?;
        Ok(StepResult::Session {
            id: created.id.as_str().to_owned(),
            url,
        })
    }

    /// An update of item quantities; a pending update (the invoice was not
    /// paid) says why.
    async fn update_items(
        &self,
        update: &ItemsUpdate,
        strategy: stripe::RequestStrategy,
    ) -> Result<StepResult> {
        let items: Vec<UpdateSubscriptionItems> = update
            .items
            .iter()
            .map(|change| {
                let mut item = UpdateSubscriptionItems::new();
                item.id = Some(change.item_id.clone());
                item.quantity = Some(count(change.quantity));
                item
            })
            .collect();
        let mut request = UpdateSubscription::new(update.subscription_id.as_str())
            .items(items)
            .proration_behavior(match update.proration {
                Proration::AlwaysInvoice => UpdateSubscriptionProrationBehavior::AlwaysInvoice,
                Proration::CreateProrations => {
                    UpdateSubscriptionProrationBehavior::CreateProrations
                }
                Proration::None => UpdateSubscriptionProrationBehavior::None,
            })
            .expand(
                expansions()
                    .into_iter()
                    .chain(["latest_invoice".to_owned()])
                    .collect::<Vec<_>>(),
            );
        if update.only_if_paid {
            request =
                request.payment_behavior(UpdateSubscriptionPaymentBehavior::PendingIfIncomplete);
        }
        if !update.metadata.is_empty() {
            request = request.metadata(
                update
                    .metadata
                    .clone()
                    .into_iter()
                    .collect::<HashMap<_, _>>(),
            );
        }
        let subscription = request
            .customize()
            .request_strategy(strategy)
            .send(&self.client.endpoint("update_subscription"))
            .await
            .map_err(|e| stripe_error("changing the seat count", e))?;
        if subscription.pending_update.is_none() {
            return self.subscription_result(subscription).await;
        }
        let invoice = subscription.latest_invoice.as_ref();
        let invoice_id = invoice
            .and_then(|invoice| invoice.id().clone())
            .map(|id| id.as_str().to_owned())
            .ok_or_else(|| {
                Error::internal(anyhow::anyhow!("a pending update without an invoice"))
            })?;
        let invoice_url = invoice
            .and_then(|invoice| invoice.as_object())
            .and_then(|invoice| invoice.hosted_invoice_url.clone());
        let problem = self.payment_problem(&invoice_id).await?;
        Ok(StepResult::PaymentIncomplete {
            subscription: Box::new(self.to_provider(subscription).await?),
            invoice_id,
            invoice_url,
            problem,
        })
    }

    /// Gives the schedule its two phases and marks it as ours (Stripe
    /// refuses metadata together with `from_subscription`, so it goes on
    /// here). A change of the current phase is never prorated: it only
    /// restates the items the subscription has.
    async fn set_phases(
        &self,
        schedule_id: &str,
        change: &CycleChangePhases,
        strategy: stripe::RequestStrategy,
    ) -> Result<StepResult> {
        let discounts = || -> Vec<UpdateSubscriptionSchedulePhasesDiscounts> {
            change
                .discounts
                .iter()
                .map(|discount| UpdateSubscriptionSchedulePhasesDiscounts {
                    coupon: None,
                    discount: Some(discount.clone()),
                    promotion_code: None,
                })
                .collect()
        };
        let items = |lines: &[PriceQuantity]| -> Vec<UpdateSubscriptionSchedulePhasesItems> {
            lines
                .iter()
                .map(|line| {
                    let mut item = UpdateSubscriptionSchedulePhasesItems::new();
                    item.price = Some(line.price_id.clone());
                    item.quantity = Some(count(line.quantity));
                    item
                })
                .collect()
        };
        let mut current = UpdateSubscriptionSchedulePhases::new(items(&change.current));
        current.start_date = Some(UpdateSubscriptionSchedulePhasesStartDate::Timestamp(
            change.period_start.timestamp(),
        ));
        current.end_date = Some(UpdateSubscriptionSchedulePhasesEndDate::Timestamp(
            change.period_end.timestamp(),
        ));
        current.discounts = Some(discounts());
        current.proration_behavior = Some(UpdateSubscriptionSchedulePhasesProrationBehavior::None);
        let mut next = UpdateSubscriptionSchedulePhases::new(items(&change.next));
        next.start_date = Some(UpdateSubscriptionSchedulePhasesStartDate::Timestamp(
            change.period_end.timestamp(),
        ));
        next.billing_cycle_anchor =
            Some(UpdateSubscriptionSchedulePhasesBillingCycleAnchor::PhaseStart);
        next.discounts = Some(discounts());
        next.proration_behavior = Some(UpdateSubscriptionSchedulePhasesProrationBehavior::None);
        UpdateSubscriptionSchedule::new(schedule_id)
            .phases(vec![current, next])
            .end_behavior(SubscriptionScheduleEndBehavior::Release)
            .proration_behavior(UpdateSubscriptionScheduleProrationBehavior::None)
            .metadata(HashMap::from([(
                CYCLE_CHANGE_KEY.to_owned(),
                change.subscription_id.clone(),
            )]))
            .customize()
            .request_strategy(strategy)
            .send(&self.client.endpoint("update_subscription_schedule"))
            .await
            .map_err(|e| stripe_error("setting the schedule's phases", e))?;
        Ok(StepResult::Done)
    }

    async fn subscription_result(&self, subscription: Subscription) -> Result<StepResult> {
        Ok(StepResult::Subscription(Box::new(
            self.to_provider(subscription).await?,
        )))
    }
}

fn checkout_line(line: &PriceQuantity) -> CreateCheckoutSessionLineItems {
    let mut item = CreateCheckoutSessionLineItems::new();
    item.price = Some(line.price_id.clone());
    item.quantity = Some(count(line.quantity));
    item
}

/// Quantities are planned as counts; Stripe takes them unsigned.
fn count(quantity: i64) -> u64 {
    u64::try_from(quantity).unwrap_or(0)
}
