//! Reading and labelling an existing Stripe customer for adoption.

use std::collections::HashMap;

use stripe::StripeRequest;
use stripe_billing::subscription::UpdateSubscription;
use stripe_core::customer::{
    ListCustomer, RetrieveCustomer, RetrieveCustomerReturned, UpdateCustomer,
};

use super::api::{StripeApi, idempotent, stripe_error};
use super::convert::org_named;
use crate::domain::ids::OrgId;
use crate::domain::metadata::ORG_ID_KEY;
use crate::error::{Error, Result};

/// Customers per page: Stripe's most.
const PAGE_SIZE: i64 = 100;

/// One page of the account's customers, newest first, each with the
/// organization its metadata names (if it names a valid one).
#[derive(Debug, Clone)]
pub struct CustomerPage {
    pub customers: Vec<(String, Option<OrgId>)>,
    pub has_more: bool,
}

impl StripeApi {
    /// A page of the account's customers after the customer `after`.
    pub async fn list_customers(&self, after: Option<&str>) -> Result<CustomerPage> {
        let mut list = ListCustomer::new().limit(PAGE_SIZE);
        if let Some(after) = after {
            list = list.starting_after(after);
        }
        let page = list
            .send(&self.client.endpoint("list_customer"))
            .await
            .map_err(|e| stripe_error("listing customers", e))?;
        let customers = page
            .data
            .into_iter()
            .map(|customer| {
                let org = customer.metadata.as_ref().and_then(org_named);
                (customer.id.as_str().to_owned(), org)
            })
            .collect();
        Ok(CustomerPage {
            customers,
            has_more: page.has_more,
        })
    }

    /// The organization the customer's metadata names, if it names a valid
    /// one. A customer Stripe does not know, or one deleted, is NOT_FOUND.
    pub async fn customer_org(&self, customer: &str) -> Result<Option<OrgId>> {
        let returned = RetrieveCustomer::new(customer)
            .send(&self.client.endpoint("retrieve_customer"))
            .await
            .map_err(|e| stripe_error("reading the customer", e))?;
        match returned {
            RetrieveCustomerReturned::Customer(customer) => {
                Ok(customer.metadata.as_ref().and_then(org_named))
            }
            RetrieveCustomerReturned::DeletedCustomer(_) => Err(Error::NotFound(format!(
                "Stripe customer {customer} was deleted"
            ))),
        }
    }

    /// Names the organization in the customer's and the subscription's
    /// metadata, as for customers and subscriptions this service created.
    /// The keys name the organization and the object, so a retried
    /// adoption sends the same requests.
    pub async fn label_adopted(
        &self,
        org: OrgId,
        customer: &str,
        subscription: Option<&str>,
    ) -> Result<()> {
        let metadata = HashMap::from([(ORG_ID_KEY.to_owned(), org.to_string())]);
        UpdateCustomer::new(customer)
            .metadata(metadata.clone())
            .customize()
            .request_strategy(idempotent(format!("adopt:{org}:{customer}"))?)
            .send(&self.client.endpoint("update_customer"))
            .await
            .map_err(|e| stripe_error("labelling the customer", e))?;
        if let Some(subscription) = subscription {
            UpdateSubscription::new(subscription)
                .metadata(metadata)
                .customize()
                .request_strategy(idempotent(format!("adopt:{org}:{subscription}"))?)
                .send(&self.client.endpoint("update_subscription"))
                .await
                .map_err(|e| stripe_error("labelling the subscription", e))?;
        }
        Ok(())
    }
}
