//! Reading lifecycle events back: from the outbox as committed, and
//! through the operators' EventService.

use std::time::Duration;

use billing_service::grpc::STATE_VERSION_HEADER;
use billing_service::grpc::proto::event_service_client::EventServiceClient;
use billing_service::grpc::proto::{self};
use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Response, Streaming};
use uuid::Uuid;

use crate::helpers::{As, TestApp, request};

/// An event as the outbox holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: Uuid,
    pub event_type: String,
    pub org_id: Option<Uuid>,
    pub state_version: i64,
    pub data: Value,
}

/// The state version a call's response names in `x-billing-state-version`.
pub fn committed_version<T>(response: &Response<T>) -> Option<i64> {
    response
        .metadata()
        .get(STATE_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl TestApp {
    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
    }

    /// Every event committed, in commit order (the stream's order).
    pub async fn all_events(&self) -> Vec<StoredEvent> {
        self.events_where(None).await
    }

    /// The organization's events, in commit order.
    pub async fn events_of(&self, org: &str) -> Vec<StoredEvent> {
        self.events_where(Some(org.parse().expect("an org id")))
            .await
    }

    async fn events_where(&self, org: Option<Uuid>) -> Vec<StoredEvent> {
        sqlx::query_as(
            r#"
            select id, type as event_type, org_id, state_version, data from billing_events
            where $1::uuid is null or org_id = $1
            order by state_version, seq
            "#,
        )
        .bind(org)
        .fetch_all(&self.pool)
        .await
        .expect("events")
    }

    /// The types of the organization's events, in commit order.
    pub async fn event_types_of(&self, org: &str) -> Vec<String> {
        self.events_of(org)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// A webhook endpoint (operators) delivering `types` (all when empty).
    pub async fn create_endpoint(&self, url: &str, types: &[&str]) -> proto::WebhookEndpoint {
        self.events()
            .create_webhook_endpoint(request(
                As::Ops,
                proto::CreateWebhookEndpointRequest {
                    url: url.to_owned(),
                    description: "test receiver".into(),
                    event_types: types.iter().map(|t| (*t).to_owned()).collect(),
                    max_in_flight: None,
                    idempotency_key: String::new(),
                },
            ))
            .await
            .expect("create endpoint")
            .into_inner()
    }

    /// A new signing secret for the endpoint (the previous one kept for
    /// `ttl` seconds, 24 hours when `None`), under `key` unless empty.
    pub async fn rotate_secret(
        &self,
        endpoint: &str,
        ttl: Option<u32>,
        key: &str,
    ) -> proto::WebhookEndpoint {
        self.events()
            .rotate_webhook_endpoint_secret(request(
                As::Ops,
                proto::RotateWebhookEndpointSecretRequest {
                    endpoint_id: endpoint.to_owned(),
                    previous_secret_ttl_seconds: ttl,
                    idempotency_key: key.to_owned(),
                },
            ))
            .await
            .expect("rotate")
            .into_inner()
    }

    /// Every webhook endpoint, as ListWebhookEndpoints shows them.
    pub async fn endpoints(&self) -> Vec<proto::WebhookEndpoint> {
        self.events()
            .list_webhook_endpoints(request(As::Ops, proto::ListWebhookEndpointsRequest {}))
            .await
            .expect("list endpoints")
            .into_inner()
            .endpoints
    }

    pub async fn endpoint(&self, id: &str) -> proto::WebhookEndpoint {
        self.endpoints()
            .await
            .into_iter()
            .find(|e| e.id == id)
            .expect("the endpoint is listed")
    }

    /// The endpoint's deliveries, newest first (one page of 100).
    pub async fn deliveries(&self, endpoint: &str, event: &str) -> Vec<proto::WebhookDelivery> {
        self.events()
            .list_webhook_deliveries(request(
                As::Ops,
                proto::ListWebhookDeliveriesRequest {
                    endpoint_id: endpoint.to_owned(),
                    event_id: event.to_owned(),
                    page_size: 100,
                    ..Default::default()
                },
            ))
            .await
            .expect("list deliveries")
            .into_inner()
            .deliveries
    }

    /// Opens WatchBillingEvents.
    pub async fn watch_events(
        &self,
        watch: proto::WatchBillingEventsRequest,
    ) -> Streaming<proto::BillingEvent> {
        self.events()
            .watch_billing_events(request(As::Ops, watch))
            .await
            .expect("watch")
            .into_inner()
    }
}

/// The next `n` events of a watch (10 s at most for all of them).
pub async fn next_events(
    stream: &mut Streaming<proto::BillingEvent>,
    n: usize,
) -> Vec<proto::BillingEvent> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived", events.len()))
            .expect("the stream is open")
            .expect("an event");
        events.push(next);
    }
    events
}

/// Asserts that the watch sends nothing more for a moment.
pub async fn assert_quiet(stream: &mut Streaming<proto::BillingEvent>) {
    let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "an unexpected event arrived: {next:?}");
}
