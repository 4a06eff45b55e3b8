//! Adopting an existing Stripe customer: a team moving to this service
//! already has customers and live subscriptions in Stripe. An operator
//! links one to an organization; its live subscription (if any) is then
//! synced like any other, plan and cycle read from its prices through the
//! catalog and seats from its paid seat item.

use chrono::{DateTime, Utc};

use super::ids::OrgId;
use super::pricing::KnownSeatPrice;
use super::subscription_sync::ProviderSubscription;

/// What the adoption needs to know before it links anything.
#[derive(Debug, Clone, Copy)]
pub struct AdoptionFacts<'a> {
    pub org: OrgId,
    pub customer: &'a str,
    /// The customer the organization is linked to already, if any.
    pub org_customer: Option<&'a str>,
    /// The organization this customer is linked to already, if any.
    pub customer_owner: Option<OrgId>,
    /// The organization the customer's metadata names, if any.
    pub customer_metadata_org: Option<OrgId>,
    /// Every subscription of the customer, ended ones included.
    pub subscriptions: &'a [ProviderSubscription],
    pub now: DateTime<Utc>,
}

/// Why a customer cannot be adopted, fit to show an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdoptionRefusal {
    #[error("organization {org} is linked to Stripe customer {linked} already")]
    OrgHasAnotherCustomer { org: OrgId, linked: String },
    #[error("Stripe customer {customer} belongs to organization {owner}")]
    CustomerOfAnotherOrg { customer: String, owner: OrgId },
    #[error(
        "subscription {subscription} has no seat price of the catalog, so its plan and cycle cannot be read"
    )]
    UnknownSeatPrice { subscription: String },
    #[error(
        "Stripe customer {customer} has {} live subscriptions ({}); cancel all but one first",
        .live.len(),
        .live.join(", ")
    )]
    SeveralLiveSubscriptions { customer: String, live: Vec<String> },
}

/// The subscription to import (`None`: the customer has no live one, and
/// only the link is made), or why the customer cannot be adopted. Linking
/// the same customer again is allowed, so a retried call finishes the job.
pub fn decide<'a>(
    facts: &AdoptionFacts<'a>,
    seat_price: &dyn Fn(&str) -> Option<KnownSeatPrice>,
) -> Result<Option<&'a ProviderSubscription>, AdoptionRefusal> {
    if let Some(linked) = facts.org_customer
        && linked != facts.customer
    {
        return Err(AdoptionRefusal::OrgHasAnotherCustomer {
            org: facts.org,
            linked: linked.to_owned(),
        });
    }
    for owner in [facts.customer_owner, facts.customer_metadata_org]
        .into_iter()
        .flatten()
    {
        if owner != facts.org {
            return Err(AdoptionRefusal::CustomerOfAnotherOrg {
                customer: facts.customer.to_owned(),
                owner,
            });
        }
    }
    let live: Vec<&ProviderSubscription> = facts
        .subscriptions
        .iter()
        .filter(|s| !s.is_over(facts.now))
        .collect();
    match live.as_slice() {
        [] => Ok(None),
        [one] if one.seat_terms(seat_price).plan.is_none() => {
            Err(AdoptionRefusal::UnknownSeatPrice {
                subscription: one.id.clone(),
            })
        }
        [one] => Ok(Some(one)),
        several => Err(AdoptionRefusal::SeveralLiveSubscriptions {
            customer: facts.customer.to_owned(),
            live: several.iter().map(|s| s.id.clone()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_fixtures::{catalog, live};

    /// A name, the facts, and the subscription chosen or the refusal.
    type Case<'a> = (
        &'a str,
        AdoptionFacts<'a>,
        Result<Option<&'a str>, AdoptionRefusal>,
    );

    #[test]
    fn a_customer_is_adopted_only_when_nobody_else_has_it_and_one_subscription_is_live() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let org = OrgId::generate();
        let other = OrgId::generate();
        let mut first = live(3, now);
        first.id = "sub_a".into();
        let mut second = live(2, now);
        second.id = "sub_b".into();
        let mut ended = live(2, now);
        ended.id = "sub_old".into();
        ended.status_raw = "canceled".into();
        ended.ended_at = Some(now - chrono::TimeDelta::days(40));
        let mut foreign = live(1, now);
        foreign.id = "sub_foreign".into();
        foreign.items[0].price_id = "price_of_another_product".into();
        let one = [first.clone(), ended.clone()];
        let two = [first.clone(), second.clone()];
        let unknown = [foreign];
        let facts =
            |org_customer, customer_owner, customer_metadata_org, subscriptions| AdoptionFacts {
                org,
                customer: "cus_1",
                org_customer,
                customer_owner,
                customer_metadata_org,
                subscriptions,
                now,
            };
        let cases: [Case<'_>; 8] = [
            (
                "one live, one ended",
                facts(None, None, None, &one),
                Ok(Some("sub_a")),
            ),
            (
                "no subscription: only the link",
                facts(None, None, None, &[]),
                Ok(None),
            ),
            (
                "linked to it already: a retry",
                facts(Some("cus_1"), Some(org), Some(org), &one),
                Ok(Some("sub_a")),
            ),
            (
                "the organization has another customer",
                facts(Some("cus_2"), None, None, &one),
                Err(AdoptionRefusal::OrgHasAnotherCustomer {
                    org,
                    linked: "cus_2".into(),
                }),
            ),
            (
                "another organization has the customer",
                facts(None, Some(other), None, &one),
                Err(AdoptionRefusal::CustomerOfAnotherOrg {
                    customer: "cus_1".into(),
                    owner: other,
                }),
            ),
            (
                "the customer's metadata names another organization",
                facts(None, None, Some(other), &one),
                Err(AdoptionRefusal::CustomerOfAnotherOrg {
                    customer: "cus_1".into(),
                    owner: other,
                }),
            ),
            (
                "a price the catalog does not know",
                facts(None, None, None, &unknown),
                Err(AdoptionRefusal::UnknownSeatPrice {
                    subscription: "sub_foreign".into(),
                }),
            ),
            (
                "two live subscriptions",
                facts(None, None, None, &two),
                Err(AdoptionRefusal::SeveralLiveSubscriptions {
                    customer: "cus_1".into(),
                    live: vec!["sub_a".into(), "sub_b".into()],
                }),
            ),
        ];
        let catalog = catalog();
        let seat_price = |price: &str| catalog.seat_price(price);
        for (name, facts, want) in cases {
            let got = decide(&facts, &seat_price).map(|s| s.map(|s| s.id.as_str()));
            assert_eq!(got, want, "{name}");
        }
    }
}
