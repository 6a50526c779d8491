//! Fanning an event out to its endpoints, and posting one delivery.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::signature::signature_header;
use crate::clock::Clock;
use crate::domain::{TenantId, WebhookScope, endpoint_url};
use crate::ports::{
    DeliveryError, DeliveryQueue, EventKind, PendingDelivery, QueueError, SignedDelivery,
    StoreError, WebhookRegistry, WebhookTransport,
};

/// The longest wait between two attempts of a delivery.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(900);

/// How long to wait before attempt `attempt + 1` after `attempt` failed:
/// `base` doubled each time, at most 15 minutes.
pub fn retry_delay(attempt: u32, base: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY)
}

/// An event as published (on EventBridge, its envelope).
#[derive(Clone, Debug, PartialEq)]
pub struct PublishedEvent {
    /// The event's unique id (EventBridge's `id`).
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// When, RFC 3339.
    pub time: String,
    /// The event's detail (see `outbound::events::event_detail`).
    pub detail: Value,
}

impl PublishedEvent {
    /// The event in an EventBridge envelope (as EventBridge delivers it to an SQS
    /// target); `None` for anything else.
    pub fn from_envelope(envelope: &Value) -> Option<Self> {
        Some(Self {
            id: envelope["id"].as_str()?.to_owned(),
            kind: EventKind::from_detail_type(envelope["detail-type"].as_str()?)?,
            time: envelope["time"].as_str()?.to_owned(),
            detail: envelope.get("detail")?.clone(),
        })
    }

    /// The scopes whose endpoints receive it: the connection's tenant and the
    /// deployment; the deployment alone for a deployment event.
    fn scopes(&self) -> Vec<WebhookScope> {
        if self.detail["connection_id"].is_null() {
            return vec![WebhookScope::Deployment];
        }
        let tenant = self.detail["tenant"]
            .as_str()
            .and_then(|t| TenantId::parse(t).ok())
            .unwrap_or_else(TenantId::default_tenant);
        vec![WebhookScope::Tenant(tenant), WebhookScope::Deployment]
    }

    /// The webhook payload: `{"type", "timestamp", "data"}`.
    fn payload(&self) -> String {
        json!({
            "type": self.kind.webhook_type(),
            "timestamp": self.time,
            "data": self.detail,
        })
        .to_string()
    }
}

/// Why an event could not be fanned out (it is retried whole).
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    /// The endpoints could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The deliveries could not be queued.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Why a delivery did not land (the queue retries it).
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The endpoints could not be read.
    #[error("the endpoints could not be read: {0}")]
    Endpoints(#[from] StoreError),
    /// The endpoint may not be reached, or did not take the delivery.
    #[error(transparent)]
    Post(#[from] DeliveryError),
}

/// How a delivery ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The endpoint answered 2xx.
    Landed,
    /// The endpoint was removed since the event: nothing to deliver.
    EndpointGone,
}

/// Fans events out and posts deliveries. Cheap to clone.
#[derive(Clone)]
pub struct WebhookDeliverer {
    /// Where endpoints are kept.
    pub registry: Arc<dyn WebhookRegistry>,
    /// Where deliveries wait.
    pub queue: Arc<dyn DeliveryQueue>,
    /// Posts a delivery.
    pub transport: Arc<dyn WebhookTransport>,
    /// The clock (`webhook-timestamp`).
    pub clock: Arc<dyn Clock>,
    /// Whether loopback endpoints are allowed (`make run`, the tests).
    pub allow_loopback: bool,
}

impl WebhookDeliverer {
    /// Queues one delivery of `event` per endpoint that receives it; returns
    /// how many.
    ///
    /// # Errors
    /// [`FanOutError`]: nothing is known to be queued; the event is retried
    /// whole (a delivery queued twice has one `webhook-id`).
    pub async fn fan_out(&self, event: &PublishedEvent) -> Result<usize, FanOutError> {
        let body = event.payload();
        let mut deliveries = Vec::new();
        for scope in event.scopes() {
            for endpoint in self.registry.webhooks(&scope).await?.endpoints {
                deliveries.push(PendingDelivery {
                    scope: scope.as_str().to_owned(),
                    webhook_id: endpoint.id,
                    message_id: format!("msg_{}", event.id),
                    body: body.clone(),
                });
            }
        }
        if !deliveries.is_empty() {
            self.queue.queue(&deliveries).await?;
        }
        Ok(deliveries.len())
    }

    /// Posts `pending` to its endpoint as the endpoint is now (its URL checked
    /// again, signed with its current secrets).
    ///
    /// # Errors
    /// [`DeliverError`] when it did not land (the queue retries it).
    pub async fn deliver(&self, pending: &PendingDelivery) -> Result<Delivered, DeliverError> {
        let scope = match pending.scope.as_str() {
            "*" => WebhookScope::Deployment,
            name => match TenantId::parse(name) {
                Ok(tenant) => WebhookScope::Tenant(tenant),
                Err(_) => return Ok(Delivered::EndpointGone),
            },
        };
        let endpoints = self.registry.webhooks(&scope).await?;
        let Some(endpoint) = endpoints
            .endpoints
            .into_iter()
            .find(|w| w.id == pending.webhook_id)
        else {
            return Ok(Delivered::EndpointGone);
        };
        let url = endpoint_url(endpoint.url.as_str(), self.allow_loopback)
            .map_err(|_| DeliverError::Post(DeliveryError::Refused))?;
        let now = self.clock.now();
        let signature = signature_header(
            &endpoint.signing_secrets(now),
            &pending.message_id,
            now.0,
            &pending.body,
        );
        let delivery = SignedDelivery {
            url,
            headers: vec![
                ("content-type", "application/json".to_owned()),
                ("webhook-id", pending.message_id.clone()),
                ("webhook-timestamp", now.0.to_string()),
                ("webhook-signature", signature),
            ],
            body: pending.body.clone(),
        };
        self.transport.post(&delivery).await?;
        Ok(Delivered::Landed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_quarter_hour() {
        let base = Duration::from_secs(30);
        assert_eq!(retry_delay(1, base), Duration::from_secs(30));
        assert_eq!(retry_delay(2, base), Duration::from_secs(60));
        assert_eq!(retry_delay(5, base), Duration::from_secs(480));
        assert_eq!(retry_delay(6, base), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(60, base), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(3, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_connection_event_goes_to_its_tenant_and_the_deployment() {
        let envelope = json!({
            "version": "0", "id": "ev-1", "detail-type": "ConnectionNeedsReauth",
            "source": "rdstation.tokens", "time": "2026-12-04T12:00:00Z",
            "detail": {"connection_id": "shop", "tenant": "acme", "product": "crm", "reason": "revoked"},
        });
        let event = PublishedEvent::from_envelope(&envelope).expect("an event");
        assert_eq!(
            event.scopes(),
            [
                WebhookScope::Tenant(TenantId::parse("acme").expect("valid")),
                WebhookScope::Deployment
            ]
        );
        let payload: Value = serde_json::from_str(&event.payload()).expect("json");
        assert_eq!(payload["type"], "connection.needs_reauth");
        assert_eq!(payload["data"]["connection_id"], "shop");
        let deployment = PublishedEvent {
            kind: EventKind::DeploymentCredentialsRejected,
            detail: json!({"connection_id": null, "reason": "invalid_client"}),
            ..event
        };
        assert_eq!(deployment.scopes(), [WebhookScope::Deployment]);
        assert!(PublishedEvent::from_envelope(&json!({"webhook_id": "x"})).is_none());
    }
}
