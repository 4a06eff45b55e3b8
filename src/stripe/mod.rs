//! The only place that talks to Stripe: the API client and its reads, the
//! planned writes, the webhook ingress, and the mapping of Stripe's event
//! types into ours.

pub mod adoption;
pub mod api;
mod convert;
pub mod event_list;
pub mod events;
mod intake;
mod observed;
mod perform;
pub mod subscription_list;
pub mod webhook;

pub use api::{DEFAULT_API_BASE, StripeApi, StripeSettings};
pub use webhook::{WEBHOOK_PATH, WebhookSecrets, webhook_router};
