//! The plan catalog: plans, their prices per billing cycle, features and
//! limits. Plans are data loaded from a TOML file, not code, so one build
//! serves a seat-priced product and a flat-priced SaaS alike.

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};

use super::add_ons::{AddOn, AddOnFile, UnitItem, UnitItemFile};
use super::credits::{CreditPolicy, Micros};
use super::money::{Currency, Money};
use super::pricing::{BillingCycle, KnownSeatPrice, PlanId};
use super::{InvalidValue, quoted};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingModel {
    PerSeat,
    Flat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub cycle: BillingCycle,
    pub amount: Money,
    /// Whether the catalog offers this cycle to new customers at all.
    pub self_serve: bool,
    pub stripe_price_id: Option<String>,
}

impl Price {
    /// Whether a new customer may sign up for this price themselves, given
    /// the deployment's sign-up policy. Existing customers keep their cycle
    /// whatever this says.
    pub fn offered_for_signup(&self, policy: SignupPolicy) -> bool {
        self.self_serve
            && match self.cycle {
                BillingCycle::Monthly => policy.monthly_enabled,
                BillingCycle::Yearly => true,
            }
    }
}

/// Deployment switches over what new customers may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignupPolicy {
    pub monthly_enabled: bool,
}

/// A numeric limit of a plan; `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub name: String,
    pub value: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: PlanId,
    pub display_name: String,
    pub pricing: PricingModel,
    pub prices: Vec<Price>,
    pub features: Vec<String>,
    pub limits: Vec<Limit>,
    /// Whether the plan enforces an organization's model deny list and
    /// provider allow list (Enterprise does; Teams only stores them).
    pub enforces_model_restrictions: bool,
    /// Stripe prices of seats given at $0 (for example to a partner). They
    /// count as seats of this plan but never decide its cycle.
    pub free_seat_stripe_price_ids: Vec<String>,
    /// Whether organizations on this plan may switch add-on instances off.
    pub instance_opt_out: bool,
    /// Items billed per unit on the plan's subscription.
    pub unit_items: Vec<UnitItem>,
}

impl Plan {
    pub fn price(&self, cycle: BillingCycle) -> Option<&Price> {
        self.prices.iter().find(|p| p.cycle == cycle)
    }

    pub fn includes_feature(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    pub fn unit_item(&self, id: &str) -> Option<&UnitItem> {
        self.unit_items.iter().find(|item| item.id == id)
    }
}

/// Which Stripe price a deployment setting fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSlot<'a> {
    Seat,
    UnitItem(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    currency: Currency,
    default_plan: PlanId,
    plans: Vec<Plan>,
    credits: CreditPolicy,
    add_ons: Vec<AddOn>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog is not valid TOML of the expected shape: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("the catalog is inconsistent: {0}")]
    Inconsistent(String),
}

impl Catalog {
    /// The catalog built into the binary: Teams and Enterprise, per seat, USD.
    pub const DEFAULT_TOML: &'static str = include_str!("../../catalogs/default.toml");

    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text)?;
        file.into_catalog()
    }

    /// Fills in Stripe price ids from deployment settings, which win over
    /// ids written in the file.
    pub fn with_stripe_price_ids(
        mut self,
        lookup: impl Fn(&PlanId, PriceSlot<'_>, BillingCycle) -> Option<String>,
    ) -> Self {
        for plan in &mut self.plans {
            for price in &mut plan.prices {
                if let Some(id) = lookup(&plan.id, PriceSlot::Seat, price.cycle) {
                    price.stripe_price_id = Some(id);
                }
            }
            for item in &mut plan.unit_items {
                for price in &mut item.prices {
                    if let Some(id) = lookup(&plan.id, PriceSlot::UnitItem(&item.id), price.cycle) {
                        price.stripe_price_id = Some(id);
                    }
                }
            }
        }
        self
    }

    pub fn credits(&self) -> &CreditPolicy {
        &self.credits
    }

    pub fn add_ons(&self) -> &[AddOn] {
        &self.add_ons
    }

    pub fn add_on(&self, id: &str) -> Option<&AddOn> {
        self.add_ons.iter().find(|a| a.id == id)
    }

    /// The add-on a feature name belongs to, if any.
    pub fn add_on_for_feature(&self, feature: &str) -> Option<&AddOn> {
        self.add_ons.iter().find(|a| a.feature == feature)
    }

    pub fn currency(&self) -> &Currency {
        &self.currency
    }

    pub fn default_plan(&self) -> &PlanId {
        &self.default_plan
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    pub fn plan(&self, id: &PlanId) -> Option<&Plan> {
        self.plans.iter().find(|p| &p.id == id)
    }

    /// Parses a caller's plan id against the catalog.
    pub fn parse_plan_id(&self, raw: &str) -> Result<PlanId, InvalidValue> {
        if raw.is_empty() {
            return Err(InvalidValue::new("is required"));
        }
        self.plans
            .iter()
            .find(|p| p.id.as_str() == raw)
            .map(|p| p.id.clone())
            .ok_or_else(|| {
                let known: Vec<&str> = self.plans.iter().map(|p| p.id.as_str()).collect();
                InvalidValue::new(format!(
                    "unknown plan {}; the catalog has {}",
                    quoted(raw),
                    known.join(", ")
                ))
            })
    }

    /// The plan and cycle of a Stripe seat price (paid or free); `None` for
    /// any other price, such as an add-on's.
    pub fn seat_price(&self, stripe_price_id: &str) -> Option<KnownSeatPrice> {
        self.plans.iter().find_map(|plan| {
            let paid = plan
                .prices
                .iter()
                .find(|price| price.stripe_price_id.as_deref() == Some(stripe_price_id))
                .map(|price| price.cycle);
            let free = || {
                plan.free_seat_stripe_price_ids
                    .iter()
                    .any(|id| id == stripe_price_id)
                    // A free seat's own interval wins; this is only a default.
                    .then_some(BillingCycle::Monthly)
            };
            paid.or_else(free).map(|cycle| KnownSeatPrice {
                plan: plan.id.clone(),
                cycle,
            })
        })
    }

    /// Whether any plan or add-on names this feature.
    pub fn knows_feature(&self, feature: &str) -> bool {
        self.plans.iter().any(|p| p.includes_feature(feature))
            || self.add_on_for_feature(feature).is_some()
    }
}

/// The file's shape; validated into [`Catalog`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    currency: Currency,
    default_plan: PlanId,
    plans: Vec<PlanFile>,
    #[serde(default)]
    credits: Option<CreditsFile>,
    #[serde(default)]
    add_ons: Vec<AddOnFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditsFile {
    #[serde(default)]
    free_models: Vec<String>,
    min_purchase_minor: Option<i64>,
    max_purchase_minor: Option<i64>,
    low_balance_threshold_minor: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    id: PlanId,
    display_name: String,
    pricing: PricingModel,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    limits: BTreeMap<String, LimitFile>,
    #[serde(default)]
    enforces_model_restrictions: bool,
    #[serde(default)]
    free_seat_stripe_price_ids: Vec<String>,
    #[serde(default)]
    instance_opt_out: bool,
    #[serde(default)]
    unit_items: Vec<UnitItemFile>,
    prices: Vec<PriceFile>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LimitFile {
    Count(i64),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    cycle: BillingCycle,
    amount_minor: i64,
    #[serde(default = "offered_by_default")]
    self_serve: bool,
    #[serde(default)]
    stripe_price_id: Option<String>,
}

fn offered_by_default() -> bool {
    true
}

impl CatalogFile {
    fn into_catalog(self) -> Result<Catalog, CatalogError> {
        let inconsistent = |msg: String| Err(CatalogError::Inconsistent(msg));
        if self.plans.is_empty() {
            return inconsistent("it has no plans".into());
        }
        let mut ids = HashSet::new();
        let mut plans = Vec::with_capacity(self.plans.len());
        for plan in self.plans {
            let id = plan.id.clone();
            if id.as_str().is_empty() || !ids.insert(id.clone()) {
                return inconsistent(format!("plan id {id:?} is empty or repeated"));
            }
            if plan.prices.is_empty() {
                return inconsistent(format!("plan {id} has no prices"));
            }
            let mut cycles = HashSet::new();
            let mut prices = Vec::with_capacity(plan.prices.len());
            for price in plan.prices {
                if !cycles.insert(price.cycle) {
                    return inconsistent(format!(
                        "plan {id} has two {} prices",
                        price.cycle.as_str()
                    ));
                }
                if price.amount_minor < 0 {
                    return inconsistent(format!("plan {id} has a negative price"));
                }
                prices.push(Price {
                    cycle: price.cycle,
                    amount: Money::new(price.amount_minor, self.currency.clone()),
                    self_serve: price.self_serve,
                    stripe_price_id: price.stripe_price_id.filter(|s| !s.is_empty()),
                });
            }
            let mut limits = Vec::with_capacity(plan.limits.len());
            for (name, value) in plan.limits {
                let value = match value {
                    LimitFile::Count(n) if n >= 0 => Some(n),
                    LimitFile::Word(word) if word == "unlimited" => None,
                    LimitFile::Count(_) | LimitFile::Word(_) => {
                        return inconsistent(format!(
                            "plan {id} limit {name} must be a count or \"unlimited\""
                        ));
                    }
                };
                limits.push(Limit { name, value });
            }
            let mut unit_items: Vec<UnitItem> = Vec::with_capacity(plan.unit_items.len());
            for item in plan.unit_items {
                let item = item
                    .into_unit_item(&self.currency)
                    .map_err(|msg| CatalogError::Inconsistent(format!("plan {id}: {msg}")))?;
                if unit_items.iter().any(|other| other.id == item.id) {
                    return inconsistent(format!("plan {id} has two unit items {}", item.id));
                }
                unit_items.push(item);
            }
            plans.push(Plan {
                id,
                display_name: plan.display_name,
                pricing: plan.pricing,
                prices,
                features: plan.features,
                limits,
                enforces_model_restrictions: plan.enforces_model_restrictions,
                free_seat_stripe_price_ids: plan.free_seat_stripe_price_ids,
                instance_opt_out: plan.instance_opt_out,
                unit_items,
            });
        }
        if !ids.contains(&self.default_plan) {
            return inconsistent(format!(
                "default plan {} is not in the catalog",
                self.default_plan
            ));
        }
        let credits = match self.credits {
            None => CreditPolicy::default(),
            Some(file) => {
                let defaults = CreditPolicy::default();
                let bound = |minor: Option<i64>, default: Micros| match minor {
                    None => Ok(default),
                    Some(minor) if minor > 0 => Ok(Micros::from_minor(minor)),
                    Some(_) => Err(CatalogError::Inconsistent(
                        "credit purchase bounds must be positive".into(),
                    )),
                };
                let policy = CreditPolicy {
                    free_models: file
                        .free_models
                        .iter()
                        .map(|m| m.trim().to_lowercase())
                        .collect(),
                    min_purchase: bound(file.min_purchase_minor, defaults.min_purchase)?,
                    max_purchase: bound(file.max_purchase_minor, defaults.max_purchase)?,
                    low_balance_threshold: match file.low_balance_threshold_minor {
                        None => defaults.low_balance_threshold,
                        Some(minor) if minor >= 0 => Micros::from_minor(minor),
                        Some(_) => {
                            return inconsistent(
                                "the low-balance threshold must not be negative".into(),
                            );
                        }
                    },
                };
                if policy.min_purchase > policy.max_purchase {
                    return inconsistent("the smallest credit purchase exceeds the largest".into());
                }
                policy
            }
        };
        let mut add_ons: Vec<AddOn> = Vec::with_capacity(self.add_ons.len());
        for add_on in self.add_ons {
            let add_on = add_on.into_add_on().map_err(CatalogError::Inconsistent)?;
            let clash = add_ons
                .iter()
                .any(|a| a.id == add_on.id || a.feature == add_on.feature)
                || plans.iter().any(|p| p.includes_feature(&add_on.feature));
            if clash {
                return inconsistent(format!(
                    "add-on {} repeats an id or a feature the catalog already has",
                    add_on.id
                ));
            }
            add_ons.push(add_on);
        }
        Ok(Catalog {
            currency: self.currency,
            default_plan: self.default_plan,
            plans,
            credits,
            add_ons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(catalog: &Catalog, plan: &str, cycle: BillingCycle) -> i64 {
        let plan = catalog.plan(&PlanId::new(plan)).unwrap();
        plan.price(cycle).unwrap().amount.amount_minor
    }

    #[test]
    fn default_catalog_prices_teams_and_enterprise_per_seat() {
        let catalog = Catalog::from_toml(Catalog::DEFAULT_TOML).unwrap();
        // Trials start on Enterprise; checkout may choose Teams.
        assert_eq!(catalog.default_plan().as_str(), "enterprise");
        assert_eq!(amount(&catalog, "teams", BillingCycle::Monthly), 1800);
        assert_eq!(amount(&catalog, "teams", BillingCycle::Yearly), 18000);
        assert_eq!(amount(&catalog, "enterprise", BillingCycle::Monthly), 7200);
        assert_eq!(amount(&catalog, "enterprise", BillingCycle::Yearly), 72000);
        assert!(
            catalog
                .plans()
                .iter()
                .all(|p| p.pricing == PricingModel::PerSeat)
        );
        let enterprise = catalog.plan(&PlanId::new("enterprise")).unwrap();
        assert!(enterprise.enforces_model_restrictions);
    }

    #[test]
    fn monthly_signup_can_be_switched_off() {
        let catalog = Catalog::from_toml(Catalog::DEFAULT_TOML).unwrap();
        let teams = catalog.plan(&PlanId::new("teams")).unwrap();
        let monthly = teams.price(BillingCycle::Monthly).unwrap();
        let yearly = teams.price(BillingCycle::Yearly).unwrap();
        let off = SignupPolicy {
            monthly_enabled: false,
        };
        let on = SignupPolicy {
            monthly_enabled: true,
        };
        assert!(monthly.offered_for_signup(on));
        assert!(!monthly.offered_for_signup(off));
        assert!(yearly.offered_for_signup(off));
    }

    #[test]
    fn env_price_ids_override_the_file() {
        let catalog = Catalog::from_toml(Catalog::DEFAULT_TOML)
            .unwrap()
            .with_stripe_price_ids(|plan, slot, cycle| {
                (plan.as_str() == "teams"
                    && slot == PriceSlot::Seat
                    && cycle == BillingCycle::Yearly)
                    .then(|| "price_from_env".to_owned())
            });
        let teams = catalog.plan(&PlanId::new("teams")).unwrap();
        let yearly = teams.price(BillingCycle::Yearly).unwrap();
        assert_eq!(yearly.stripe_price_id.as_deref(), Some("price_from_env"));
    }

    #[test]
    fn inconsistent_catalogs_are_refused() {
        let base = |plans: &str, default: &str| {
            format!("currency = \"usd\"\ndefault_plan = \"{default}\"\n{plans}")
        };
        let one_price = "[[plans]]\nid = \"a\"\ndisplay_name = \"A\"\npricing = \"flat\"\n\
                         [[plans.prices]]\ncycle = \"monthly\"\namount_minor = 100\n";
        assert!(Catalog::from_toml(&base(one_price, "a")).is_ok());
        assert!(Catalog::from_toml(&base(one_price, "missing")).is_err());
        let doubled =
            format!("{one_price}[[plans.prices]]\ncycle = \"monthly\"\namount_minor = 5\n");
        assert!(Catalog::from_toml(&base(&doubled, "a")).is_err());
        let negative = one_price.replace("100", "-1");
        assert!(Catalog::from_toml(&base(&negative, "a")).is_err());
        let bad_limit = format!("{one_price}[plans.limits]\nmax_projects = \"lots\"\n");
        assert!(Catalog::from_toml(&base(&bad_limit, "a")).is_err());
    }

    #[test]
    fn parse_plan_id_lists_the_known_plans() {
        let catalog = Catalog::from_toml(Catalog::DEFAULT_TOML).unwrap();
        assert_eq!(catalog.parse_plan_id("teams"), Ok(PlanId::new("teams")));
        let err = catalog.parse_plan_id("gold").unwrap_err();
        assert!(err.0.contains("teams, enterprise"), "{err}");
    }
}
