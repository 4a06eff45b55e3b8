//! Lifecycle events as they are published: the domain's [`LifecycleEvent`]
//! as a `billing.v1.BillingEvent`, and that message in the canonical proto3
//! JSON mapping (the webhook body), from the same descriptors reflection
//! serves, so the stream and the webhooks cannot drift apart.
//!
//! An event's data is stored as the JSON of its `BillingEvent.data` member
//! (readable in the database, and what an erasure rewrites); the envelope
//! (id, type, organization, time, state version) is stored in columns,
//! since the state version is only known once the change commits.

mod data;

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions, Value,
};
use uuid::Uuid;

use crate::domain::ids::OrgId;
use crate::domain::lifecycle::{EventType, LifecycleEvent, SCHEMA_VERSION};
use crate::error::{Error, Result};
use crate::proto;
use crate::proto::values::timestamp;

/// An event as recorded, with the state version its change committed at.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedEvent {
    pub id: Uuid,
    pub org_id: Option<OrgId>,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub state_version: u64,
    /// The JSON of the `BillingEvent.data` member named by the type.
    pub data: serde_json::Value,
}

/// The JSON to store for an event's data.
pub fn encode_data(event: &LifecycleEvent) -> Result<serde_json::Value> {
    let descriptor = billing_event()?;
    let message = proto::BillingEvent {
        data: Some(data::to_proto(event)),
        ..proto::BillingEvent::default()
    };
    let dynamic = DynamicMessage::decode(descriptor.clone(), message.encode_to_vec().as_slice())
        .map_err(Error::internal)?;
    let name = data_field_name(event.event_type());
    let value = dynamic
        .get_field_by_name(&name)
        .ok_or_else(|| missing_field(&name))?;
    let Value::Message(inner) = value.as_ref() else {
        return Err(missing_field(&name));
    };
    inner
        .serialize_with_options(serde_json::value::Serializer, &json_options())
        .map_err(Error::internal)
}

/// The event as streamed.
pub fn to_proto(event: &PublishedEvent) -> Result<proto::BillingEvent> {
    let descriptor = billing_event()?;
    let event_type = EventType::parse(&event.event_type)
        .map_err(|invalid| Error::internal(anyhow::anyhow!("stored event type: {}", invalid.0)))?;
    let name = data_field_name(event_type);
    let field = descriptor
        .get_field_by_name(&name)
        .ok_or_else(|| missing_field(&name))?;
    let json = serde_json::json!({ field.json_name(): event.data });
    // Data written by a newer build may carry fields this one does not
    // know: they are left out rather than failing the stream.
    let dynamic = DynamicMessage::deserialize_with_options(
        descriptor,
        json,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(Error::internal)?;
    let data: proto::BillingEvent = dynamic.transcode_to().map_err(Error::internal)?;
    Ok(proto::BillingEvent {
        id: event.id.to_string(),
        r#type: event.event_type.clone(),
        org_id: event.org_id.map(|o| o.to_string()).unwrap_or_default(),
        occurred_at: Some(timestamp(event.occurred_at)),
        state_version: event.state_version,
        schema_version: SCHEMA_VERSION,
        data: data.data,
    })
}

/// The webhook body: the whole event in canonical proto3 JSON, every scalar
/// field present (a message field that does not apply is left out).
pub fn to_json_body(event: &PublishedEvent) -> Result<Vec<u8>> {
    let message = to_proto(event)?;
    let dynamic = DynamicMessage::decode(billing_event()?, message.encode_to_vec().as_slice())
        .map_err(Error::internal)?;
    let mut body = Vec::with_capacity(512);
    dynamic
        .serialize_with_options(&mut serde_json::Serializer::new(&mut body), &json_options())
        .map_err(Error::internal)?;
    Ok(body)
}

/// The `BillingEvent.data` member of a type: its name with dots as
/// underscores ("member.invited" is `member_invited`).
fn data_field_name(event_type: EventType) -> String {
    event_type.as_str().replace('.', "_")
}

fn json_options() -> SerializeOptions {
    SerializeOptions::new().skip_default_fields(false)
}

fn billing_event() -> Result<MessageDescriptor> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    let pool = POOL
        .get_or_init(|| {
            DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::internal(anyhow::anyhow!("the embedded descriptors: {e}")))?;
    pool.get_message_by_name("billing.v1.BillingEvent")
        .ok_or_else(|| missing_field("BillingEvent"))
}

fn missing_field(name: &str) -> Error {
    Error::internal(anyhow::anyhow!(
        "billing.v1.BillingEvent has no data field {name}"
    ))
}

#[cfg(test)]
mod tests;
