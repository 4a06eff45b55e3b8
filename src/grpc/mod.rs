//! The tonic adapters for `billing.v1`: authentication, conversions between
//! proto and domain types, and the one error-to-status mapping. Handlers
//! parse their request at the edge, call one use case, and convert back.

mod auth;
mod billing;
mod convert;
mod credits;
mod entitlement;
mod events;
mod load_shed;
mod observe;
mod org_admin;
mod state_version;
mod status;
mod streams;
mod stripe_replies;
mod usage;

pub use auth::{Authenticator, CallerTokens, Scope};
pub use billing::BillingApi;
pub use credits::CreditApi;
pub use entitlement::EntitlementApi;
pub use events::EventApi;
pub use load_shed::{ConcurrencyLimits, LoadShedLayer};
pub use observe::ObserveLayer;
pub use org_admin::OrgAdminApi;
pub use state_version::{STATE_VERSION_HEADER, StateVersionLayer};

/// The generated `billing.v1` types, clients and servers (defined below the
/// adapters, so the event codec can use them too).
pub use crate::proto;
