//! Outbound webhooks: which endpoints may be configured, and how failed
//! deliveries are retried, given up, and endpoints paused.

mod address;
mod retry;

use chrono::{DateTime, TimeDelta, Utc};

pub use address::{AddressPolicy, EndpointUrl, is_public};
pub use retry::{RetrySchedule, should_pause};

use super::InvalidValue;
use super::lifecycle::EventType;

/// An operator's webhook endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: uuid::Uuid,
    pub url: String,
    pub description: String,
    /// Types delivered; every type when empty.
    pub event_types: Vec<EventType>,
    pub max_in_flight: i32,
    /// Signs every delivery.
    pub secret: String,
    /// A rotated-out secret, signing beside the new one until it expires.
    pub previous_secret: Option<(String, DateTime<Utc>)>,
    /// When and why deliveries were stopped.
    pub paused: Option<(DateTime<Utc>, String)>,
    /// Since the first failure after the last success.
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Endpoint {
    /// The URL's origin (no path or query, which may carry the receiver's
    /// token): what logs and events show of an endpoint.
    pub fn origin(&self) -> String {
        EndpointUrl::parse(&self.url)
            .map_or_else(|_| "[not a URL]".to_owned(), |url| url.origin().to_owned())
    }

    /// The secrets a delivery at `now` is signed with: the current one, and
    /// the previous one until it expires.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let previous = self
            .previous_secret
            .as_ref()
            .filter(|(_, until)| *until > now)
            .map(|(secret, _)| secret.as_str());
        std::iter::once(self.secret.as_str())
            .chain(previous)
            .collect()
    }
}

/// Secrets, and the URL's path and query, stay out of logs and error
/// messages.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("origin", &self.origin())
            .field("event_types", &self.event_types)
            .field("max_in_flight", &self.max_in_flight)
            .field("paused", &self.paused)
            .field("failing_since", &self.failing_since)
            .finish_non_exhaustive()
    }
}

/// An endpoint's description for operators: up to 256 characters of text.
pub fn parse_description(raw: &str) -> Result<String, InvalidValue> {
    const MAX_CHARS: usize = 256;
    let description = raw.trim();
    if description.chars().count() > MAX_CHARS {
        return Err(InvalidValue::new(format!(
            "must be at most {MAX_CHARS} characters"
        )));
    }
    if description.chars().any(char::is_control) {
        return Err(InvalidValue::new("must not contain control characters"));
    }
    Ok(description.to_owned())
}

/// Deliveries an endpoint may have in flight at once.
pub fn parse_max_in_flight(raw: Option<u32>) -> Result<i32, InvalidValue> {
    const DEFAULT: u32 = 4;
    match raw.unwrap_or(DEFAULT) {
        n @ 1..=64 => Ok(i32::try_from(n).unwrap_or(4)),
        _ => Err(InvalidValue::new("must be 1 to 64")),
    }
}

/// How long a rotated-out secret keeps signing beside the new one.
pub fn parse_previous_secret_ttl(raw: Option<u32>) -> Result<TimeDelta, InvalidValue> {
    const DEFAULT: i64 = 24 * 3600;
    const MAX: u32 = 7 * 24 * 3600;
    match raw {
        None => Ok(TimeDelta::seconds(DEFAULT)),
        Some(seconds) if seconds <= MAX => Ok(TimeDelta::seconds(i64::from(seconds))),
        Some(_) => Err(InvalidValue::new("must be at most 7 days (604800 seconds)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_out_secret_signs_until_it_expires() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut endpoint = Endpoint {
            id: uuid::Uuid::nil(),
            url: "https://hooks.example.com/".into(),
            description: String::new(),
            event_types: vec![],
            max_in_flight: 4,
            secret: "whsec_new".into(),
            previous_secret: Some(("whsec_old".into(), now + TimeDelta::hours(1))),
            paused: None,
            failing_since: None,
            last_error: None,
            created_at: now,
        };
        assert_eq!(
            endpoint.signing_secrets(now),
            vec!["whsec_new", "whsec_old"]
        );
        assert_eq!(
            endpoint.signing_secrets(now + TimeDelta::hours(1)),
            vec!["whsec_new"]
        );
        endpoint.previous_secret = None;
        assert_eq!(endpoint.signing_secrets(now), vec!["whsec_new"]);
        assert!(
            !format!("{endpoint:?}").contains("whsec_"),
            "no secret in Debug"
        );
    }

    #[test]
    fn endpoint_settings_are_bounded() {
        assert_eq!(parse_max_in_flight(None), Ok(4));
        assert_eq!(parse_max_in_flight(Some(64)), Ok(64));
        assert!(parse_max_in_flight(Some(0)).is_err());
        assert!(parse_max_in_flight(Some(65)).is_err());
        assert_eq!(parse_description("  ops pager "), Ok("ops pager".into()));
        assert!(parse_description(&"x".repeat(257)).is_err());
        assert!(parse_description("a\u{0}b").is_err());
        assert_eq!(parse_previous_secret_ttl(None), Ok(TimeDelta::hours(24)));
        assert_eq!(parse_previous_secret_ttl(Some(0)), Ok(TimeDelta::zero()));
        assert!(parse_previous_secret_ttl(Some(8 * 86_400)).is_err());
    }
}
