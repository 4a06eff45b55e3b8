//! The terms prices are written in: plan ids, billing cycles, and what a
//! Stripe seat price stands for. The catalog, line items and add-ons all
//! build on these, so they live below all three.

use std::fmt;

use serde::Deserialize;

use super::{InvalidValue, quoted};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    Monthly,
    Yearly,
}

impl BillingCycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }

    /// The per-month share of an amount billed once per cycle, rounded to
    /// the nearest minor unit ($540 a year is $45 a month).
    pub fn per_month(self, amount_minor: i64) -> i64 {
        match self {
            Self::Monthly => amount_minor,
            Self::Yearly => (amount_minor + 6).div_euclid(12),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "monthly" => Ok(Self::Monthly),
            "yearly" => Ok(Self::Yearly),
            other => Err(InvalidValue::new(format!(
                "{} is not a billing cycle",
                quoted(other)
            ))),
        }
    }
}

/// A plan's id in the catalog ("teams", "pro").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct PlanId(String);

impl PlanId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A seat price the catalog knows: its plan and cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSeatPrice {
    pub plan: PlanId,
    pub cycle: BillingCycle,
}
