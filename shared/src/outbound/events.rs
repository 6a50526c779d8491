//! Event publishers: EventBridge in AWS, a logger where no bus is configured, and a
//! recorder for tests.

use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::json;

use crate::ports::{EventPublisher, PublishError, ServiceEvent};

/// The EventBridge `source` of every event.
pub const EVENT_SOURCE: &str = "rdstation.tokens";

/// The event's `detail`: connection id, product and reason, the tenant when it
/// is not the default one (see `ConnectionId::named_tenant`) and the
/// connection's tags when it has any; never a token.
pub fn event_detail(event: &ServiceEvent) -> serde_json::Value {
    let mut detail = json!({
        "connection_id": event.connection_id.as_ref().map(|id| id.name()),
        "product": event.product,
        "reason": event.reason,
    });
    let tenant = event
        .connection_id
        .as_ref()
        .and_then(|id| id.named_tenant());
    if let Some(object) = detail.as_object_mut() {
        if let Some(tenant) = tenant {
            object.insert("tenant".to_owned(), tenant.as_str().into());
        }
        if !event.tags.is_empty() {
            object.insert("tags".to_owned(), json!(event.tags));
        }
        if let Some(dies_at) = event.dies_at {
            object.insert(
                "refresh_token_dies_at".to_owned(),
                dies_at.to_rfc3339().into(),
            );
        }
    }
    detail
}

/// Publishes to an EventBridge bus.
#[derive(Clone, Debug)]
pub struct EventBridgePublisher {
    client: Client,
    bus: String,
}

impl EventBridgePublisher {
    /// Publishes to `bus` (name or ARN).
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, event: &ServiceEvent) -> Result<(), PublishError> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(event.kind.detail_type())
            .detail(event_detail(event).to_string())
            .build();
        let output = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| {
                PublishError(match e.code() {
                    Some(code) => format!("{code}: {}", e.message().unwrap_or("no message")),
                    None => DisplayErrorContext(&e).to_string(),
                })
            })?;
        if output.failed_entry_count() > 0 {
            let reason = output
                .entries()
                .iter()
                .filter_map(|e| e.error_message())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PublishError(reason));
        }
        Ok(())
    }
}

/// Only logs events: where no bus is configured (local runs, or `EVENT_BUS_NAME`
/// unset). Keeps nothing, so a long-lived process does not grow.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogPublisher;

#[async_trait]
impl EventPublisher for LogPublisher {
    async fn publish(&self, event: &ServiceEvent) -> Result<(), PublishError> {
        tracing::info!(
            detail_type = event.kind.detail_type(),
            detail = %event_detail(event),
            "event"
        );
        Ok(())
    }
}

/// Keeps published events in memory, for tests, and logs them.
#[derive(Debug, Default)]
pub struct RecordingPublisher {
    events: Mutex<Vec<ServiceEvent>>,
}

impl RecordingPublisher {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything published so far.
    pub fn events(&self) -> Vec<ServiceEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl EventPublisher for RecordingPublisher {
    async fn publish(&self, event: &ServiceEvent) -> Result<(), PublishError> {
        LogPublisher.publish(event).await?;
        self.events
            .lock()
            .map_err(|_| PublishError("recorder lock poisoned".to_owned()))?
            .push(event.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionId, Product, Tags, TenantId};
    use crate::ports::EventKind;

    fn detail_for(id: ConnectionId) -> serde_json::Value {
        event_detail(&ServiceEvent {
            kind: EventKind::ConnectionNeedsReauth,
            connection_id: Some(id),
            product: Some(Product::Crm),
            reason: "revoked".to_owned(),
            tags: Tags::parse([("customer".to_owned(), "42".to_owned())].into()).expect("valid"),
            dies_at: None,
        })
    }

    #[test]
    fn an_event_names_the_tenant_of_a_tenants_connection_and_its_tags() {
        let acme = TenantId::parse("acme").expect("valid");
        let detail = detail_for(ConnectionId::parse_in(&acme, "c-1").expect("valid"));
        assert_eq!(
            detail,
            json!({"tenant": "acme", "connection_id": "c-1", "product": "crm", "reason": "revoked", "tags": {"customer": "42"}})
        );
        // The default tenant's, as before tenants existed.
        let detail = detail_for(ConnectionId::in_default_tenant("c-1").expect("valid"));
        assert_eq!(
            detail,
            json!({"connection_id": "c-1", "product": "crm", "reason": "revoked", "tags": {"customer": "42"}})
        );
    }
}
