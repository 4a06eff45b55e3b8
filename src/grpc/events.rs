//! `billing.v1.EventService`: operators' webhook endpoints, their
//! deliveries and replays, and the resumable stream of lifecycle events.

use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::auth::actor;
use super::convert::{optional_timestamp, page_size, timestamp};
use super::proto::{self, event_service_server::EventService};
use super::streams::until_shutdown;
use crate::domain::ids::{IdempotencyKey, OrgId, parse_uuid};
use crate::domain::lifecycle::EventType;
use crate::domain::webhooks::{
    DeliveryState, Endpoint, EndpointUrl, parse_description, parse_max_in_flight,
    parse_previous_secret_ttl,
};
use crate::error::{Error, FieldContext, Result};
use crate::event_codec;
use crate::service::{EndpointChanges, EventFilter, NewEndpoint, Service, WatchStart};
use crate::store::webhook_delivery_log::DeliveryRecord;

/// How often a watch reads again when no commit woke it.
const WATCH_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct EventApi {
    service: Service,
    /// True once the server is shutting down.
    stopping: watch::Receiver<bool>,
}

impl EventApi {
    pub fn new(service: Service, stopping: watch::Receiver<bool>) -> Self {
        Self { service, stopping }
    }
}

/// The endpoint; its secret only when `with_secret` (creation, rotation).
fn endpoint(endpoint: Endpoint, with_secret: bool) -> proto::WebhookEndpoint {
    let state = match endpoint.paused {
        None => proto::WebhookEndpointState::Active,
        Some(_) => proto::WebhookEndpointState::Paused,
    };
    let (paused_at, paused_reason) = endpoint.paused.unzip();
    proto::WebhookEndpoint {
        id: endpoint.id.to_string(),
        url: endpoint.url,
        description: endpoint.description,
        event_types: endpoint
            .event_types
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        max_in_flight: u32::try_from(endpoint.max_in_flight).unwrap_or_default(),
        state: state.into(),
        paused_at: optional_timestamp(paused_at),
        paused_reason: paused_reason.unwrap_or_default(),
        failing_since: optional_timestamp(endpoint.failing_since),
        secret: if with_secret {
            endpoint.secret
        } else {
            String::new()
        },
        previous_secret_expires_at: optional_timestamp(
            endpoint.previous_secret.map(|(_, until)| until),
        ),
        created_at: Some(timestamp(endpoint.created_at)),
    }
}

fn delivery(record: DeliveryRecord) -> proto::WebhookDelivery {
    let state = match record.state {
        DeliveryState::Pending => proto::WebhookDeliveryState::Pending,
        DeliveryState::Delivered => proto::WebhookDeliveryState::Delivered,
        DeliveryState::Failed => proto::WebhookDeliveryState::Failed,
    };
    let pending = state == proto::WebhookDeliveryState::Pending;
    proto::WebhookDelivery {
        id: record.id.to_string(),
        event_id: record.event_id.to_string(),
        event_type: record.event_type,
        org_id: record.org_id.map(|o| o.to_string()).unwrap_or_default(),
        state: state.into(),
        replay: record.replay,
        created_at: Some(timestamp(record.created_at)),
        next_attempt_at: pending.then(|| timestamp(record.next_attempt_at)),
        attempts: record
            .attempts
            .into_iter()
            .map(|a| proto::WebhookAttempt {
                attempted_at: Some(timestamp(a.attempted_at)),
                http_status: a
                    .http_status
                    .and_then(|s| u32::try_from(s).ok())
                    .unwrap_or(0),
                error: a.error.unwrap_or_default(),
                duration_ms: u32::try_from(a.duration_ms).unwrap_or(0),
            })
            .collect(),
    }
}

fn uuid(field: &str, raw: &str) -> Result<Uuid> {
    parse_uuid(raw).field(field)
}

fn optional_uuid(field: &str, raw: &str) -> Result<Option<Uuid>> {
    match raw {
        "" => Ok(None),
        raw => uuid(field, raw).map(Some),
    }
}

fn event_types(field: &str, raw: &[String]) -> Result<Vec<EventType>> {
    EventType::parse_list(raw).field(field)
}

impl TryFrom<proto::CreateWebhookEndpointRequest> for NewEndpoint {
    type Error = Error;

    fn try_from(request: proto::CreateWebhookEndpointRequest) -> Result<Self> {
        Ok(Self {
            url: EndpointUrl::parse(&request.url).field("url")?,
            description: parse_description(&request.description).field("description")?,
            event_types: event_types("event_types", &request.event_types)?,
            max_in_flight: parse_max_in_flight(request.max_in_flight).field("max_in_flight")?,
            idempotency_key: IdempotencyKey::parse_optional(&request.idempotency_key)
                .field("idempotency_key")?,
        })
    }
}

impl TryFrom<proto::UpdateWebhookEndpointRequest> for EndpointChanges {
    type Error = Error;

    fn try_from(request: proto::UpdateWebhookEndpointRequest) -> Result<Self> {
        if !request.replace_event_types && !request.event_types.is_empty() {
            return Err(Error::invalid(
                "event_types",
                "is only read with replace_event_types set",
            ));
        }
        Ok(Self {
            url: request
                .url
                .as_deref()
                .map(EndpointUrl::parse)
                .transpose()
                .field("url")?,
            description: request
                .description
                .as_deref()
                .map(parse_description)
                .transpose()
                .field("description")?,
            event_types: request
                .replace_event_types
                .then(|| event_types("event_types", &request.event_types))
                .transpose()?,
            max_in_flight: request
                .max_in_flight
                .map(|max| parse_max_in_flight(Some(max)))
                .transpose()
                .field("max_in_flight")?,
        })
    }
}

type EventStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<proto::BillingEvent, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    async fn create_webhook_endpoint(
        &self,
        request: Request<proto::CreateWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        let actor = actor(&request)?;
        let new = NewEndpoint::try_from(request.into_inner())?;
        let created = self.service.create_webhook_endpoint(&actor, new).await?;
        Ok(Response::new(endpoint(created, true)))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<proto::ListWebhookEndpointsRequest>,
    ) -> Result<Response<proto::ListWebhookEndpointsResponse>, Status> {
        let actor = actor(&request)?;
        let endpoints = self.service.list_webhook_endpoints(&actor).await?;
        Ok(Response::new(proto::ListWebhookEndpointsResponse {
            endpoints: endpoints.into_iter().map(|e| endpoint(e, false)).collect(),
        }))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<proto::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        let actor = actor(&request)?;
        let request = request.into_inner();
        let id = uuid("endpoint_id", &request.endpoint_id)?;
        let changes = EndpointChanges::try_from(request)?;
        let updated = self
            .service
            .update_webhook_endpoint(&actor, id, changes)
            .await?;
        Ok(Response::new(endpoint(updated, false)))
    }

    async fn rotate_webhook_endpoint_secret(
        &self,
        request: Request<proto::RotateWebhookEndpointSecretRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        let actor = actor(&request)?;
        let request = request.into_inner();
        let id = uuid("endpoint_id", &request.endpoint_id)?;
        let ttl = parse_previous_secret_ttl(request.previous_secret_ttl_seconds)
            .field("previous_secret_ttl_seconds")?;
        let key =
            IdempotencyKey::parse_optional(&request.idempotency_key).field("idempotency_key")?;
        let rotated = self
            .service
            .rotate_webhook_endpoint_secret(&actor, id, ttl, key)
            .await?;
        Ok(Response::new(endpoint(rotated, true)))
    }

    async fn pause_webhook_endpoint(
        &self,
        request: Request<proto::PauseWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        let actor = actor(&request)?;
        let id = uuid("endpoint_id", &request.get_ref().endpoint_id)?;
        let paused = self.service.pause_webhook_endpoint(&actor, id).await?;
        Ok(Response::new(endpoint(paused, false)))
    }

    async fn resume_webhook_endpoint(
        &self,
        request: Request<proto::ResumeWebhookEndpointRequest>,
    ) -> Result<Response<proto::WebhookEndpoint>, Status> {
        let actor = actor(&request)?;
        let id = uuid("endpoint_id", &request.get_ref().endpoint_id)?;
        let resumed = self.service.resume_webhook_endpoint(&actor, id).await?;
        Ok(Response::new(endpoint(resumed, false)))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<proto::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<proto::DeleteWebhookEndpointResponse>, Status> {
        let actor = actor(&request)?;
        let id = uuid("endpoint_id", &request.get_ref().endpoint_id)?;
        self.service.delete_webhook_endpoint(&actor, id).await?;
        Ok(Response::new(proto::DeleteWebhookEndpointResponse {}))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<proto::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<proto::ListWebhookDeliveriesResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.into_inner();
        let id = uuid("endpoint_id", &request.endpoint_id)?;
        let event = optional_uuid("event_id", &request.event_id)?;
        let size = page_size(request.page_size, 50, 100)?;
        let before = match request.page_token.as_str() {
            "" => None,
            raw => Some(
                raw.parse::<i64>()
                    .map_err(|_| Error::invalid("page_token", "is not a page token"))?,
            ),
        };
        let page = self
            .service
            .list_webhook_deliveries(&actor, id, event, before, size)
            .await?;
        Ok(Response::new(proto::ListWebhookDeliveriesResponse {
            deliveries: page.items.into_iter().map(delivery).collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn replay_webhook_events(
        &self,
        request: Request<proto::ReplayWebhookEventsRequest>,
    ) -> Result<Response<proto::ReplayWebhookEventsResponse>, Status> {
        let actor = actor(&request)?;
        let request = request.into_inner();
        let id = uuid("endpoint_id", &request.endpoint_id)?;
        let from = uuid("from_event_id", &request.from_event_id)?;
        let to = optional_uuid("to_event_id", &request.to_event_id)?;
        let queued = self
            .service
            .replay_webhook_events(&actor, id, from, to)
            .await?;
        Ok(Response::new(proto::ReplayWebhookEventsResponse { queued }))
    }

    type WatchBillingEventsStream = EventStream;

    async fn watch_billing_events(
        &self,
        request: Request<proto::WatchBillingEventsRequest>,
    ) -> Result<Response<Self::WatchBillingEventsStream>, Status> {
        let actor = actor(&request)?;
        let request = request.into_inner();
        let start = match (
            optional_uuid("from_event_id", &request.from_event_id)?,
            request.from_oldest,
        ) {
            (Some(_), true) => {
                return Err(Error::invalid(
                    "from_oldest",
                    "cannot be set together with from_event_id",
                )
                .into());
            }
            (Some(id), false) => WatchStart::After(id),
            (None, true) => WatchStart::Oldest,
            (None, false) => WatchStart::Latest,
        };
        let filter = EventFilter {
            types: event_types("types", &request.types)?
                .into_iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            orgs: request
                .org_ids
                .iter()
                .map(|raw| OrgId::parse(raw).field("org_ids"))
                .collect::<Result<_>>()?,
        };
        let events = self
            .service
            .watch_billing_events(&actor, start, filter, WATCH_POLL)
            .await?;
        let stream = ReceiverStream::new(events).map(|event| {
            event
                .and_then(|event| event_codec::to_proto(&event))
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(until_shutdown(
            stream,
            self.stopping.clone(),
        ))))
    }
}
