//! Organizations and the settings that shape their entitlements.

use chrono::{DateTime, Utc};

use super::InvalidValue;
use super::ids::OrgId;
use super::pricing::PlanId;

/// A display name: trimmed, 1..=100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationName(String);

impl OrganizationName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(InvalidValue::new("must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(InvalidValue::new(format!(
                "must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidValue::new("must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An organization's model policy. Names are compared case-insensitively, so
/// they are stored lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelRestrictions {
    pub model_deny_list: Vec<String>,
    pub provider_allow_list: Vec<String>,
}

/// Which list a bad restriction entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionList {
    ModelDenyList,
    ProviderAllowList,
}

impl ModelRestrictions {
    pub const MAX_ENTRIES: usize = 500;
    pub const MAX_ENTRY_LEN: usize = 200;

    pub fn parse(
        model_deny_list: &[String],
        provider_allow_list: &[String],
    ) -> Result<Self, (RestrictionList, InvalidValue)> {
        Ok(Self {
            model_deny_list: normalize_list(model_deny_list)
                .map_err(|e| (RestrictionList::ModelDenyList, e))?,
            provider_allow_list: normalize_list(provider_allow_list)
                .map_err(|e| (RestrictionList::ProviderAllowList, e))?,
        })
    }

    pub fn denies_model(&self, model: &str) -> bool {
        let model = model.trim().to_lowercase();
        self.model_deny_list.contains(&model)
    }

    /// An empty allow list allows every provider. A non-empty one allows
    /// only the providers on it, and an unnamed provider cannot be on it.
    pub fn allows_provider(&self, provider: Option<&str>) -> bool {
        if self.provider_allow_list.is_empty() {
            return true;
        }
        provider.is_some_and(|p| self.provider_allow_list.contains(&p.trim().to_lowercase()))
    }
}

fn normalize_list(entries: &[String]) -> Result<Vec<String>, InvalidValue> {
    if entries.len() > ModelRestrictions::MAX_ENTRIES {
        return Err(InvalidValue::new(format!(
            "must have at most {} entries",
            ModelRestrictions::MAX_ENTRIES
        )));
    }
    let mut normalized: Vec<String> = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry = entry.trim().to_lowercase();
        if entry.is_empty() || entry.len() > ModelRestrictions::MAX_ENTRY_LEN {
            return Err(InvalidValue::new(format!(
                "entries must be 1..={} characters",
                ModelRestrictions::MAX_ENTRY_LEN
            )));
        }
        if entry.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "entries must not contain control characters",
            ));
        }
        if !normalized.contains(&entry) {
            normalized.push(entry);
        }
    }
    Ok(normalized)
}

/// An organization as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub plan: PlanId,
    pub trial_end: DateTime<Utc>,
    /// New organizations require seats; operators may switch it off.
    pub require_seats: bool,
    /// Sponsored organizations are entitled without paying.
    pub sponsorship_tier: Option<String>,
    pub suppress_trial_messaging: bool,
    /// Whether the organization switched credit-funded add-on instances off
    /// (only plans that allow it; see `Plan::instance_opt_out`).
    pub instances_opted_out: bool,
    pub restrictions: ModelRestrictions,
    pub created_at: DateTime<Utc>,
}

impl Organization {
    /// Whether members are entitled without seats or payment.
    pub fn bypasses_billing(&self) -> bool {
        !self.require_seats || self.sponsorship_tier.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(OrganizationName::parse("  Acme ").unwrap().as_str(), "Acme");
        assert!(OrganizationName::parse("   ").is_err());
        assert!(OrganizationName::parse(&"x".repeat(101)).is_err());
        assert!(OrganizationName::parse("tab\there").is_err());
    }

    #[test]
    fn restrictions_are_case_insensitive_and_deduplicated() {
        let r = ModelRestrictions::parse(&["GPT-4o".into(), "gpt-4o".into()], &["OpenAI".into()])
            .unwrap();
        assert_eq!(r.model_deny_list, vec!["gpt-4o"]);
        assert!(r.denies_model("GPT-4O"));
        assert!(!r.denies_model("claude"));
        assert!(r.allows_provider(Some("openai")));
        assert!(!r.allows_provider(Some("anthropic")));
        assert!(!r.allows_provider(None));
        assert!(ModelRestrictions::default().allows_provider(None));
    }

    #[test]
    fn bad_restriction_entries_name_their_list() {
        let err = ModelRestrictions::parse(&[], &["".into()]).unwrap_err();
        assert_eq!(err.0, RestrictionList::ProviderAllowList);
    }
}
