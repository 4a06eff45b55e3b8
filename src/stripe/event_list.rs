//! Listing events from Stripe's Events API, for catch-up.

use chrono::{DateTime, Utc};
use stripe_core::event::ListEvent;
use stripe_types::RangeQueryTs;

use super::api::{StripeApi, stripe_error};
use super::events::BillingEvent;
use crate::error::{Error, Result};

/// Events per page: Stripe's most.
const PAGE_SIZE: i64 = 100;

/// An event as listed, with a body the inbox stores as if it had been
/// delivered: the envelope's fields and the object, as Stripe sent them.
#[derive(Debug, Clone)]
pub struct ListedEvent {
    pub id: String,
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub body: String,
    /// The subscription it only asks us to read again, if that is all.
    pub subscription_id: Option<String>,
}

/// One page, newest first; the next page starts after its last event.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<ListedEvent>,
    pub has_more: bool,
}

impl StripeApi {
    /// Events of `types` created at or after `since`, newest first, one
    /// page after the event `after`.
    pub async fn list_events(
        &self,
        since: DateTime<Utc>,
        types: &[&str],
        after: Option<&str>,
    ) -> Result<EventPage> {
        let mut list = ListEvent::new()
            .created(RangeQueryTs::gte(since.timestamp()))
            .types(types.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>())
            .limit(PAGE_SIZE);
        if let Some(after) = after {
            list = list.starting_after(after);
        }
        let page = list
            .send(&self.client.endpoint("list_event"))
            .await
            .map_err(|e| stripe_error("listing events", e))?;
        let events = page
            .data
            .into_iter()
            .map(listed)
            .collect::<Result<Vec<_>>>()?;
        Ok(EventPage {
            events,
            has_more: page.has_more,
        })
    }
}

fn listed(event: stripe_core::Event) -> Result<ListedEvent> {
    let created = DateTime::from_timestamp(event.created, 0).ok_or_else(|| {
        Error::internal(anyhow::anyhow!(
            "Stripe listed event {} with a creation time out of range",
            event.id.as_str()
        ))
    })?;
    // The typed client keeps the object as a JSON value of its own.
    let object: serde_json::Value =
        serde_json::from_str(&miniserde::json::to_string(&event.data.object)).map_err(|e| {
            Error::internal(anyhow::anyhow!(
                "the object of listed event {} is not JSON: {e}",
                event.id.as_str()
            ))
        })?;
    let subscription_id = BillingEvent::coalescing_subject_of(event.type_.as_str(), &object);
    let body = serde_json::json!({
        "id": event.id.as_str(),
        "object": "event",
        "type": event.type_.as_str(),
        "created": event.created,
        "livemode": event.livemode,
        "api_version": event.api_version,
        "data": { "object": object },
    });
    Ok(ListedEvent {
        id: event.id.as_str().to_owned(),
        event_type: event.type_.as_str().to_owned(),
        created,
        body: body.to_string(),
        subscription_id,
    })
}
