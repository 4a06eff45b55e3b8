//! The Stripe API client: the reads this service makes, the customer, and
//! how Stripe's failures become ours. The planned writes are performed in
//! [`super::perform`].
//!
//! Reads of subscriptions expand the schedule and the prices of its phases,
//! so one call returns everything the domain's plans need.

use std::collections::HashMap;
use std::fmt;

use stripe::{ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::invoice::RetrieveInvoice;
use stripe_billing::subscription::{
    ListSubscription, ListSubscriptionStatus, RetrieveSubscription,
};
use stripe_billing::subscription_schedule::RetrieveSubscriptionSchedule;
use stripe_billing::{Invoice, Subscription};
use stripe_checkout::CheckoutSessionStatus;
use stripe_checkout::checkout_session::RetrieveCheckoutSession;
use stripe_core::PaymentIntentStatus;
use stripe_core::customer::CreateCustomer;
use stripe_core::payment_intent::RetrievePaymentIntent;

use super::convert::{org_named, provider_schedule, provider_subscription};
use super::observed::StripeHttp;
use crate::domain::checkout::SessionStatus;
use crate::domain::ids::OrgId;
use crate::domain::metadata::ORG_ID_KEY;
use crate::domain::operation::PaymentProblem;
use crate::domain::purchase_check::LivePayment;
use crate::domain::reason::ErrorReason;
use crate::domain::subscription_sync::ProviderSubscription;
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

/// Attempts at a read before its failure is reported.
const READ_ATTEMPTS: u32 = 3;

#[derive(Clone)]
pub struct StripeApi {
    pub(super) client: StripeHttp,
}

impl fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StripeApi")
    }
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
            // Reads retry 409, 429 and 5xx with backoff (1 s, then 2 s),
            // and stop when Stripe-Should-Retry says so. Every write names
            // its own strategy: once, with the recorded operation's key.
            .request_strategy(RequestStrategy::ExponentialBackoff(READ_ATTEMPTS))
            .build()?;
        Ok(Self {
            client: StripeHttp::new(client),
        })
    }

    /// Creates the organization's customer. The key is the organization's
    /// own id, so two first calls at once make one customer.
    pub async fn create_customer(&self, org: OrgId, name: &str) -> Result<String> {
        let customer = CreateCustomer::new()
            .name(name)
            .metadata(HashMap::from([(ORG_ID_KEY.to_owned(), org.to_string())]))
            .customize()
            .request_strategy(idempotent(format!("customer:{org}"))?)
            .send(&self.client.endpoint("create_customer"))
            .await
            .map_err(|e| stripe_error("creating the customer", e))?;
        Ok(customer.id.as_str().to_owned())
    }

    /// The subscription as Stripe reports it now, with its schedule.
    pub async fn subscription(&self, id: &str) -> Result<ProviderSubscription> {
        let subscription = RetrieveSubscription::new(id)
            .expand(expansions())
            .send(&self.client.endpoint("retrieve_subscription"))
            .await
            .map_err(|e| stripe_error("reading the subscription", e))?;
        self.to_provider(subscription).await
    }

    /// Every subscription of the customer, ended ones included, without
    /// their schedules (a checkout only asks whether one is running).
    pub async fn customer_subscriptions(
        &self,
        customer: &str,
    ) -> Result<Vec<ProviderSubscription>> {
        let list = ListSubscription::new()
            .customer(customer)
            .status(ListSubscriptionStatus::All)
            .limit(100)
            .send(&self.client.endpoint("list_subscription"))
            .await
            .map_err(|e| stripe_error("listing the customer's subscriptions", e))?;
        list.data
            .into_iter()
            .map(|subscription| provider_subscription(subscription, None))
            .collect()
    }

    pub async fn checkout_session_status(&self, id: &str) -> Result<SessionStatus> {
        let session = RetrieveCheckoutSession::new(id)
            .send(&self.client.endpoint("retrieve_checkout_session"))
            .await
            .map_err(|e| stripe_error("reading the checkout session", e))?;
        Ok(match session.status {
            Some(CheckoutSessionStatus::Open) => SessionStatus::Open,
            Some(CheckoutSessionStatus::Complete) => SessionStatus::Complete,
            // A status added later is treated as closed, not payable.
            Some(CheckoutSessionStatus::Expired | CheckoutSessionStatus::Unknown(_)) | None => {
                SessionStatus::Expired
            }
            Some(_) => SessionStatus::Expired,
        })
    }

    /// The succeeded payments (payment intent ids) of the subscription's
    /// latest invoice: the one that made a duplicate live.
    pub async fn latest_payments(&self, subscription_id: &str) -> Result<Vec<String>> {
        let subscription = RetrieveSubscription::new(subscription_id)
            .send(&self.client.endpoint("retrieve_subscription"))
            .await
            .map_err(|e| stripe_error("reading the subscription", e))?;
        let Some(invoice) = subscription.latest_invoice else {
            return Ok(Vec::new());
        };
        let Some(invoice_id) = invoice.id() else {
            return Ok(Vec::new());
        };
        let invoice = self.invoice_with_payments(invoice_id.as_str()).await?;
        Ok(invoice
            .payments
            .map(|list| list.data)
            .unwrap_or_default()
            .into_iter()
            .filter(|payment| payment.status == "paid")
            .filter_map(|payment| payment.payment.payment_intent)
            .map(|intent| intent.id().as_str().to_owned())
            .collect())
    }

    /// Why an open invoice's payment did not go through.
    pub async fn payment_problem(&self, invoice_id: &str) -> Result<PaymentProblem> {
        let invoice = self.invoice_with_payments(invoice_id).await?;
        let intent = invoice
            .payments
            .map(|list| list.data)
            .unwrap_or_default()
            .into_iter()
            .find_map(|payment| payment.payment.payment_intent);
        let Some(intent) = intent else {
            return Ok(PaymentProblem::Declined);
        };
        let intent = RetrievePaymentIntent::new(intent.id().clone())
            .send(&self.client.endpoint("retrieve_payment_intent"))
            .await
            .map_err(|e| stripe_error("reading the invoice's payment", e))?;
        Ok(match intent.status {
            PaymentIntentStatus::RequiresAction | PaymentIntentStatus::RequiresConfirmation => {
                PaymentProblem::NeedsAuthentication
            }
            PaymentIntentStatus::Canceled
            | PaymentIntentStatus::Processing
            | PaymentIntentStatus::RequiresCapture
            | PaymentIntentStatus::RequiresPaymentMethod
            | PaymentIntentStatus::Succeeded
            | PaymentIntentStatus::Unknown(_) => PaymentProblem::Declined,
            // A status added later: treat the payment as failed.
            _ => PaymentProblem::Declined,
        })
    }

    /// A credited purchase's payment intent as Stripe has it now; `None`
    /// when Stripe does not know it.
    pub async fn credited_payment(&self, id: &str) -> Result<Option<LivePayment>> {
        let intent = match RetrievePaymentIntent::new(id)
            .send(&self.client.endpoint("retrieve_payment_intent"))
            .await
        {
            Ok(intent) => intent,
            Err(error) => {
                return match stripe_error("reading a credit purchase's payment", error) {
                    Error::NotFound(_) => Ok(None),
                    other => Err(other),
                };
            }
        };
        Ok(Some(LivePayment {
            succeeded: intent.status == PaymentIntentStatus::Succeeded,
            amount_received_minor: intent.amount_received,
            org: org_named(&intent.metadata),
        }))
    }

    async fn invoice_with_payments(&self, invoice_id: &str) -> Result<Invoice> {
        RetrieveInvoice::new(invoice_id)
            .expand(vec!["payments".to_owned()])
            .send(&self.client.endpoint("retrieve_invoice"))
            .await
            .map_err(|e| stripe_error("reading the invoice", e))
    }

    pub(super) async fn to_provider(
        &self,
        subscription: Subscription,
    ) -> Result<ProviderSubscription> {
        let schedule = match &subscription.schedule {
            None => None,
            Some(expandable) => Some(match expandable.as_object() {
                Some(schedule) => provider_schedule(schedule)?,
                None => {
                    let schedule = RetrieveSubscriptionSchedule::new(expandable.id().clone())
                        .expand(vec!["phases.items.price".to_owned()])
                        .send(&self.client.endpoint("retrieve_subscription_schedule"))
                        .await
                        .map_err(|e| stripe_error("reading the subscription schedule", e))?;
                    provider_schedule(&schedule)?
                }
            }),
        };
        provider_subscription(subscription, schedule)
    }
}

pub(super) fn expansions() -> Vec<String> {
    SUBSCRIPTION_EXPANSIONS.map(str::to_owned).to_vec()
}

/// Sends once with our key. async-stripe's retrying strategies make up a
/// random key of their own; ours must come from the recorded operation, so
/// retrying is the operations loop's job, with the same key.
pub(super) fn idempotent(key: String) -> Result<RequestStrategy> {
    let key = IdempotencyKey::new(key).map_err(Error::internal)?;
    Ok(RequestStrategy::Idempotent(key))
}

/// Stripe's refusals are the caller's to see (FAILED_PRECONDITION, or
/// NOT_FOUND); an answer that never came, a rate limit or a failure at
/// Stripe may pass (UNAVAILABLE); our own keys or a response we cannot
/// read are internal.
pub(super) fn stripe_error(doing: &str, error: StripeError) -> Error {
    match error {
        StripeError::Stripe(details, status) => {
            let message = details
                .message
                .clone()
                .unwrap_or_else(|| format!("Stripe answered {status}"));
            match status {
                401 | 403 => Error::internal(anyhow::anyhow!(
                    "Stripe answered {status} while {doing}: {message}"
                )),
                404 => Error::NotFound(format!("Stripe: {message}")),
                429 => Error::RateLimited(format!(
                    "Stripe is rate-limiting {doing}; it is retried later"
                )),
                500.. => Error::Unavailable(format!(
                    "Stripe could not complete {doing} ({status}); it is retried"
                )),
                _ => Error::precondition(
                    ErrorReason::StripeRefused,
                    format!("Stripe refused {doing}: {message}"),
                ),
            }
        }
        StripeError::ClientError(_) | StripeError::Timeout => Error::Unavailable(format!(
            "Stripe did not answer while {doing}; it is retried"
        )),
        other @ (StripeError::JSONDeserialize(_) | StripeError::ConfigError(_)) => {
            Error::internal(anyhow::Error::new(other).context(format!("while {doing}")))
        }
    }
}
