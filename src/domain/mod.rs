//! The billing domain: plans, money, trials, roles, seats, subscription
//! state, the entitlement decision, and the plans of every billing change
//! (checkout, seats, cycle, cancellation, upkeep) as Stripe requests.
//!
//! Everything here is pure: no database, transport or Stripe types, and time
//! is always passed in. The adapters around it parse their inputs into these
//! types and persist what the decisions say.

pub mod add_ons;
pub mod adoption;
pub mod cancellation;
pub mod catalog;
pub mod checkout;
pub mod credit_holds;
pub mod credits;
pub mod cycle_change;
pub mod entitlement;
pub mod ids;
pub mod instances;
pub mod ledger_book;
pub mod lifecycle;
pub mod line_items;
pub mod membership;
pub mod metadata;
pub mod money;
pub mod operation;
pub mod organization;
pub mod pricing;
pub mod purchase_check;
pub mod reason;
pub mod retry;
pub mod role;
pub mod seat_change;
pub mod seats;
pub mod stripe_catch_up;
pub mod stripe_reconciliation;
pub mod subscription;
pub mod subscription_sync;
#[cfg(test)]
pub(crate) mod test_fixtures;
pub mod trial;
pub mod upkeep;
pub mod usage;
pub mod webhooks;

/// A value that failed validation, with a reason fit to show the caller.
/// The adapter that parsed it adds the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl InvalidValue {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    /// Refuses an empty value, or one over `max_len` bytes.
    pub fn check_present_within(value: &str, max_len: usize) -> Result<(), Self> {
        if value.is_empty() {
            return Err(Self::new("is required"));
        }
        if value.len() > max_len {
            return Err(Self::new(format!("must be at most {max_len} characters")));
        }
        Ok(())
    }
}

/// The names of the fields whose comparison (`(name, same)`) failed, in
/// order: what a comparison with Stripe reports as differing.
pub fn differing_fields(fields: &[(&'static str, bool)]) -> Vec<&'static str> {
    fields
        .iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| *name)
        .collect()
}

/// The most characters of a bad value a message quotes: enough to
/// recognise it, never a whole input (a 9 KB id, say) sent back or logged.
pub const QUOTED_CHARS: usize = 64;

/// `raw` quoted for a message: whole when short; else its first
/// [`QUOTED_CHARS`] characters, and how long it was.
pub fn quoted(raw: &str) -> String {
    match raw.char_indices().nth(QUOTED_CHARS) {
        None => format!("{raw:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &raw[..cut], raw.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_value_is_cut_to_a_bounded_prefix() {
        let long = "x".repeat(9_000);
        let cases = [
            ("", "\"\""),
            ("teams", "\"teams\""),
            ("a \"b\"", "\"a \\\"b\\\"\""),
        ];
        for (raw, want) in cases {
            assert_eq!(quoted(raw), want, "{raw:?}");
        }
        let cut = quoted(&long);
        assert_eq!(
            cut,
            format!("\"{}\"… (9000 bytes)", "x".repeat(QUOTED_CHARS))
        );
        // Cut on a character boundary.
        let wide = "é".repeat(100);
        assert_eq!(
            quoted(&wide),
            format!("\"{}\"… (200 bytes)", "é".repeat(QUOTED_CHARS))
        );
        assert_eq!(
            quoted(&"y".repeat(QUOTED_CHARS)),
            format!("\"{}\"", "y".repeat(QUOTED_CHARS))
        );
    }
}
