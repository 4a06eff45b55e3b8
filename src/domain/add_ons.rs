//! What the catalog sells besides seats: add-ons run per instance and paid
//! from credits (a hosted agent), and quantity-billed items Stripe charges
//! per unit on the plan's subscription (hosted instances beyond an
//! allowance).

use serde::Deserialize;

use super::credits::Micros;
use super::money::{Currency, Money};
use super::pricing::BillingCycle;

/// A credit-funded add-on, bought one subscription per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddOn {
    pub id: String,
    pub display_name: String,
    /// The feature `CheckEntitlement` answers for it ("instance").
    pub feature: String,
    pub monthly_price: Micros,
    /// Free days each user gets once per organization; 0 for none.
    pub trial_days: u32,
}

/// How Stripe settles a quantity change within the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proration {
    /// Prorate and invoice the difference at once.
    AlwaysInvoice,
    /// Prorate onto the next invoice.
    CreateProrations,
    /// No proration: the new quantity is billed from the next period.
    None,
}

impl Proration {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AlwaysInvoice => "always_invoice",
            Self::CreateProrations => "create_prorations",
            Self::None => "none",
        }
    }
}

/// A plan's per-unit item, billed by Stripe on the plan's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitItem {
    pub id: String,
    pub display_name: String,
    /// Units included with the plan at no charge.
    pub included: i64,
    /// The fewest units billed once the item is on the subscription.
    pub minimum: i64,
    pub prices: Vec<UnitPrice>,
    pub on_increase: Proration,
    pub on_decrease: Proration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPrice {
    pub cycle: BillingCycle,
    pub amount: Money,
    pub stripe_price_id: Option<String>,
}

impl UnitItem {
    /// The billed quantity for a reported count: what exceeds the allowance,
    /// but never under the minimum.
    pub fn billed_quantity(&self, count: i64) -> i64 {
        (count - self.included).max(0).max(self.minimum)
    }

    pub fn price(&self, cycle: BillingCycle) -> Option<&UnitPrice> {
        self.prices.iter().find(|p| p.cycle == cycle)
    }

    /// Whether `stripe_price_id` is one of this item's prices.
    pub fn prices_stripe(&self, stripe_price_id: &str) -> bool {
        self.prices
            .iter()
            .any(|p| p.stripe_price_id.as_deref() == Some(stripe_price_id))
    }

    pub fn proration(&self, from: i64, to: i64) -> Proration {
        if to > from {
            self.on_increase
        } else {
            self.on_decrease
        }
    }
}

/// The file shapes, validated by the catalog.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddOnFile {
    id: String,
    display_name: String,
    feature: String,
    monthly_price_minor: i64,
    #[serde(default)]
    trial_days: u32,
}

impl AddOnFile {
    pub(super) fn into_add_on(self) -> Result<AddOn, String> {
        if self.id.is_empty() || self.feature.is_empty() {
            return Err("add-ons need an id and a feature".into());
        }
        if self.monthly_price_minor < 0 {
            return Err(format!("add-on {} has a negative price", self.id));
        }
        Ok(AddOn {
            monthly_price: Micros::from_minor(self.monthly_price_minor),
            id: self.id,
            display_name: self.display_name,
            feature: self.feature,
            trial_days: self.trial_days,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnitItemFile {
    id: String,
    display_name: String,
    #[serde(default)]
    included: i64,
    #[serde(default)]
    minimum: i64,
    #[serde(default = "invoice_at_once")]
    on_increase: Proration,
    #[serde(default = "no_proration")]
    on_decrease: Proration,
    prices: Vec<UnitPriceFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitPriceFile {
    cycle: BillingCycle,
    amount_minor: i64,
    #[serde(default)]
    stripe_price_id: Option<String>,
}

fn invoice_at_once() -> Proration {
    Proration::AlwaysInvoice
}

fn no_proration() -> Proration {
    Proration::None
}

impl UnitItemFile {
    pub(super) fn into_unit_item(self, currency: &Currency) -> Result<UnitItem, String> {
        let id = &self.id;
        if id.is_empty() {
            return Err("unit items need an id".into());
        }
        if self.included < 0 || self.minimum < 0 {
            return Err(format!(
                "unit item {id}: included and minimum must not be negative"
            ));
        }
        let mut prices: Vec<UnitPrice> = Vec::with_capacity(self.prices.len());
        for price in self.prices {
            if price.amount_minor < 0 || prices.iter().any(|p| p.cycle == price.cycle) {
                return Err(format!(
                    "unit item {id}: prices must be non-negative, one per cycle"
                ));
            }
            prices.push(UnitPrice {
                cycle: price.cycle,
                amount: Money::new(price.amount_minor, currency.clone()),
                stripe_price_id: price.stripe_price_id.filter(|s| !s.is_empty()),
            });
        }
        Ok(UnitItem {
            id: self.id,
            display_name: self.display_name,
            included: self.included,
            minimum: self.minimum,
            prices,
            on_increase: self.on_increase,
            on_decrease: self.on_decrease,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(included: i64, minimum: i64) -> UnitItem {
        UnitItem {
            id: "hosted_instances".into(),
            display_name: "Hosted instances".into(),
            included,
            minimum,
            prices: vec![],
            on_increase: Proration::AlwaysInvoice,
            on_decrease: Proration::None,
        }
    }

    #[test]
    fn billed_quantity_is_the_excess_over_the_allowance_but_at_least_the_minimum() {
        // (included, minimum, count, billed)
        let table = [
            (2, 0, 0, 0),
            (2, 0, 2, 0),
            (2, 0, 3, 1),
            (2, 0, 7, 5),
            (2, 3, 0, 3),
            (2, 3, 4, 3),
            (2, 3, 6, 4),
            (0, 0, 1, 1),
        ];
        for (included, minimum, count, billed) in table {
            assert_eq!(
                item(included, minimum).billed_quantity(count),
                billed,
                "included {included}, minimum {minimum}, count {count}"
            );
        }
    }

    #[test]
    fn increases_and_decreases_take_their_own_proration() {
        let item = item(0, 0);
        assert_eq!(item.proration(1, 3), Proration::AlwaysInvoice);
        assert_eq!(item.proration(3, 1), Proration::None);
    }
}
