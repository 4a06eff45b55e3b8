//! Whether a credit purchase we credited from an event is a payment Stripe
//! knows, for that organization and that amount.
//!
//! Events are signed, so a forged one needs the webhook secret; but a
//! secret shared with a test account, an event replayed from another
//! account, or a bug in reading the event would credit money nobody paid.
//! Reconciliation reads each credited payment back from Stripe and flags
//! what does not match, so an operator sees it instead of it being kept
//! silently. Nothing is taken back automatically: a refund or an
//! adjustment is a decision for a person.

use super::credits::Micros;
use super::differing_fields;
use super::ids::OrgId;

/// A purchase as our ledger credited it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditedPurchase {
    pub payment_id: String,
    pub org: OrgId,
    pub credited: Micros,
}

/// The payment intent as Stripe reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePayment {
    pub succeeded: bool,
    /// What Stripe received, in the currency's minor unit.
    pub amount_received_minor: i64,
    /// The organization its metadata names, if any.
    pub org: Option<OrgId>,
}

/// What checking one credited purchase found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseFinding {
    Verified,
    /// Stripe has no such payment intent.
    UnknownAtStripe,
    /// These fields differ (never empty): "status", "amount", "organization".
    Mismatch(Vec<&'static str>),
}

impl PurchaseFinding {
    /// How the finding is stored and reported.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::UnknownAtStripe => "unknown_at_stripe",
            Self::Mismatch(_) => "mismatch",
        }
    }

    pub fn is_flagged(&self) -> bool {
        match self {
            Self::Verified => false,
            Self::UnknownAtStripe | Self::Mismatch(_) => true,
        }
    }

    /// For people: what is wrong, or "verified".
    pub fn reason(&self) -> String {
        match self {
            Self::Verified => "verified".to_owned(),
            Self::UnknownAtStripe => "Stripe has no such payment".to_owned(),
            Self::Mismatch(fields) => format!("differs from Stripe in {}", fields.join(", ")),
        }
    }
}

/// Compares what we credited with the payment Stripe has (`None`: Stripe
/// answered that it does not exist).
pub fn check(credited: &CreditedPurchase, live: Option<&LivePayment>) -> PurchaseFinding {
    let Some(live) = live else {
        return PurchaseFinding::UnknownAtStripe;
    };
    let fields: [(&'static str, bool); 3] = [
        ("status", live.succeeded),
        (
            "amount",
            Micros::from_minor(live.amount_received_minor) == credited.credited,
        ),
        ("organization", live.org == Some(credited.org)),
    ];
    let differing = differing_fields(&fields);
    if differing.is_empty() {
        PurchaseFinding::Verified
    } else {
        PurchaseFinding::Mismatch(differing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credited_purchase_is_verified_only_when_stripe_has_it_paid_in_full_for_that_org() {
        let org = OrgId::generate();
        let other = OrgId::generate();
        let credited = CreditedPurchase {
            payment_id: "pi_1".into(),
            org,
            credited: Micros::from_minor(4_000),
        };
        let paid = LivePayment {
            succeeded: true,
            amount_received_minor: 4_000,
            org: Some(org),
        };
        let cases = [
            (
                "paid as credited",
                Some(paid.clone()),
                PurchaseFinding::Verified,
            ),
            ("unknown", None, PurchaseFinding::UnknownAtStripe),
            (
                "less received",
                Some(LivePayment {
                    amount_received_minor: 400,
                    ..paid.clone()
                }),
                PurchaseFinding::Mismatch(vec!["amount"]),
            ),
            (
                "not succeeded, for another org",
                Some(LivePayment {
                    succeeded: false,
                    org: Some(other),
                    ..paid.clone()
                }),
                PurchaseFinding::Mismatch(vec!["status", "organization"]),
            ),
            (
                "no org in its metadata",
                Some(LivePayment { org: None, ..paid }),
                PurchaseFinding::Mismatch(vec!["organization"]),
            ),
        ];
        for (name, live, want) in cases {
            assert_eq!(check(&credited, live.as_ref()), want, "{name}");
            assert_eq!(want.is_flagged(), want != PurchaseFinding::Verified);
        }
    }
}
