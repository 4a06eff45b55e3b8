//! Outbound webhooks: which endpoints may be configured, and how failed
//! deliveries are retried, given up, and endpoints paused.

mod address;
mod retry;

use chrono::{DateTime, TimeDelta, Utc};

pub use address::{AddressPolicy, EndpointUrl, is_public};
pub use retry::{RetrySchedule, should_pause};

use super::InvalidValue;
use super::ids::IdempotencyKey;
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
    /// The idempotency key of the last rotation of its secret, if it had one.
    pub last_rotation_key: Option<String>,
}

/// Where one event's delivery to one endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet: due at its next attempt.
    Pending,
    Delivered,
    /// Given up after the retry schedule ran out (replayable).
    Failed,
}

impl DeliveryState {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Delivered, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == raw)
            .ok_or_else(|| {
                InvalidValue::new(format!("{} is not a delivery state", super::quoted(raw)))
            })
    }
}

/// What a `RotateWebhookEndpointSecret` call does to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationPlan {
    /// A new secret, the current one signing beside it for a while.
    Rotate,
    /// The retry of the endpoint's last rotation (the same key): that
    /// rotation is answered again. Rotating once more would retire, or cut
    /// short, the secret that receivers still verify with.
    AnswerLastRotation,
}

impl Endpoint {
    /// The URL's origin (no path or query, which may carry the receiver's
    /// token): what logs and events show of an endpoint.
    pub fn origin(&self) -> String {
        EndpointUrl::parse(&self.url)
            .map_or_else(|_| "[not a URL]".to_owned(), |url| url.origin().to_owned())
    }

    /// Whether a creation request with these settings is the one that made
    /// this endpoint (a retry under its idempotency key), rather than
    /// another request reusing the key.
    pub fn has_settings_of(&self, requested: &Endpoint) -> bool {
        self.url == requested.url
            && self.description == requested.description
            && self.event_types == requested.event_types
            && self.max_in_flight == requested.max_in_flight
    }

    pub fn plan_rotation(&self, key: Option<&IdempotencyKey>) -> RotationPlan {
        match (key, &self.last_rotation_key) {
            (Some(key), Some(last)) if key.as_str() == last => RotationPlan::AnswerLastRotation,
            _ => RotationPlan::Rotate,
        }
    }

    /// Signs with `secret` from now on; the current secret keeps signing
    /// beside it until `previous_until`, or is retired at once (`None`).
    pub fn rotate(
        &mut self,
        secret: String,
        previous_until: Option<DateTime<Utc>>,
        key: Option<&IdempotencyKey>,
    ) {
        let previous = std::mem::replace(&mut self.secret, secret);
        self.previous_secret = previous_until.map(|until| (previous, until));
        self.last_rotation_key = key.map(|k| k.as_str().to_owned());
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
            last_rotation_key: None,
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

    fn endpoint(secret: &str, last_rotation_key: Option<&str>) -> Endpoint {
        Endpoint {
            id: uuid::Uuid::nil(),
            url: "https://hooks.example.com/billing".into(),
            description: "ops".into(),
            event_types: vec![EventType::MemberJoined],
            max_in_flight: 4,
            secret: secret.into(),
            previous_secret: None,
            paused: None,
            failing_since: None,
            last_error: None,
            created_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            last_rotation_key: last_rotation_key.map(str::to_owned),
        }
    }

    #[test]
    fn only_a_retry_of_the_last_rotation_is_answered_again() {
        let table = [
            (None, None, RotationPlan::Rotate),
            (None, Some("r1"), RotationPlan::Rotate),
            (Some("r1"), None, RotationPlan::Rotate),
            (Some("r2"), Some("r1"), RotationPlan::Rotate),
            (Some("r1"), Some("r1"), RotationPlan::AnswerLastRotation),
        ];
        for (given, last, plan) in table {
            let given = given.and_then(key_of);
            assert_eq!(
                endpoint("whsec_a", last).plan_rotation(given.as_ref()),
                plan,
                "{given:?} after {last:?}"
            );
        }
    }

    #[test]
    fn a_rotation_keeps_the_old_secret_until_asked_and_remembers_its_key() {
        let until = DateTime::from_timestamp(1_800_003_600, 0).unwrap();
        let mut rotated = endpoint("whsec_a", None);
        rotated.rotate("whsec_b".into(), Some(until), key_of("r1").as_ref());
        assert_eq!(rotated.secret, "whsec_b");
        assert_eq!(rotated.previous_secret, Some(("whsec_a".into(), until)));
        assert_eq!(rotated.last_rotation_key.as_deref(), Some("r1"));
        rotated.rotate("whsec_c".into(), None, None);
        assert_eq!(rotated.previous_secret, None, "retired at once");
        assert_eq!(rotated.last_rotation_key, None);
    }

    fn key_of(raw: &str) -> Option<IdempotencyKey> {
        IdempotencyKey::parse_optional(raw).unwrap()
    }

    #[test]
    fn a_creation_retry_must_ask_for_the_same_settings() {
        let made = endpoint("whsec_a", None);
        let mut asked = endpoint("whsec_other", None);
        assert!(made.has_settings_of(&asked), "the secret is not a setting");
        asked.max_in_flight = 8;
        assert!(!made.has_settings_of(&asked));
        let mut asked = endpoint("whsec_other", None);
        asked.url = "https://hooks.example.com/other".into();
        assert!(!made.has_settings_of(&asked));
        let mut asked = endpoint("whsec_other", None);
        asked.event_types = vec![];
        assert!(!made.has_settings_of(&asked));
    }

    #[test]
    fn delivery_states_read_back_as_written() {
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.as_str()), Ok(state));
        }
        assert!(DeliveryState::parse("sent").is_err());
    }
}
