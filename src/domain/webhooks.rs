//! Outbound webhooks: which endpoints may be configured, and how failed
//! deliveries are retried, given up, and endpoints paused.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::lifecycle::EventType;
use super::{InvalidValue, quoted};

/// An endpoint's address, checked for shape. Whether its host may be
/// called is [`AddressPolicy`]'s to say, at configuration (for literal
/// addresses and `localhost`) and again at every connection (for what the
/// name resolves to then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    url: String,
    host: String,
}

impl EndpointUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(InvalidValue::new("is required"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(InvalidValue::new(format!(
                "must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        let bad = |why: &str| InvalidValue::new(format!("{} {why}", quoted(raw)));
        let uri: http::Uri = raw.parse().map_err(|_| bad("is not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad("must be an http or https URL")),
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("must not carry credentials"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Self {
            url: raw.to_owned(),
            host: host.to_ascii_lowercase(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host as written: a name, or a literal address.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// Which addresses outbound webhooks may connect to. By default only
/// public ones: an endpoint is configured through an API, and must not
/// become a way to reach the service's own network (metadata services,
/// databases, admin ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressPolicy {
    /// Allows loopback and private ranges (tests, all-internal deployments).
    pub allow_private: bool,
}

impl AddressPolicy {
    pub fn permits(self, address: IpAddr) -> bool {
        self.allow_private || is_public(address)
    }

    /// Refuses at configuration what can be refused without resolving:
    /// a literal address outside the policy, or a `localhost` name.
    pub fn check(self, url: &EndpointUrl) -> Result<(), InvalidValue> {
        if self.allow_private {
            return Ok(());
        }
        let host = url.host();
        let refused = match host.parse::<IpAddr>() {
            Ok(address) => !self.permits(address),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        };
        if refused {
            return Err(InvalidValue::new(format!(
                "{} is a loopback, private or reserved address; webhooks go to public addresses only",
                quoted(host)
            )));
        }
        Ok(())
    }
}

/// Whether an address is on the public internet: not loopback, private,
/// shared (CGNAT), link-local (cloud metadata), multicast, documentation,
/// benchmarking or reserved space, including IPv4 inside IPv6.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if nat64 {
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local
                || (segments[0] & 0xffc0) == 0xfe80 // link-local
                || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || segments[..2] == [0x2001, 0x0db8] // documentation
                || segments[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_unspecified()
        || v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

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

/// Secrets stay out of logs and error messages.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url)
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

/// When a failed delivery is tried again: after each delay in turn, then
/// every `then_every`, for at most `give_up_after` from its first attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
    pub then_every: Duration,
    pub give_up_after: Duration,
}

impl Default for RetrySchedule {
    /// 5 s, 30 s, 2 min, 10 min, 1 h, then every 6 h, for 3 days.
    fn default() -> Self {
        Self {
            delays: [5, 30, 120, 600, 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            then_every: Duration::from_secs(6 * 3600),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl RetrySchedule {
    /// The next attempt after `failures` failed ones (the first failure is
    /// 1), or `None` when the delivery is given up.
    pub fn next_attempt(
        &self,
        first_attempt_at: DateTime<Utc>,
        failures: u32,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let index = usize::try_from(failures.saturating_sub(1)).unwrap_or(usize::MAX);
        let delay = self.delays.get(index).copied().unwrap_or(self.then_every);
        let next = now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
        let deadline =
            first_attempt_at + TimeDelta::from_std(self.give_up_after).unwrap_or(TimeDelta::MAX);
        (next <= deadline).then_some(next)
    }
}

/// Whether an endpoint failing since `failing_since` is paused now.
pub fn should_pause(failing_since: DateTime<Utc>, now: DateTime<Utc>, after: Duration) -> bool {
    now - failing_since >= TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_must_be_http_with_a_host_and_no_credentials() {
        let ok = EndpointUrl::parse(" https://hooks.example.com/billing?x=1 ").unwrap();
        assert_eq!(ok.as_str(), "https://hooks.example.com/billing?x=1");
        assert_eq!(ok.host(), "hooks.example.com");
        assert_eq!(
            EndpointUrl::parse("http://[::1]:8080/").unwrap().host(),
            "::1"
        );
        for raw in [
            "",
            "ftp://example.com/",
            "example.com/hook",
            "https://user:pw@example.com/",
            "https:///path",
            "not a url",
        ] {
            assert!(EndpointUrl::parse(raw).is_err(), "{raw:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(3000));
        let refused = EndpointUrl::parse(&long).unwrap_err();
        assert!(!refused.0.contains(&"a".repeat(100)), "no long echo");
    }

    #[test]
    fn only_public_addresses_are_public() {
        let table = [
            ("93.184.216.34", true),
            ("8.8.8.8", true),
            ("2606:4700::1111", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("172.32.0.1", true),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("100.128.0.1", true),
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("198.18.0.1", false),
            ("224.0.0.1", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("::", false),
            ("::1", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("ff02::1", false),
            ("2001:db8::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:93.184.216.34", true),
            ("64:ff9b::a00:1", false),
            ("::10.0.0.1", false),
        ];
        for (raw, public) in table {
            let address: IpAddr = raw.parse().unwrap();
            assert_eq!(is_public(address), public, "{raw}");
        }
    }

    #[test]
    fn the_policy_refuses_private_targets_unless_allowed() {
        let strict = AddressPolicy::default();
        let open = AddressPolicy {
            allow_private: true,
        };
        for raw in [
            "http://127.0.0.1:9000/hook",
            "http://10.0.0.5/",
            "http://[::1]/",
            "http://localhost:3000/",
            "http://api.localhost/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            let url = EndpointUrl::parse(raw).unwrap();
            assert!(strict.check(&url).is_err(), "{raw}");
            assert!(open.check(&url).is_ok(), "{raw}");
        }
        let public = EndpointUrl::parse("https://hooks.example.com/").unwrap();
        assert!(strict.check(&public).is_ok());
        assert!(!strict.permits("127.0.0.1".parse().unwrap()));
        assert!(open.permits("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn failed_deliveries_follow_the_schedule_then_give_up() {
        let schedule = RetrySchedule::default();
        let first = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let after = |failures: u32, now: DateTime<Utc>| {
            schedule
                .next_attempt(first, failures, now)
                .map(|next| (next - now).num_seconds())
        };
        assert_eq!(after(1, first), Some(5));
        assert_eq!(after(2, first), Some(30));
        assert_eq!(after(3, first), Some(120));
        assert_eq!(after(4, first), Some(600));
        assert_eq!(after(5, first), Some(3600));
        assert_eq!(after(6, first), Some(6 * 3600));
        assert_eq!(after(20, first + TimeDelta::days(2)), Some(6 * 3600));
        // The next attempt would fall past three days from the first.
        assert_eq!(after(20, first + TimeDelta::hours(67)), None);
        assert_eq!(after(20, first + TimeDelta::hours(66)), Some(6 * 3600));
    }

    #[test]
    fn an_endpoint_is_paused_once_it_has_failed_long_enough() {
        let since = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let day = Duration::from_secs(86_400);
        assert!(!should_pause(since, since + TimeDelta::hours(23), day));
        assert!(should_pause(since, since + TimeDelta::hours(24), day));
    }

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
