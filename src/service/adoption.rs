//! Adopting an existing Stripe customer (the rules are in
//! `domain::adoption`): the link, the labels in Stripe's metadata, and the
//! live subscription synced through the same path as an event.

use super::{Actor, Service, SubscriptionView};
use crate::domain::adoption::{AdoptionFacts, decide};
use crate::domain::ids::OrgId;
use crate::domain::reason::ErrorReason;
use crate::error::{Error, Result};
use crate::store;

/// Longest Stripe id accepted; Stripe's are a few dozen characters.
const MAX_STRIPE_ID_LEN: usize = 255;

impl Service {
    /// Links an existing Stripe customer to the organization, names the
    /// organization in the customer's and its subscription's metadata, and
    /// imports its live subscription. Calling it again finishes a call that
    /// was cut short.
    pub async fn attach_stripe_customer(
        &self,
        actor: &Actor,
        org: OrgId,
        customer: &str,
    ) -> Result<SubscriptionView> {
        Self::require_operator(actor, "attach Stripe customers")?;
        let valid = customer.starts_with("cus_")
            && customer.len() > 4
            && customer.len() <= MAX_STRIPE_ID_LEN
            && customer[4..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::invalid(
                "customer_id",
                "must be a Stripe customer id (cus_...)",
            ));
        }
        self.adopt(org, customer, false).await?;
        self.get_subscription(actor, org).await
    }

    /// Adopts every customer whose metadata names one of our organizations
    /// and is not linked yet; a dry run only says what it would do. Each
    /// customer's outcome is reported, refusals included.
    pub async fn import_stripe_customers(
        &self,
        actor: &Actor,
        dry_run: bool,
    ) -> Result<Vec<ImportedCustomer>> {
        Self::require_operator(actor, "import Stripe customers")?;
        let stripe = self.stripe()?;
        let mut imported = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = stripe.list_customers(after.as_deref()).await?;
            after = page.customers.last().map(|(id, _)| id.clone());
            for (customer, org) in page.customers {
                let Some(org) = org else { continue };
                let linked = {
                    let mut conn = self.store().pool().acquire().await?;
                    store::organizations::stripe_customer(&mut conn, org).await?
                };
                let outcome = if linked.as_deref() == Some(customer.as_str()) {
                    ImportOutcome::LinkedAlready
                } else {
                    match self.adopt(org, &customer, dry_run).await {
                        Ok(subscription) if dry_run => ImportOutcome::WouldAdopt { subscription },
                        Ok(subscription) => ImportOutcome::Adopted { subscription },
                        Err(Error::FailedPrecondition(refused)) => {
                            ImportOutcome::Refused(refused.message)
                        }
                        Err(Error::NotFound(reason)) => ImportOutcome::Refused(reason),
                        Err(error) => return Err(error),
                    }
                };
                imported.push(ImportedCustomer {
                    customer,
                    org,
                    outcome,
                });
            }
            if !page.has_more || after.is_none() {
                return Ok(imported);
            }
        }
    }

    /// The adoption itself: reads, decides, and unless `dry_run` labels,
    /// links and syncs. Returns the subscription imported, if any.
    async fn adopt(&self, org: OrgId, customer: &str, dry_run: bool) -> Result<Option<String>> {
        let stripe = self.stripe()?;
        let (org_customer, customer_owner) = {
            let mut conn = self.store().pool().acquire().await?;
            store::organizations::get(&mut conn, org)
                .await?
                .ok_or_else(|| super::org_not_found(org))?;
            (
                store::organizations::stripe_customer(&mut conn, org).await?,
                store::organizations::by_stripe_customer(&mut conn, customer).await?,
            )
        };
        let customer_metadata_org = stripe.customer_org(customer).await?;
        let subscriptions = stripe.customer_subscriptions(customer).await?;
        let facts = AdoptionFacts {
            org,
            customer,
            org_customer: org_customer.as_deref(),
            customer_owner,
            customer_metadata_org,
            subscriptions: &subscriptions,
            now: self.now(),
        };
        let catalog = self.catalog();
        let chosen = decide(&facts, &|price| catalog.seat_price(price))
            .map_err(|refusal| {
                Error::precondition(ErrorReason::AdoptionRefused, refusal.to_string())
            })?
            .map(|s| s.id.clone());
        if dry_run {
            return Ok(chosen);
        }
        stripe
            .label_adopted(org, customer, chosen.as_deref())
            .await?;
        {
            let mut conn = self.store().pool().acquire().await?;
            let recorded =
                store::organizations::remember_stripe_customer(&mut conn, org, customer).await?;
            if recorded != customer {
                return Err(Error::precondition(
                    ErrorReason::CustomerLinkedElsewhere,
                    format!(
                        "organization {org} was linked to Stripe customer {recorded} meanwhile"
                    ),
                ));
            }
        }
        if let Some(subscription) = &chosen {
            let ticket = self.sync_ticket(subscription).await?;
            let live = stripe.subscription(subscription).await?;
            self.store_live_alone(org, &live, ticket, "an adoption")
                .await?;
        }
        tracing::info!(%org, %customer, subscription = ?chosen, "adopted an existing Stripe customer");
        Ok(chosen)
    }
}

/// What an import did with one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedCustomer {
    pub customer: String,
    /// The organization its metadata names.
    pub org: OrgId,
    pub outcome: ImportOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Linked now, with the live subscription imported, if it had one.
    Adopted { subscription: Option<String> },
    /// What a real run would adopt (a dry run).
    WouldAdopt { subscription: Option<String> },
    /// Linked to the organization before this run.
    LinkedAlready,
    /// Not adopted, and why.
    Refused(String),
}
