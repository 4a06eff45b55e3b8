//! Checkout: the sessions that start a subscription or buy credits, and
//! what a new subscription should start from.
//!
//! An organization has one live subscription, by construction:
//! - checkout is refused while Stripe shows the organization's customer a
//!   subscription that is not over (read live, not from our copy);
//! - at most one subscription Checkout session is open per organization:
//!   the same request again gets the open session back, and a different
//!   one expires it first, so an older page can no longer be paid;
//! - the seats bought are at least the seats in use, so paying never locks
//!   anyone out.
//!
//! A per-unit item with a minimum is a commitment bought at checkout: the
//! minimum, or more if asked for. It never goes below the minimum while the
//! subscription runs (see [`super::upkeep`]).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::catalog::{Catalog, SignupPolicy};
use super::credits::Micros;
use super::ids::{OrgId, RedirectUrl, UserId};
use super::metadata::{
    CREDIT_PURCHASE_TYPE, ORG_ID_KEY, PLAN_KEY, PURCHASER_KEY, SEATS_TYPE, TYPE_KEY,
};
use super::operation::{CheckoutSale, CheckoutSession, PriceQuantity, Refusal, Step};
use super::pricing::{BillingCycle, PlanId};
use super::quoted;
use super::reason::{ErrorReason, Refused};
use super::subscription::Subscription;
use super::subscription_sync::ProviderSubscription;

/// The seats one checkout may buy.
pub const CHECKOUT_SEATS: RangeInclusive<i64> = 1..=100;

/// A checkout the caller asked for, its fields parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutOrder {
    pub plan: PlanId,
    pub cycle: BillingCycle,
    pub seats: i64,
    /// Units of the plan's per-unit items to commit to, by item id; an item
    /// with a minimum not named here is bought at its minimum.
    pub unit_items: BTreeMap<String, i64>,
    #[serde(serialize_with = "url_text")]
    pub success_url: RedirectUrl,
    #[serde(serialize_with = "url_text")]
    pub cancel_url: RedirectUrl,
}

fn url_text<S: serde::Serializer>(url: &RedirectUrl, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(url.as_str())
}

/// Where a Checkout session stands at Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Open,
    /// Paid: its subscription exists or is about to.
    Complete,
    Expired,
}

/// The organization's last subscription session, as Stripe reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSession {
    pub id: String,
    pub url: String,
    /// The request it was made for (see [`CheckoutPlan::Create`]).
    pub request: String,
    pub status: SessionStatus,
}

/// Everything a checkout decision reads besides the order.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutContext<'a> {
    pub org: OrgId,
    pub purchaser: Option<&'a UserId>,
    pub customer_id: &'a str,
    pub used_seats: i64,
    /// The customer's subscriptions as Stripe lists them now.
    pub live_subscriptions: &'a [ProviderSubscription],
    pub last_session: Option<&'a OpenSession>,
    pub signup: SignupPolicy,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutPlan {
    /// The session already open for this very request.
    Reuse { url: String },
    /// A new session, after expiring a different open one if there is one.
    /// `request` names the request, to recognise it when it comes again.
    Create { steps: Vec<Step>, request: String },
}

pub fn plan_checkout(
    order: &CheckoutOrder,
    catalog: &Catalog,
    context: &CheckoutContext<'_>,
) -> Result<CheckoutPlan, Refusal> {
    let lines = checkout_lines(order, catalog, context.signup)?;
    let plan = catalog
        .plan(&order.plan)
        .ok_or_else(|| Refusal::invalid("plan", "is not in the catalog"))?;
    if order.seats < context.used_seats {
        return Err(Refusal::NotNow(
            Refused::new(
                ErrorReason::SeatsInUse,
                format!(
                    "{} seats are in use; buy at least {} or remove members first",
                    context.used_seats, context.used_seats
                ),
            )
            .with("seatsUsed", context.used_seats)
            .with("seatsRequested", order.seats),
        ));
    }
    if let Some(running) = context
        .live_subscriptions
        .iter()
        .find(|s| !s.is_over(context.now))
    {
        return Err(Refusal::not_now(
            ErrorReason::SubscriptionExists,
            format!(
                "the organization already has a subscription ({}); change it instead",
                running.status_raw
            ),
        ));
    }
    let request =
        serde_json::to_string(&(order, context.purchaser.map(UserId::as_str))).unwrap_or_default();
    let mut steps = Vec::new();
    match context.last_session {
        Some(session) if session.status == SessionStatus::Complete => {
            return Err(Refusal::not_now(
                ErrorReason::CheckoutBeingSetUp,
                "a checkout for this organization was just paid; its subscription is being set up",
            ));
        }
        Some(session) if session.status == SessionStatus::Open && session.request == request => {
            return Ok(CheckoutPlan::Reuse {
                url: session.url.clone(),
            });
        }
        Some(session) if session.status == SessionStatus::Open => {
            steps.push(Step::ExpireCheckoutSession {
                session_id: session.id.clone(),
            });
        }
        Some(_) | None => {}
    }
    let mut metadata = BTreeMap::from([
        (ORG_ID_KEY.to_owned(), context.org.to_string()),
        (PLAN_KEY.to_owned(), plan.id.to_string()),
        (TYPE_KEY.to_owned(), SEATS_TYPE.to_owned()),
    ]);
    if let Some(user) = context.purchaser {
        metadata.insert(PURCHASER_KEY.to_owned(), user.to_string());
    }
    steps.push(Step::CreateCheckoutSession(CheckoutSession {
        customer_id: context.customer_id.to_owned(),
        sale: CheckoutSale::Subscription {
            lines,
            subscription_metadata: metadata.clone(),
        },
        metadata,
        success_url: order.success_url.as_str().to_owned(),
        cancel_url: order.cancel_url.as_str().to_owned(),
    }));
    Ok(CheckoutPlan::Create { steps, request })
}

/// What an order sells, checked against the catalog: the seat price and
/// the per-unit commitments, on a cycle offered for sign-up. Checked before
/// anything is recorded or sent, and again when the checkout is planned.
pub fn checkout_lines(
    order: &CheckoutOrder,
    catalog: &Catalog,
    signup: SignupPolicy,
) -> Result<Vec<PriceQuantity>, Refusal> {
    if !CHECKOUT_SEATS.contains(&order.seats) {
        return Err(Refusal::invalid(
            "seats",
            format!(
                "must be from {} to {}",
                CHECKOUT_SEATS.start(),
                CHECKOUT_SEATS.end()
            ),
        ));
    }
    let plan = catalog
        .plan(&order.plan)
        .ok_or_else(|| Refusal::invalid("plan", "is not in the catalog"))?;
    let price = plan
        .price(order.cycle)
        .filter(|price| price.offered_for_signup(signup))
        .ok_or_else(|| {
            Refusal::invalid(
                "billing_cycle",
                format!(
                    "{} billing is not offered for {}",
                    order.cycle.as_str(),
                    plan.display_name
                ),
            )
        })?;
    let price_id = price.stripe_price_id.clone().ok_or_else(|| {
        Refusal::not_now(
            ErrorReason::PriceNotConfigured,
            format!(
                "no Stripe price is configured for {} {}",
                plan.id,
                order.cycle.as_str()
            ),
        )
    })?;
    if let Some(unknown) = order
        .unit_items
        .keys()
        .find(|id| plan.unit_item(id).is_none())
    {
        return Err(Refusal::invalid(
            "unit_items",
            format!(
                "the {} plan has no per-unit item {}",
                plan.display_name,
                quoted(unknown)
            ),
        ));
    }
    let mut lines = vec![PriceQuantity {
        price_id,
        quantity: order.seats,
    }];
    for unit in &plan.unit_items {
        let quantity = order
            .unit_items
            .get(&unit.id)
            .copied()
            .unwrap_or(unit.minimum);
        if quantity < unit.minimum {
            return Err(Refusal::invalid(
                "unit_items",
                format!("{} must be at least {}", unit.id, unit.minimum),
            ));
        }
        if quantity == 0 {
            continue;
        }
        let price_id = unit
            .price(order.cycle)
            .and_then(|price| price.stripe_price_id.clone())
            .ok_or_else(|| {
                Refusal::not_now(
                    ErrorReason::PriceNotConfigured,
                    format!(
                        "no Stripe price is configured for {} billed {}",
                        unit.id,
                        order.cycle.as_str()
                    ),
                )
            })?;
        lines.push(PriceQuantity { price_id, quantity });
    }
    Ok(lines)
}

/// The session of a credit purchase: one payment of `amount`, whose
/// metadata names the organization and the buyer on the session and on
/// the payment, so either event credits it.
pub fn credit_purchase_session(
    org: OrgId,
    purchaser: Option<&UserId>,
    customer_id: &str,
    amount: Micros,
    catalog: &Catalog,
    success_url: &RedirectUrl,
    cancel_url: &RedirectUrl,
) -> Result<Step, Refusal> {
    let amount_minor = amount
        .whole_minor()
        .ok_or_else(|| Refusal::invalid("amount_micros", "must be whole cents"))?;
    let mut metadata = BTreeMap::from([
        (ORG_ID_KEY.to_owned(), org.to_string()),
        (TYPE_KEY.to_owned(), CREDIT_PURCHASE_TYPE.to_owned()),
    ]);
    if let Some(user) = purchaser {
        metadata.insert(PURCHASER_KEY.to_owned(), user.to_string());
    }
    Ok(Step::CreateCheckoutSession(CheckoutSession {
        customer_id: customer_id.to_owned(),
        sale: CheckoutSale::Payment {
            currency: catalog.currency().as_str().to_owned(),
            amount_minor,
            product_name: "Prepaid credits".into(),
        },
        metadata,
        success_url: success_url.as_str().to_owned(),
        cancel_url: cancel_url.as_str().to_owned(),
    }))
}

/// What a new checkout should offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResubscribeDefaults {
    pub plan: PlanId,
    pub cycle: BillingCycle,
    pub seats: i64,
}

/// The plan, cycle and seats of the subscription that ended last, with at
/// least the seats in use now; with none ended, one seat, yearly, on the
/// organization's plan. A `canceled` subscription counts as ended whatever
/// its `ended_at` says.
pub fn resubscribe_defaults(
    subscriptions: &[Subscription],
    org_plan: &PlanId,
    used_seats: i64,
    now: DateTime<Utc>,
) -> ResubscribeDefaults {
    let last_ended = subscriptions
        .iter()
        .filter(|s| s.is_over(now))
        .max_by_key(|s| (s.ended_at.unwrap_or(s.created_at), s.created_at));
    match last_ended {
        Some(ended) => ResubscribeDefaults {
            plan: ended.plan.clone(),
            cycle: ended.billing_cycle.unwrap_or(BillingCycle::Yearly),
            seats: ended.paid_seats.max(used_seats).max(1),
        },
        None => ResubscribeDefaults {
            plan: org_plan.clone(),
            cycle: BillingCycle::Yearly,
            seats: used_seats.max(1),
        },
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::test_fixtures::{catalog, live, subscription};

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn order(plan: &str, cycle: BillingCycle, seats: i64) -> CheckoutOrder {
        CheckoutOrder {
            plan: PlanId::new(plan),
            cycle,
            seats,
            unit_items: BTreeMap::new(),
            success_url: RedirectUrl::parse("https://app.example.com/done").unwrap(),
            cancel_url: RedirectUrl::parse("https://app.example.com/billing").unwrap(),
        }
    }

    fn context<'a>(
        subs: &'a [ProviderSubscription],
        last: Option<&'a OpenSession>,
    ) -> CheckoutContext<'a> {
        CheckoutContext {
            org: OrgId::generate(),
            purchaser: None,
            customer_id: "cus_1",
            used_seats: 2,
            live_subscriptions: subs,
            last_session: last,
            signup: SignupPolicy {
                monthly_enabled: true,
            },
            now: now(),
        }
    }

    fn created(plan: Result<CheckoutPlan, Refusal>) -> (Vec<Step>, String) {
        match plan {
            Ok(CheckoutPlan::Create { steps, request }) => (steps, request),
            other => panic!("not a new session: {other:?}"),
        }
    }

    fn lines(step: &Step) -> Vec<(String, i64)> {
        match step {
            Step::CreateCheckoutSession(CheckoutSession {
                sale: CheckoutSale::Subscription { lines, .. },
                ..
            }) => lines
                .iter()
                .map(|l| (l.price_id.clone(), l.quantity))
                .collect(),
            other => panic!("not a subscription session: {other:?}"),
        }
    }

    #[test]
    fn a_first_checkout_sells_the_seat_price_with_the_organization_in_the_metadata() {
        let catalog = catalog();
        let (steps, _) = created(plan_checkout(
            &order("teams", BillingCycle::Monthly, 3),
            &catalog,
            &context(&[], None),
        ));
        assert_eq!(lines(&steps[0]), [("price_teams_monthly".to_owned(), 3)]);
        let Step::CreateCheckoutSession(session) = &steps[0] else {
            unreachable!()
        };
        assert_eq!(session.metadata[TYPE_KEY], SEATS_TYPE);
        assert_eq!(session.metadata[PLAN_KEY], "teams");
    }

    #[test]
    fn a_unit_minimum_is_a_commitment_bought_at_checkout() {
        let catalog = catalog();
        let (steps, _) = created(plan_checkout(
            &order("enterprise", BillingCycle::Yearly, 2),
            &catalog,
            &context(&[], None),
        ));
        assert_eq!(
            lines(&steps[0]),
            [
                ("price_enterprise_yearly".to_owned(), 2),
                ("price_hosted_instances_yearly".to_owned(), 3)
            ]
        );
        let mut more = order("enterprise", BillingCycle::Yearly, 2);
        more.unit_items.insert("hosted_instances".into(), 5);
        let (steps, _) = created(plan_checkout(&more, &catalog, &context(&[], None)));
        assert_eq!(lines(&steps[0])[1].1, 5);
        more.unit_items.insert("hosted_instances".into(), 2);
        assert!(matches!(
            plan_checkout(&more, &catalog, &context(&[], None)),
            Err(Refusal::Invalid {
                field: "unit_items",
                ..
            })
        ));
    }

    #[test]
    fn one_live_subscription_and_one_open_session_per_organization() {
        let catalog = catalog();
        let wanted = order("teams", BillingCycle::Monthly, 3);
        let (_, request) = created(plan_checkout(&wanted, &catalog, &context(&[], None)));
        let session = |status, request: &str| OpenSession {
            id: "cs_1".into(),
            url: "https://checkout.stripe.test/c/cs_1".into(),
            request: request.into(),
            status,
        };
        // The same request while its session is open: the same session.
        let open = session(SessionStatus::Open, &request);
        assert_eq!(
            plan_checkout(&wanted, &catalog, &context(&[], Some(&open))),
            Ok(CheckoutPlan::Reuse {
                url: open.url.clone()
            })
        );
        // Another request: the open session is expired first.
        let other = order("teams", BillingCycle::Yearly, 3);
        let (steps, _) = created(plan_checkout(&other, &catalog, &context(&[], Some(&open))));
        assert_eq!(
            steps[0],
            Step::ExpireCheckoutSession {
                session_id: "cs_1".into()
            }
        );
        // An expired session is just history.
        let expired = session(SessionStatus::Expired, &request);
        let (steps, _) = created(plan_checkout(
            &wanted,
            &catalog,
            &context(&[], Some(&expired)),
        ));
        assert_eq!(steps.len(), 1);
        // A paid session, or a subscription Stripe shows, refuses a second one.
        let paid = session(SessionStatus::Complete, &request);
        assert!(plan_checkout(&wanted, &catalog, &context(&[], Some(&paid))).is_err());
        let running = [live(3, now())];
        let refused = plan_checkout(&wanted, &catalog, &context(&running, None));
        assert!(
            matches!(refused, Err(Refusal::NotNow(Refused { message: m, .. })) if m.contains("already has"))
        );
        // One that is over does not.
        let mut ended = live(3, now());
        ended.status_raw = "canceled".into();
        ended.ended_at = Some(now() + TimeDelta::seconds(3));
        assert!(plan_checkout(&wanted, &catalog, &context(&[ended], None)).is_ok());
    }

    #[test]
    fn a_checkout_buys_at_least_the_seats_in_use_and_only_offered_cycles() {
        let catalog = catalog();
        let refused = plan_checkout(
            &order("teams", BillingCycle::Monthly, 1),
            &catalog,
            &context(&[], None),
        );
        assert!(
            matches!(refused, Err(Refusal::NotNow(Refused { message: m, .. })) if m.contains("2 seats are in use"))
        );
        for seats in [0, 101] {
            assert!(matches!(
                plan_checkout(
                    &order("teams", BillingCycle::Monthly, seats),
                    &catalog,
                    &context(&[], None)
                ),
                Err(Refusal::Invalid { field: "seats", .. })
            ));
        }
        let mut no_monthly = context(&[], None);
        no_monthly.signup.monthly_enabled = false;
        assert!(matches!(
            plan_checkout(
                &order("teams", BillingCycle::Monthly, 3),
                &catalog,
                &no_monthly
            ),
            Err(Refusal::Invalid {
                field: "billing_cycle",
                ..
            })
        ));
    }

    #[test]
    fn resubscribe_defaults_follow_the_last_ended_subscription() {
        let teams = PlanId::new("teams");
        let mut older = subscription("canceled", 4, now() - TimeDelta::days(400));
        older.ended_at = Some(now() - TimeDelta::days(100));
        let mut last = subscription("canceled", 2, now() - TimeDelta::days(60));
        last.billing_cycle = Some(BillingCycle::Yearly);
        // Stripe's test clock put its end a moment ahead of ours.
        last.ended_at = Some(now() + TimeDelta::seconds(2));
        let running = subscription("active", 9, now());
        // (case, subscriptions, used, plan, cycle, seats)
        let table = [
            (
                "none: one seat yearly",
                vec![],
                0,
                "teams",
                BillingCycle::Yearly,
                1,
            ),
            (
                "none, three in use",
                vec![],
                3,
                "teams",
                BillingCycle::Yearly,
                3,
            ),
            (
                "the canceled one ended last",
                vec![older.clone(), last.clone(), running.clone()],
                1,
                "teams",
                BillingCycle::Yearly,
                2,
            ),
            (
                "at least the seats in use",
                vec![older.clone()],
                6,
                "teams",
                BillingCycle::Monthly,
                6,
            ),
            (
                "a running one is not ended",
                vec![running],
                1,
                "teams",
                BillingCycle::Yearly,
                1,
            ),
        ];
        for (case, subs, used, plan, cycle, seats) in table {
            let defaults = resubscribe_defaults(&subs, &teams, used, now());
            assert_eq!(
                defaults,
                ResubscribeDefaults {
                    plan: PlanId::new(plan),
                    cycle,
                    seats
                },
                "{case}"
            );
        }
    }
}
