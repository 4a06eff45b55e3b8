//! Which endpoints webhooks may be sent to: the URL's shape, and the
//! addresses it may reach.

use std::net::{IpAddr, Ipv4Addr};

use crate::domain::{InvalidValue, quoted};

/// An endpoint's address, checked for shape. Whether its host may be
/// called is [`AddressPolicy`]'s to say, at configuration (for literal
/// addresses and `localhost`) and again at every connection (for what the
/// name resolves to then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    url: String,
    host: String,
    origin: String,
}

impl EndpointUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let raw = raw.trim();
        InvalidValue::check_present_within(raw, Self::MAX_LEN)?;
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
        if is_nonstandard_ipv4(host) {
            return Err(bad(
                "must name its host, or give an IPv4 address as four decimal numbers",
            ));
        }
        let scheme = uri.scheme_str().unwrap_or_default();
        Ok(Self {
            url: raw.to_owned(),
            host: host.to_ascii_lowercase(),
            origin: format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host as written: a name, or a literal address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Scheme, host and port, without the path and query: what logs and
    /// events may show. Receivers often put a token in the path
    /// (`/services/T0/B0/secret`) or the query, which makes the whole URL
    /// a credential.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Whether a host is an IPv4 address written some other way than four
/// decimal numbers (`2130706433`, `127.1`, `0x7f.0.0.1`, `0177.0.0.1`).
/// Resolvers read these as addresses (`127.0.0.1` for all four), so they
/// could not be checked as literals when the endpoint is configured, only
/// when connecting; no real name has a last label that is all digits
/// (RFC 3696), so nothing legitimate is refused.
fn is_nonstandard_ipv4(host: &str) -> bool {
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit())));
    numeric && host.parse::<Ipv4Addr>().is_err()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_must_be_http_with_a_host_and_no_credentials() {
        let ok = EndpointUrl::parse(" https://hooks.example.com/billing?x=1 ").unwrap();
        assert_eq!(ok.as_str(), "https://hooks.example.com/billing?x=1");
        assert_eq!(ok.host(), "hooks.example.com");
        assert_eq!(ok.origin(), "https://hooks.example.com");
        let with_token =
            EndpointUrl::parse("https://Hooks.Example.com:8443/services/T0/B0/s3cret?token=x")
                .unwrap();
        assert_eq!(with_token.origin(), "https://hooks.example.com:8443");
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
            // IPv4 addresses in forms resolvers accept but literals do not.
            "http://2130706433/",
            "http://127.1/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://10.0.0.1./",
        ] {
            assert!(EndpointUrl::parse(raw).is_err(), "{raw:?}");
        }
        for raw in [
            "http://93.184.216.34/",
            "https://hooks.example.com./",
            "https://1password.example/",
            "https://0x-hooks.example/",
        ] {
            assert!(EndpointUrl::parse(raw).is_ok(), "{raw:?}");
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
}
