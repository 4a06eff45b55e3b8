//! Money in integer minor units, never floating point.

use std::fmt;

use serde::Deserialize;

use super::{InvalidValue, quoted};

/// An ISO 4217 currency code in lower case, as Stripe writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let code = raw.to_ascii_lowercase();
        if code.len() == 3 && code.chars().all(|c| c.is_ascii_lowercase()) {
            Ok(Self(code))
        } else {
            Err(InvalidValue::new(format!(
                "{} is not a three-letter currency code",
                quoted(raw)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Cents for USD.
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let abs = self.amount_minor.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:02} {}",
            abs / 100,
            abs % 100,
            self.currency.as_str().to_uppercase()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_displays_minor_units_as_decimal() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(Money::new(4999, usd.clone()).to_string(), "49.99 USD");
        assert_eq!(Money::new(-5, usd).to_string(), "-0.05 USD");
    }

    #[test]
    fn currency_codes_must_be_three_letters() {
        assert!(Currency::parse("usd").is_ok());
        assert!(Currency::parse("us").is_err());
        assert!(Currency::parse("us1").is_err());
    }
}
