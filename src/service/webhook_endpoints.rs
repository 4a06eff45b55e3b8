//! Operators' webhook endpoints: configuring them, their secrets, pausing
//! and resuming, their deliveries, and replaying events to them. Every use
//! case here is for operators only; endpoints belong to the deployment,
//! not to an organization.

use chrono::TimeDelta;
use uuid::Uuid;

use super::operators::Page;
use super::{Actor, Service};
use crate::domain::ids::IdempotencyKey;
use crate::domain::lifecycle::EventType;
use crate::domain::reason::{ErrorReason, Refused};
use crate::domain::webhooks::{Endpoint, EndpointUrl, RotationPlan};
use crate::error::{Error, Result};
use crate::outbound_webhooks::signature::generate_secret;
use crate::store::{billing_events, webhook_delivery_log, webhook_endpoints};

/// The most events one `ReplayWebhookEvents` call queues.
pub const MAX_REPLAY: i64 = 10_000;

/// A validated new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: EndpointUrl,
    pub description: String,
    pub event_types: Vec<EventType>,
    pub max_in_flight: i32,
    /// A retry with the same key answers the endpoint the first call made.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Validated changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<EndpointUrl>,
    pub description: Option<String>,
    pub event_types: Option<Vec<EventType>>,
    pub max_in_flight: Option<i32>,
}

fn endpoint_not_found(id: Uuid) -> Error {
    Error::NotFound(format!("webhook endpoint {id} not found"))
}

fn not_retained(id: Uuid) -> Error {
    Error::precondition(
        ErrorReason::EventNotRetained,
        format!("event {id} is unknown or past the retention"),
    )
}

impl Service {
    fn check_target(&self, url: &EndpointUrl) -> Result<()> {
        self.inner
            .settings
            .webhooks
            .policy
            .check(url)
            .map_err(|invalid| Error::invalid("url", invalid.0))
    }

    pub async fn create_webhook_endpoint(
        &self,
        actor: &Actor,
        new: NewEndpoint,
    ) -> Result<Endpoint> {
        Self::require_operator(actor, "configure webhook endpoints")?;
        self.check_target(&new.url)?;
        let endpoint = Endpoint {
            id: Uuid::now_v7(),
            url: new.url.as_str().to_owned(),
            description: new.description,
            event_types: new.event_types,
            max_in_flight: new.max_in_flight,
            secret: generate_secret(),
            previous_secret: None,
            paused: None,
            failing_since: None,
            last_error: None,
            created_at: self.now(),
            last_rotation_key: None,
        };
        let key = new.idempotency_key.as_ref().map(IdempotencyKey::as_str);
        let mut conn = self.store().pool().acquire().await?;
        if webhook_endpoints::insert(&mut conn, &endpoint, key).await? {
            tracing::info!(endpoint = %endpoint.id, origin = %endpoint.origin(), "webhook endpoint created");
            return Ok(endpoint);
        }
        // The key made an endpoint already: this is a retry of that call
        // (answered with it, secret included, as the first answer was), or
        // another request reusing the key.
        let made = match key {
            Some(key) => webhook_endpoints::created_under(&mut conn, key).await?,
            None => None,
        };
        let made = match made {
            Some(id) => webhook_endpoints::get(&mut conn, id).await?,
            None => None,
        };
        match made {
            Some(made) if made.has_settings_of(&endpoint) => Ok(made),
            Some(_) => Err(Error::exists(
                ErrorReason::IdempotencyKeyReused,
                "this idempotency_key created an endpoint with other settings",
            )),
            // Deleted between the two statements.
            None => Err(Error::Aborted(
                "the endpoint this idempotency_key created changed meanwhile; retry".into(),
            )),
        }
    }

    pub async fn list_webhook_endpoints(&self, actor: &Actor) -> Result<Vec<Endpoint>> {
        Self::require_operator(actor, "read webhook endpoints")?;
        let mut conn = self.store().pool().acquire().await?;
        webhook_endpoints::list(&mut conn).await
    }

    pub async fn update_webhook_endpoint(
        &self,
        actor: &Actor,
        id: Uuid,
        changes: EndpointChanges,
    ) -> Result<Endpoint> {
        Self::require_operator(actor, "configure webhook endpoints")?;
        if let Some(url) = &changes.url {
            self.check_target(url)?;
        }
        self.change_endpoint(id, |endpoint| {
            if let Some(url) = changes.url {
                endpoint.url = url.as_str().to_owned();
            }
            if let Some(description) = changes.description {
                endpoint.description = description;
            }
            if let Some(types) = changes.event_types {
                endpoint.event_types = types;
            }
            if let Some(max) = changes.max_in_flight {
                endpoint.max_in_flight = max;
            }
            true
        })
        .await
    }

    /// A new secret; the previous one signs beside it for `previous_ttl`.
    /// A retry of the last rotation (its key again) answers that rotation.
    pub async fn rotate_webhook_endpoint_secret(
        &self,
        actor: &Actor,
        id: Uuid,
        previous_ttl: TimeDelta,
        key: Option<IdempotencyKey>,
    ) -> Result<Endpoint> {
        Self::require_operator(actor, "rotate webhook secrets")?;
        let until = (previous_ttl > TimeDelta::zero()).then(|| self.now() + previous_ttl);
        self.change_endpoint(id, |endpoint| match endpoint.plan_rotation(key.as_ref()) {
            RotationPlan::Rotate => {
                endpoint.rotate(generate_secret(), until, key.as_ref());
                true
            }
            RotationPlan::AnswerLastRotation => false,
        })
        .await
    }

    /// Applies `change` to the locked endpoint and stores it, unless
    /// `change` says it changed nothing.
    async fn change_endpoint(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Endpoint) -> bool,
    ) -> Result<Endpoint> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        Self::lock_endpoint(&mut tx, id).await?;
        let mut endpoint = Self::load_endpoint(&mut tx, id).await?;
        let changed = change(&mut endpoint);
        if changed {
            webhook_endpoints::update(&mut tx, &endpoint, now).await?;
        }
        tx.commit().await?;
        if changed {
            tracing::info!(endpoint = %id, origin = %endpoint.origin(), "webhook endpoint changed");
        }
        Ok(endpoint)
    }

    /// Locks the endpoint for the rest of the transaction; NOT_FOUND when
    /// there is none.
    async fn lock_endpoint(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<()> {
        if webhook_endpoints::lock(conn, id).await? {
            Ok(())
        } else {
            Err(endpoint_not_found(id))
        }
    }

    async fn load_endpoint(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<Endpoint> {
        webhook_endpoints::get(conn, id)
            .await?
            .ok_or_else(|| endpoint_not_found(id))
    }

    pub async fn pause_webhook_endpoint(&self, actor: &Actor, id: Uuid) -> Result<Endpoint> {
        Self::require_operator(actor, "pause webhook endpoints")?;
        let mut tx = self.store().begin().await?;
        Self::lock_endpoint(&mut tx, id).await?;
        webhook_endpoints::pause(&mut tx, id, "paused by an operator", self.now()).await?;
        let endpoint = Self::load_endpoint(&mut tx, id).await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    /// Deliveries run again, oldest undelivered first, each with a fresh
    /// retry schedule.
    pub async fn resume_webhook_endpoint(&self, actor: &Actor, id: Uuid) -> Result<Endpoint> {
        Self::require_operator(actor, "resume webhook endpoints")?;
        let mut tx = self.store().begin().await?;
        Self::lock_endpoint(&mut tx, id).await?;
        webhook_endpoints::resume(&mut tx, id, self.now()).await?;
        let endpoint = Self::load_endpoint(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(endpoint = %id, "webhook endpoint resumed");
        Ok(endpoint)
    }

    pub async fn delete_webhook_endpoint(&self, actor: &Actor, id: Uuid) -> Result<()> {
        Self::require_operator(actor, "delete webhook endpoints")?;
        let mut conn = self.store().pool().acquire().await?;
        if !webhook_endpoints::delete(&mut conn, id).await? {
            return Err(endpoint_not_found(id));
        }
        tracing::info!(endpoint = %id, "webhook endpoint deleted");
        Ok(())
    }

    /// The endpoint's deliveries, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        actor: &Actor,
        endpoint: Uuid,
        event: Option<Uuid>,
        before: Option<i64>,
        page_size: i64,
    ) -> Result<Page<webhook_delivery_log::DeliveryRecord, i64>> {
        Self::require_operator(actor, "read webhook deliveries")?;
        let mut conn = self.store().pool().acquire().await?;
        Self::load_endpoint(&mut conn, endpoint).await?;
        let items =
            webhook_delivery_log::list(&mut conn, endpoint, event, before, page_size + 1).await?;
        Ok(Page::of(items, page_size, |d| d.id))
    }

    /// Queues the retained events from `from` to `to` (the newest when
    /// `None`) again for the endpoint; returns how many.
    pub async fn replay_webhook_events(
        &self,
        actor: &Actor,
        endpoint: Uuid,
        from: Uuid,
        to: Option<Uuid>,
    ) -> Result<u64> {
        Self::require_operator(actor, "replay webhook events")?;
        let mut tx = self.store().begin().await?;
        Self::lock_endpoint(&mut tx, endpoint).await?;
        let start = billing_events::position_of(&mut tx, from)
            .await?
            .ok_or_else(|| not_retained(from))?;
        let end = match to {
            None => billing_events::newest_position(&mut tx).await?,
            Some(to) => billing_events::position_of(&mut tx, to)
                .await?
                .ok_or_else(|| not_retained(to))?,
        };
        if end < start {
            return Err(Error::invalid(
                "to_event_id",
                "must not be older than from_event_id",
            ));
        }
        let events = webhook_delivery_log::count_range(&mut tx, endpoint, start, end).await?;
        if events > MAX_REPLAY {
            return Err(Error::FailedPrecondition(
                Refused::new(
                    ErrorReason::ReplayTooLarge,
                    format!(
                        "the range holds {events} events; replay at most {MAX_REPLAY} at a time"
                    ),
                )
                .with("events", events)
                .with("limit", MAX_REPLAY),
            ));
        }
        let queued =
            webhook_delivery_log::replay(&mut tx, endpoint, start, end, self.now()).await?;
        tx.commit().await?;
        tracing::info!(endpoint = %endpoint, queued, "webhook events queued again");
        Ok(queued)
    }
}
