//! Every request to Stripe's API goes through here, named by the endpoint
//! the call site gives: one span per request (a child of the call that
//! made it) and the metrics `billing_stripe_requests_total` by endpoint and
//! outcome and `billing_stripe_request_duration_seconds`. async-stripe's
//! own retries happen inside one request here.

use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use stripe::{Client, CustomizedStripeRequest, StripeError};
use stripe_client_core::StripeClient;
use tracing::Instrument;

use crate::instruments::{STRIPE_DURATION, STRIPE_REQUESTS};

/// The async-stripe client, used only through [`StripeHttp::endpoint`].
#[derive(Clone)]
pub(super) struct StripeHttp {
    client: Client,
}

impl fmt::Debug for StripeHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StripeHttp")
    }
}

impl StripeHttp {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The client for one request to `name` (`update_subscription`): a
    /// fixed, low-cardinality label.
    pub fn endpoint(&self, name: &'static str) -> Endpoint<'_> {
        Endpoint {
            client: &self.client,
            name,
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Endpoint<'a> {
    client: &'a Client,
    name: &'static str,
}

impl StripeClient for Endpoint<'_> {
    type Err = StripeError;

    fn execute(
        &self,
        request: CustomizedStripeRequest,
    ) -> impl Future<Output = Result<Bytes, StripeError>> + Send {
        let name = self.name;
        let span = tracing::info_span!(
            "stripe",
            otel.name = name,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            server.address = "api.stripe.com",
            stripe.endpoint = name,
            http.response.status_code = tracing::field::Empty,
        );
        let client = self.client;
        async move {
            let started = Instant::now();
            let result = client.execute(request).await;
            let outcome = outcome(&result);
            if let Err(StripeError::Stripe(_, status)) = &result {
                tracing::Span::current().record("http.response.status_code", status);
            }
            if result.is_err() {
                tracing::Span::current().record("otel.status_code", "ERROR");
            }
            metrics::counter!(STRIPE_REQUESTS, "endpoint" => name, "outcome" => outcome)
                .increment(1);
            metrics::histogram!(STRIPE_DURATION, "endpoint" => name)
                .record(started.elapsed().as_secs_f64());
            result
        }
        .instrument(span)
    }
}

/// How a request ended, as a label: `ok`, the class of Stripe's answer
/// (`rate_limited`, `refused` for 4xx, `server_error` for 5xx), or that
/// no answer came (`timeout`, `unreachable`, `unreadable`).
fn outcome(result: &Result<Bytes, StripeError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StripeError::Stripe(_, 429)) => "rate_limited",
        Err(StripeError::Stripe(_, 500..)) => "server_error",
        Err(StripeError::Stripe(_, _)) => "refused",
        Err(StripeError::Timeout) => "timeout",
        Err(StripeError::ClientError(_)) => "unreachable",
        Err(StripeError::JSONDeserialize(_) | StripeError::ConfigError(_)) => "unreadable",
    }
}
