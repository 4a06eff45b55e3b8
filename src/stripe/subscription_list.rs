//! Listing every subscription in the Stripe account, for reconciliation.

use stripe_billing::subscription::{ListSubscription, ListSubscriptionStatus};

use super::api::{StripeApi, stripe_error};
use super::convert::org_named;
use crate::domain::ids::OrgId;
use crate::error::Result;

/// Subscriptions per page: Stripe's most.
const PAGE_SIZE: i64 = 100;

/// A subscription as listed: its id and what tells whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSubscription {
    pub id: String,
    pub customer_id: String,
    /// The organization its metadata names, if it names a valid one.
    pub org_id: Option<OrgId>,
}

/// One page, newest first; the next page starts after its last one.
#[derive(Debug, Clone)]
pub struct SubscriptionPage {
    pub subscriptions: Vec<ListedSubscription>,
    pub has_more: bool,
}

impl StripeApi {
    /// A page of the account's subscriptions (of one customer, if given),
    /// ended ones included, after the subscription `after`.
    pub async fn list_subscriptions(
        &self,
        customer: Option<&str>,
        after: Option<&str>,
    ) -> Result<SubscriptionPage> {
        let mut list = ListSubscription::new()
            .status(ListSubscriptionStatus::All)
            .limit(PAGE_SIZE);
        if let Some(customer) = customer {
            list = list.customer(customer);
        }
        if let Some(after) = after {
            list = list.starting_after(after);
        }
        let page = list
            .send(&self.client.endpoint("list_subscription"))
            .await
            .map_err(|e| stripe_error("listing subscriptions", e))?;
        let subscriptions = page
            .data
            .into_iter()
            .map(|subscription| ListedSubscription {
                id: subscription.id.as_str().to_owned(),
                customer_id: subscription.customer.id().as_str().to_owned(),
                org_id: org_named(&subscription.metadata),
            })
            .collect();
        Ok(SubscriptionPage {
            subscriptions,
            has_more: page.has_more,
        })
    }
}
