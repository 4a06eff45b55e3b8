//! Caller authentication: a bearer token per caller, each with a scope.
//!
//! - `gateway`: EntitlementService only.
//! - `bff`: BillingService, CreditService and OrgAdminService, acting for
//!   the end user named in `x-acting-user-id`, whose role in the
//!   organization is then checked.
//! - `ops`: everything, including the operator-only RPCs.
//!
//! Tokens are compared by their SHA-256 digests, so the table holds no
//! plaintext and a lookup takes the same path whatever the token.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rand::Rng;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::domain::ids::UserId;
use crate::domain::reason::ErrorReason;
use crate::error::{Error, FieldContext};
use crate::service::Actor;

/// Metadata key naming the end user a `bff` caller acts for.
pub const ACTING_USER_HEADER: &str = "x-acting-user-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Gateway,
    Bff,
    Ops,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Gateway, Scope::Bff, Scope::Ops];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Bff => "bff",
            Self::Ops => "ops",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// The configured tokens. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerTokens {
    entries: Vec<(Scope, String)>,
}

impl fmt::Debug for CallerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scopes: Vec<&str> = self.entries.iter().map(|(s, _)| s.as_str()).collect();
        f.debug_struct("CallerTokens")
            .field("scopes", &scopes)
            .finish_non_exhaustive()
    }
}

impl CallerTokens {
    pub const MIN_TOKEN_LEN: usize = 16;

    /// Parses comma-separated `scope:token` pairs; a scope may appear several
    /// times so that tokens can be rotated.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (scope, token) = pair
                .split_once(':')
                .ok_or_else(|| "each entry must be scope:token".to_owned())?;
            // The entry is not quoted: swapped around, its scope is a token.
            let scope = Scope::parse(scope.trim()).ok_or_else(|| {
                "an entry names an unknown scope; expected gateway, bff or ops".to_owned()
            })?;
            let token = token.trim();
            if token.len() < Self::MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace()) {
                return Err(format!(
                    "{} tokens must be at least {} characters without spaces",
                    scope.as_str(),
                    Self::MIN_TOKEN_LEN
                ));
            }
            entries.push((scope, token.to_owned()));
        }
        if entries.is_empty() {
            return Err("no tokens given".into());
        }
        Ok(Self { entries })
    }

    /// One random token per scope, for the run command's embedded default.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let entries = Scope::ALL
            .into_iter()
            .map(|scope| {
                let bytes: [u8; 24] = rng.random();
                (scope, format!("{}-{}", scope.as_str(), hex::encode(bytes)))
            })
            .collect();
        Self { entries }
    }

    /// The first token of a scope, to print for a newcomer.
    pub fn first(&self, scope: Scope) -> Option<&str> {
        self.entries
            .iter()
            .find(|(s, _)| *s == scope)
            .map(|(_, t)| t.as_str())
    }

    /// Back to the `BILLING_CALLER_TOKENS` format.
    pub fn to_env_value(&self) -> String {
        let pairs: Vec<String> = self
            .entries
            .iter()
            .map(|(s, t)| format!("{}:{t}", s.as_str()))
            .collect();
        pairs.join(",")
    }
}

/// The caller as established by its token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: Scope,
    pub acting_user: Option<UserId>,
}

impl Caller {
    /// The actor of a call that acts within an organization. `bff` calls must
    /// name their end user.
    pub fn actor(&self) -> Result<Actor, Status> {
        match self.scope {
            Scope::Gateway => Ok(Actor::Gateway),
            Scope::Ops => Ok(Actor::Operator),
            Scope::Bff => self.acting_user.clone().map(Actor::User).ok_or_else(|| {
                Status::unauthenticated(format!(
                    "bff calls must name the end user in the {ACTING_USER_HEADER} metadata"
                ))
            }),
        }
    }
}

/// Checks tokens and scopes; cheap to clone into each service's interceptor.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<HashMap<[u8; 32], Scope>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Authenticator {
    pub fn new(tokens: &CallerTokens) -> Self {
        let table = tokens
            .entries
            .iter()
            .map(|(scope, token)| (digest(token), *scope))
            .collect();
        Self {
            tokens: Arc::new(table),
        }
    }

    /// Authenticates a request for a service that admits `allowed` scopes and
    /// records the [`Caller`] in the request's extensions.
    pub fn check(&self, request: &mut Request<()>, allowed: &[Scope]) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be Bearer <token>"))?;
        let scope = *self
            .tokens
            .get(&digest(token.trim()))
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        if !allowed.contains(&scope) {
            return Err(Error::denied(
                ErrorReason::CallerNotPermitted,
                format!("the {} scope may not call this service", scope.as_str()),
            )
            .into());
        }
        let acting_user = match request.metadata().get(ACTING_USER_HEADER) {
            None => None,
            Some(value) => {
                let raw = value
                    .to_str()
                    .map_err(|_| Error::invalid(ACTING_USER_HEADER, "must be ASCII"))?;
                Some(UserId::parse(raw).field(ACTING_USER_HEADER)?)
            }
        };
        request
            .extensions_mut()
            .insert(Caller { scope, acting_user });
        Ok(())
    }
}

/// The caller recorded by [`Authenticator::check`].
pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::internal("the request was not authenticated"))
}

/// The actor of a request that acts within an organization.
pub fn actor<T>(request: &Request<T>) -> Result<Actor, Status> {
    caller(request)?.actor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_rotation_and_never_show_in_debug() {
        let tokens = CallerTokens::parse(
            "gateway:gw-0123456789abcdef, ops:ops-0123456789abcdef,ops:ops-new-0123456789ab",
        )
        .unwrap();
        assert_eq!(tokens.entries.len(), 3);
        assert_eq!(tokens.first(Scope::Ops), Some("ops-0123456789abcdef"));
        assert!(!format!("{tokens:?}").contains("0123456789"));
        assert_eq!(CallerTokens::parse(&tokens.to_env_value()), Ok(tokens));
    }

    #[test]
    fn bad_token_lists_are_refused() {
        for bad in [
            "",
            "nocolon",
            "admin:0123456789abcdef",
            "bff:short",
            "bff:has space 0123456789",
        ] {
            assert!(CallerTokens::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_tokens_cover_every_scope_and_parse_back() {
        let tokens = CallerTokens::generate();
        for scope in Scope::ALL {
            assert!(tokens.first(scope).is_some());
        }
        assert_eq!(CallerTokens::parse(&tokens.to_env_value()), Ok(tokens));
    }
}
