//! Identifiers and validated values that arrive from callers.

use std::fmt;

use uuid::Uuid;

use super::{InvalidValue, quoted};

/// A required UUID, of a typed id or of a plain one (webhook endpoints,
/// events).
pub fn parse_uuid(raw: &str) -> Result<Uuid, InvalidValue> {
    if raw.is_empty() {
        return Err(InvalidValue::new("is required"));
    }
    Uuid::parse_str(raw)
        .map_err(|_| InvalidValue::new(format!("{} is not a valid UUID", quoted(raw))))
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered id, so keyset pagination by id follows creation order.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
                parse_uuid(raw).map(Self)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// An organization (a team or an enterprise).
    OrgId
);
uuid_id!(
    /// An invitation to join an organization.
    InvitationId
);
uuid_id!(
    /// An entry of an organization's credit ledger.
    CreditEntryId
);
uuid_id!(
    /// Credit held for a request in flight, until its usage settles it.
    HoldId
);

/// What replaces an erased identity in retained records (the audit trail,
/// lifecycle events).
pub const ERASED: &str = "[erased]";

/// A user of the identity provider in front of us. We never create users; we
/// only refer to them, so the id is opaque but restricted to characters that
/// are safe in logs and JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        InvalidValue::check_present_within(raw, Self::MAX_LEN)?;
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._:@|+-".contains(c);
        if !raw.chars().all(allowed) {
            return Err(InvalidValue::new(
                "may contain only ASCII letters, digits and . _ : @ | + -",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, normalized to lower case. Only the shape is checked;
/// whether it receives mail is the inviting product's concern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let email = raw.trim().to_lowercase();
        InvalidValue::check_present_within(&email, Self::MAX_LEN)?;
        let well_formed = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !email
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
            }
            None => false,
        };
        if !well_formed {
            return Err(InvalidValue::new(format!(
                "{} is not an email address",
                quoted(raw)
            )));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A caller's key that makes a retried request return the first result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    /// An empty key means the caller did not ask for idempotency.
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, InvalidValue> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > Self::MAX_LEN || raw.chars().any(|c| c.is_control()) {
            return Err(InvalidValue::new(format!(
                "must be at most {} printable characters",
                Self::MAX_LEN
            )));
        }
        Ok(Some(Self(raw.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where Stripe sends the customer back to (Checkout, the billing portal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUrl(String);

impl RedirectUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() {
            return Err(InvalidValue::new("is required"));
        }
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .ok_or_else(|| InvalidValue::new("must be an http or https URL"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(InvalidValue::new("must name a host"));
        }
        if raw.len() > Self::MAX_LEN || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidValue::new(format!(
                "must be at most {} characters without spaces",
                Self::MAX_LEN
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller's name for an instance: 1 to 64 ASCII letters, digits, `.`,
/// `_` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.is_empty() {
            return Err(InvalidValue::new("is required"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if raw.len() > Self::MAX_LEN || !raw.chars().all(allowed) {
            return Err(InvalidValue::new(format!(
                "must be 1 to {} ASCII letters, digits, '.', '_' or '-'",
                Self::MAX_LEN
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_accept_identity_provider_shapes_and_refuse_quotes() {
        for ok in ["user_123", "auth0|5f1c", "google-oauth2|42", "a@b.c"] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "quote\"", "back\\slash", &"x".repeat(129)] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_shape_checked() {
        assert_eq!(
            EmailAddress::parse("  Ada@Example.COM ").map(|e| e.0),
            Ok("ada@example.com".to_owned())
        );
        for bad in [
            "",
            "no-at",
            "@example.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uuid_ids_name_the_bad_value() {
        let err = OrgId::parse("nope").unwrap_err();
        assert!(err.0.contains("\"nope\""));
        assert_eq!(OrgId::parse("").unwrap_err().0, "is required");
    }
}
