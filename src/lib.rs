//! A gRPC billing and entitlement service.
//!
//! A tour of the modules, from the middle out:
//! - [`domain`]: the pure rules: plan catalog, money, trials, roles, seats,
//!   subscription states and the entitlement decision. No I/O.
//! - [`store`]: Postgres through sqlx, one file per table group.
//! - [`service`]: use cases: load, decide with the domain, persist in one
//!   transaction together with the audit entry and the lifecycle events;
//!   billing changes as recorded operations that never hold a transaction
//!   across Stripe.
//! - [`stripe`]: the only code that talks to Stripe: the API client, the
//!   planned writes, the webhook ingress and the event mapping.
//! - [`grpc`]: the tonic adapters for `billing.v1`, authentication, the
//!   proto conversions and the single error-to-status mapping; [`proto`]
//!   below them: the generated messages and the shared value conversions.
//! - [`event_codec`]: lifecycle events as published (`BillingEvent` and
//!   its canonical proto3 JSON); [`outbound_webhooks`]: the only code that
//!   calls operators' webhook endpoints (signing, the address guard).
//! - [`config`], [`telemetry`], [`app`]: settings, tracing, and assembling
//!   the server so both `main` and the tests can start it.
//! - [`local_postgres`]: the run command's embedded database default.
//! - [`worker`]: the background loops: the webhook inbox, resuming billing
//!   operations, maintenance (credit expiry, add-on renewals, trial stage
//!   announcements, event retention), and webhook delivery.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod event_codec;
pub mod grpc;
pub mod http_listener;
pub mod instruments;
pub mod local_postgres;
pub mod metrics_listener;
pub mod outbound_webhooks;
pub mod proto;
pub mod service;
pub mod store;
pub mod stripe;
pub mod telemetry;
pub mod transport;
pub mod worker;
