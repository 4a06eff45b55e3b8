//! The only place that talks to Stripe: the webhook ingress (and, as the
//! Stripe integration grows, the API client and event mapping).

pub mod webhook;

pub use webhook::{WEBHOOK_PATH, WebhookSecrets, webhook_router};
