//! Prepaid credits: amounts, what is left of each credit, and how a debit
//! draws on them.
//!
//! Credits are counted in micro-units of the catalog's currency
//! (microdollars for USD), so per-request usage of a fraction of a cent adds
//! up exactly. The ledger of entries is the record; this module is the
//! arithmetic over what the ledger left behind: each credit is a *lot* with
//! what remains of it and an optional expiry, and the account may be
//! overdrawn by the last usage debit (the request was already served).
//!
//! Debits draw from the lot that expires soonest first, so expiring grants
//! are used before they are lost; permanent credits (purchases) last.

use std::fmt;

use chrono::{DateTime, Utc};

use super::ids::{CreditEntryId, HoldId, InstanceId, OrgId, UserId};
use super::{InvalidValue, quoted};

/// Micro-units in one minor unit of a two-decimal currency (one cent).
pub const MICROS_PER_MINOR: i64 = 10_000;

/// An amount of credit in micro-units; never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(i64);

impl Micros {
    pub const ZERO: Self = Self(0);
    /// A bound well above any real balance that keeps sums far from overflow.
    pub const MAX: Self = Self(1_000_000_000 * 1_000_000);

    /// A positive amount no larger than [`Self::MAX`].
    pub fn parse_positive(raw: i64) -> Result<Self, InvalidValue> {
        if raw <= 0 {
            return Err(InvalidValue::new("must be positive"));
        }
        if raw > Self::MAX.0 {
            return Err(InvalidValue::new(format!(
                "must be at most {}",
                Self::MAX.0
            )));
        }
        Ok(Self(raw))
    }

    /// A stored amount, which may be zero (a free add-on).
    pub fn non_negative(raw: i64) -> Result<Self, InvalidValue> {
        match raw {
            0 => Ok(Self::ZERO),
            raw => Self::parse_positive(raw),
        }
    }

    pub fn from_minor(minor: i64) -> Self {
        Self(minor.saturating_mul(MICROS_PER_MINOR).max(0))
    }

    /// Whole minor units, if the amount has no fraction of one.
    pub fn whole_minor(self) -> Option<i64> {
        (self.0 % MICROS_PER_MINOR == 0).then_some(self.0 / MICROS_PER_MINOR)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Micros {
    /// As dollars and cents with the micro-units kept when there are any
    /// ("$12.50", "$0.003125").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Balance(self.0))
    }
}

/// A balance in micro-units; negative when overdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Balance(pub i64);

impl Balance {
    pub fn covers(self, amount: Micros) -> bool {
        self.0 >= amount.0
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / 1_000_000;
        let fraction = abs % 1_000_000;
        if fraction.is_multiple_of(10_000) {
            write!(f, "{sign}${whole}.{:02}", fraction / 10_000)
        } else {
            let digits = format!("{fraction:06}");
            write!(f, "{sign}${whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// Why the ledger moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditEntryKind {
    /// Given by an operator, optionally expiring.
    Grant,
    /// Paid for through Stripe.
    Purchase,
    /// Model usage reported by the gateway.
    Usage,
    /// A month of an add-on instance.
    InstanceCharge,
    /// What was left of a credit at its expiry.
    Expiry,
    /// An operator's correction, either way.
    Adjustment,
}

impl CreditEntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Purchase => "purchase",
            Self::Usage => "usage",
            Self::InstanceCharge => "instance_charge",
            Self::Expiry => "expiry",
            Self::Adjustment => "adjustment",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        [
            Self::Grant,
            Self::Purchase,
            Self::Usage,
            Self::InstanceCharge,
            Self::Expiry,
            Self::Adjustment,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == raw)
        .ok_or_else(|| InvalidValue::new(format!("{} is not a credit entry kind", quoted(raw))))
    }
}

/// What an entry records besides its amount; which fields are set depends
/// on the kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryDetails {
    pub idempotency_key: Option<String>,
    pub stripe_payment_id: Option<String>,
    pub reason: Option<String>,
    pub user_id: Option<UserId>,
    pub model: Option<String>,
    pub instance_id: Option<InstanceId>,
    pub expires_at: Option<DateTime<Utc>>,
    pub expired_entry: Option<CreditEntryId>,
    /// For usage that settled a hold: the hold.
    pub hold: Option<HoldId>,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditEntry {
    pub id: CreditEntryId,
    pub org_id: OrgId,
    pub kind: CreditEntryKind,
    /// Positive for credits, negative for debits.
    pub amount: i64,
    pub balance_after: Balance,
    pub details: EntryDetails,
    pub occurred_at: DateTime<Utc>,
}

/// What remains of one credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditLot {
    /// The ledger entry that created it.
    pub entry: CreditEntryId,
    pub expires_at: Option<DateTime<Utc>>,
    pub remaining: i64,
}

impl CreditLot {
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// An organization's credits: its open lots and any overdraft.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditBalance {
    /// Lots with something left, in any order.
    pub lots: Vec<CreditLot>,
    pub overdraft: i64,
}

/// How a debit is paid: from which lots, and what is left owing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitPlan {
    pub draws: Vec<(CreditEntryId, i64)>,
    pub overdraft_added: i64,
}

/// How a new credit is split between an overdraft and a new lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditPlan {
    pub repays_overdraft: i64,
    pub into_lot: i64,
}

/// When an organization's credits are positive: what the entitlement
/// decision needs of them. Without new postings credit only runs out (lots
/// expire), so one horizon describes every future moment, and it changes
/// far less often than the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditHorizon {
    Never,
    /// Positive until this moment (a lot's expiry), not from it.
    Until(DateTime<Utc>),
    Always,
}

impl CreditHorizon {
    pub fn positive_at(self, now: DateTime<Utc>) -> bool {
        match self {
            Self::Never => false,
            Self::Until(end) => now < end,
            Self::Always => true,
        }
    }

    /// From the stored pair (positive, until).
    pub fn from_stored(positive: bool, until: Option<DateTime<Utc>>) -> Self {
        match (positive, until) {
            (false, _) => Self::Never,
            (true, Some(end)) => Self::Until(end),
            (true, None) => Self::Always,
        }
    }

    pub fn to_stored(self) -> (bool, Option<DateTime<Utc>>) {
        match self {
            Self::Never => (false, None),
            Self::Until(end) => (true, Some(end)),
            Self::Always => (true, None),
        }
    }
}

/// The next credit to expire, for the balance view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextExpiry {
    pub at: DateTime<Utc>,
    pub amount: i64,
}

impl CreditBalance {
    /// What may be spent at `now`: lots past their expiry no longer count,
    /// whether or not the sweep has written their expiry yet.
    pub fn available_at(&self, now: DateTime<Utc>) -> Balance {
        let open: i64 = self
            .lots
            .iter()
            .filter(|lot| !lot.expired_at(now))
            .map(|lot| lot.remaining)
            .sum();
        Balance(open - self.overdraft)
    }

    /// From `now` on, until when the balance stays positive.
    pub fn horizon(&self, now: DateTime<Utc>) -> CreditHorizon {
        let mut open: Vec<&CreditLot> = self
            .lots
            .iter()
            .filter(|lot| lot.remaining > 0 && !lot.expired_at(now))
            .collect();
        let permanent: i64 = open
            .iter()
            .filter(|lot| lot.expires_at.is_none())
            .map(|lot| lot.remaining)
            .sum::<i64>()
            - self.overdraft;
        if permanent > 0 {
            return CreditHorizon::Always;
        }
        open.retain(|lot| lot.expires_at.is_some());
        open.sort_by_key(|lot| lot.expires_at);
        let mut left = permanent + open.iter().map(|lot| lot.remaining).sum::<i64>();
        if left <= 0 {
            return CreditHorizon::Never;
        }
        for lot in open {
            left -= lot.remaining;
            if left <= 0
                && let Some(end) = lot.expires_at
            {
                return CreditHorizon::Until(end);
            }
        }
        CreditHorizon::Always
    }

    /// Lots that have expired with something left, for the sweep to close.
    pub fn expired_lots(&self, now: DateTime<Utc>) -> impl Iterator<Item = &CreditLot> {
        self.lots
            .iter()
            .filter(move |lot| lot.remaining > 0 && lot.expired_at(now))
    }

    pub fn next_expiry(&self, now: DateTime<Utc>) -> Option<NextExpiry> {
        let at = self
            .lots
            .iter()
            .filter(|lot| lot.remaining > 0 && !lot.expired_at(now))
            .filter_map(|lot| lot.expires_at)
            .min()?;
        let amount = self
            .lots
            .iter()
            .filter(|lot| lot.expires_at == Some(at))
            .map(|lot| lot.remaining)
            .sum();
        Some(NextExpiry { at, amount })
    }

    /// Draws `amount` from the open lots, soonest expiry first (permanent
    /// lots last, older before newer by entry id), and owes what they
    /// cannot cover.
    pub fn plan_debit(&self, amount: Micros, now: DateTime<Utc>) -> DebitPlan {
        let mut open: Vec<&CreditLot> = self
            .lots
            .iter()
            .filter(|lot| lot.remaining > 0 && !lot.expired_at(now))
            .collect();
        open.sort_by_key(|lot| (lot.expires_at.is_none(), lot.expires_at, lot.entry));
        let mut left = amount.get();
        let mut draws = Vec::new();
        for lot in open {
            if left == 0 {
                break;
            }
            let take = left.min(lot.remaining);
            draws.push((lot.entry, take));
            left -= take;
        }
        DebitPlan {
            draws,
            overdraft_added: left,
        }
    }

    /// A new credit first repays any overdraft; the rest becomes a lot.
    pub fn plan_credit(&self, amount: Micros) -> CreditPlan {
        let repays_overdraft = self.overdraft.min(amount.get());
        CreditPlan {
            repays_overdraft,
            into_lot: amount.get() - repays_overdraft,
        }
    }
}

/// A credit purchase Stripe reports paid: applied from the event itself,
/// since a succeeded payment never changes again, and keyed by the
/// payment's id so it is credited once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SucceededPayment {
    pub payment_id: String,
    pub org: OrgId,
    pub amount_minor: i64,
    pub purchaser: Option<UserId>,
}

/// The catalog's rules for credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditPolicy {
    /// Models that draw no credits, lower-cased. Every other model does: a
    /// model the catalog has not heard of is charged, not given away.
    pub free_models: Vec<String>,
    pub min_purchase: Micros,
    pub max_purchase: Micros,
    /// Below this balance `credits.low` is announced, unless the
    /// organization set its own threshold; zero turns the alert off.
    pub low_balance_threshold: Micros,
}

impl Default for CreditPolicy {
    fn default() -> Self {
        Self {
            free_models: Vec::new(),
            min_purchase: Micros::from_minor(500),
            max_purchase: Micros::from_minor(1_000_000),
            low_balance_threshold: Micros::from_minor(500),
        }
    }
}

impl CreditPolicy {
    pub fn model_needs_credits(&self, model: &str) -> bool {
        let model = model.trim().to_lowercase();
        !self.free_models.contains(&model)
    }

    /// A purchase amount: whole cents (Stripe charges cents) within the
    /// catalog's bounds.
    pub fn parse_purchase(&self, raw: i64) -> Result<Micros, InvalidValue> {
        let amount = Micros::parse_positive(raw)?;
        if amount.whole_minor().is_none() {
            return Err(InvalidValue::new(format!(
                "must be a whole number of cents ({MICROS_PER_MINOR} micro-units each)"
            )));
        }
        if amount < self.min_purchase || amount > self.max_purchase {
            return Err(InvalidValue::new(format!(
                "must be between {} and {}",
                self.min_purchase, self.max_purchase
            )));
        }
        Ok(amount)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use uuid::Uuid;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn lot(n: u128, remaining: i64, expires_in_days: Option<i64>) -> CreditLot {
        CreditLot {
            entry: CreditEntryId::from(Uuid::from_u128(n)),
            expires_at: expires_in_days.map(|d| now() + TimeDelta::days(d)),
            remaining,
        }
    }

    fn micros(n: i64) -> Micros {
        Micros::parse_positive(n).unwrap()
    }

    #[test]
    fn debits_use_the_soonest_expiring_credit_first_and_permanent_credit_last() {
        let balance = CreditBalance {
            lots: vec![
                lot(1, 500, None),
                lot(2, 300, Some(30)),
                lot(3, 100, Some(2)),
            ],
            overdraft: 0,
        };
        let plan = balance.plan_debit(micros(450), now());
        let order: Vec<(u128, i64)> = plan
            .draws
            .iter()
            .map(|(id, n)| (id.as_uuid().as_u128(), *n))
            .collect();
        assert_eq!(order, [(3, 100), (2, 300), (1, 50)]);
        assert_eq!(plan.overdraft_added, 0);
    }

    #[test]
    fn a_debit_larger_than_the_balance_overdraws_by_the_difference() {
        let balance = CreditBalance {
            lots: vec![lot(1, 200, None)],
            overdraft: 0,
        };
        let plan = balance.plan_debit(micros(350), now());
        assert_eq!(plan.overdraft_added, 150);
        let repaid = CreditBalance {
            lots: vec![],
            overdraft: 150,
        }
        .plan_credit(micros(1000));
        assert_eq!(
            repaid,
            CreditPlan {
                repays_overdraft: 150,
                into_lot: 850
            }
        );
    }

    #[test]
    fn expired_lots_stop_counting_at_their_expiry_even_before_the_sweep() {
        let balance = CreditBalance {
            lots: vec![lot(1, 200, None), lot(2, 300, Some(1))],
            overdraft: 0,
        };
        assert_eq!(balance.available_at(now()), Balance(500));
        let later = now() + TimeDelta::days(1);
        assert_eq!(balance.available_at(later), Balance(200));
        assert_eq!(balance.expired_lots(later).count(), 1);
        let plan = balance.plan_debit(micros(250), later);
        assert_eq!(plan.draws.len(), 1);
        assert_eq!(plan.overdraft_added, 50);
        assert_eq!(
            balance.next_expiry(now()),
            Some(NextExpiry {
                at: now() + TimeDelta::days(1),
                amount: 300
            })
        );
        assert_eq!(balance.next_expiry(later), None);
    }

    #[test]
    fn the_horizon_is_when_the_balance_stops_being_positive() {
        let at = |lots: Vec<CreditLot>, overdraft| CreditBalance { lots, overdraft }.horizon(now());
        let day = |d| now() + TimeDelta::days(d);
        assert_eq!(at(vec![], 0), CreditHorizon::Never);
        assert_eq!(at(vec![lot(1, 5, None)], 0), CreditHorizon::Always);
        assert_eq!(at(vec![lot(1, 5, None)], 5), CreditHorizon::Never);
        assert_eq!(
            at(vec![lot(1, 5, Some(3))], 0),
            CreditHorizon::Until(day(3))
        );
        assert_eq!(
            at(vec![lot(1, 5, Some(3)), lot(2, 5, Some(9))], 6),
            CreditHorizon::Until(day(3))
        );
        assert_eq!(
            at(vec![lot(1, 5, Some(3)), lot(2, 7, Some(9))], 4),
            CreditHorizon::Until(day(9))
        );
        assert!(CreditHorizon::Until(day(3)).positive_at(day(2)));
        assert!(!CreditHorizon::Until(day(3)).positive_at(day(3)));
        for horizon in [
            CreditHorizon::Never,
            CreditHorizon::Until(day(1)),
            CreditHorizon::Always,
        ] {
            let (positive, until) = horizon.to_stored();
            assert_eq!(CreditHorizon::from_stored(positive, until), horizon);
        }
    }

    #[test]
    fn amounts_print_as_dollars_keeping_fractions_of_a_cent() {
        assert_eq!(Balance(12_500_000).to_string(), "$12.50");
        assert_eq!(Balance(3_125).to_string(), "$0.003125");
        assert_eq!(Balance(-1_000_000).to_string(), "-$1.00");
        assert_eq!(Micros::from_minor(2000).to_string(), "$20.00");
        assert_eq!(micros(2_000_000).whole_minor(), Some(200));
        assert_eq!(micros(2_000_001).whole_minor(), None);
        assert!(Micros::parse_positive(0).is_err());
        assert!(Micros::parse_positive(-5).is_err());
        assert!(Micros::parse_positive(Micros::MAX.get() + 1).is_err());
    }

    #[test]
    fn purchases_are_whole_cents_within_the_catalog_bounds() {
        let policy = CreditPolicy {
            free_models: vec!["gpt-4o-mini".into()],
            ..CreditPolicy::default()
        };
        assert_eq!(policy.parse_purchase(25_000_000), Ok(micros(25_000_000)));
        assert!(policy.parse_purchase(25_000_001).is_err());
        assert!(policy.parse_purchase(1_000_000).is_err());
        assert!(policy.parse_purchase(20_000_000_000).is_err());
        assert!(!policy.model_needs_credits(" GPT-4o-mini"));
        assert!(policy.model_needs_credits("gpt-4o"));
    }
}
