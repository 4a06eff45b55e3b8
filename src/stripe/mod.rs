//! The only place that talks to Stripe: the API client, the webhook
//! ingress and the worker that applies stored events.

pub mod api;
pub mod webhook;
pub mod worker;

pub use api::{DEFAULT_API_BASE, StripeApi, StripeSettings};
pub use webhook::{WEBHOOK_PATH, WebhookSecrets, webhook_router};
pub use worker::{InboxSettings, run_inbox_worker};
