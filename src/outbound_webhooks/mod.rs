//! Outbound webhooks: the only code that calls operators' endpoints.
//!
//! One delivery is one signed `POST` of the event's JSON, with a timeout
//! for the whole exchange. Only 2xx counts as delivered; redirects are not
//! followed (a redirect could lead anywhere). Every address connected to
//! must be permitted by the [`AddressPolicy`]: literal hosts are checked
//! before connecting, names after resolving, so a name that resolves to a
//! private address at delivery time is refused as well.

mod resolver;
pub mod signature;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use self::resolver::GuardedResolver;
use crate::domain::webhooks::{AddressPolicy, EndpointUrl};

/// The most of a response body read (and then dropped), so the connection
/// can be kept for the next delivery.
const RESPONSE_BODY_LIMIT: usize = 64 * 1024;

/// One delivery to send.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub url: &'a str,
    /// The event id: the `webhook-id`.
    pub message_id: &'a str,
    pub body: Bytes,
    /// Each signs (`webhook-signature` carries one signature per secret).
    pub secrets: Vec<&'a str>,
}

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// The response's status, if one came.
    pub status: Option<u16>,
    /// Why it failed; `None` when delivered (a 2xx).
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl SendReport {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    policy: AddressPolicy,
    timeout: Duration,
}

impl WebhookSender {
    pub fn new(policy: AddressPolicy, timeout: Duration) -> Self {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Self {
            client,
            policy,
            timeout,
        }
    }

    /// Sends one delivery, signed at the moment of sending.
    pub async fn send(&self, outgoing: Outgoing<'_>) -> SendReport {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.exchange(&outgoing)).await;
        let (status, error) = match result {
            Ok(Ok(status)) if (200..300).contains(&status) => (Some(status), None),
            Ok(Ok(status)) => (Some(status), Some(format!("HTTP {status}"))),
            Ok(Err(error)) => (None, Some(error)),
            Err(_) => (
                None,
                Some(format!("no answer within {} ms", self.timeout.as_millis())),
            ),
        };
        SendReport {
            status,
            error,
            elapsed: started.elapsed(),
        }
    }

    async fn exchange(&self, outgoing: &Outgoing<'_>) -> Result<u16, String> {
        let url = EndpointUrl::parse(outgoing.url).map_err(|invalid| invalid.0)?;
        // A literal address is connected to without resolving: check it here.
        if let Ok(address) = url.host().parse()
            && !self.policy.permits(address)
        {
            return Err("the address is loopback, private or reserved".into());
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signature::sign(
            &outgoing.secrets,
            outgoing.message_id,
            timestamp,
            &outgoing.body,
        )
        .map_err(|e| e.to_string())?;
        let request = Request::post(url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .header("webhook-id", outgoing.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(outgoing.body.clone()))
            .map_err(|e| format!("the request could not be built: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        // Drain (a bounded part of) the body so the connection is reused;
        // what it says is not kept.
        let _ = Limited::new(response.into_body(), RESPONSE_BODY_LIMIT)
            .collect()
            .await;
        Ok(status)
    }
}

const USER_AGENT: &str = concat!("billing-service/", env!("CARGO_PKG_VERSION"));

/// The error and its causes, on one line (the refusal of a private address
/// is one of the causes).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
