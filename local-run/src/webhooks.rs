//! Webhooks without SQS: every event the local run publishes is also fanned
//! out to the registered endpoints here, and each delivery is posted by a task
//! of its own, retried with the deployment's backoff (ten attempts in all,
//! then given up on with a log line): what the delivery queue, its
//! dead-letter queue and the webhook sender do in AWS.

use std::sync::Arc;

use async_trait::async_trait;
use connector::clock::Clock;
use connector::outbound::events::event_detail;
use connector::outbound::webhook_client::HttpsWebhookTransport;
use connector::ports::{
    DeliveryQueue, EventPublisher, PendingDelivery, PublishError, QueueError, ServiceEvent,
    WebhookRegistry,
};
use connector::services::webhooks::{
    PublishedEvent, WebhookDeliverer, WebhookSettings, retry_delay,
};
use tokio::sync::mpsc;

/// Attempts of one delivery, as the template's `maxReceiveCount`.
const ATTEMPTS: u32 = 10;

/// The deliveries waiting to be posted.
struct ChannelQueue(mpsc::UnboundedSender<PendingDelivery>);

#[async_trait]
impl DeliveryQueue for ChannelQueue {
    async fn queue(&self, deliveries: &[PendingDelivery]) -> Result<(), QueueError> {
        for delivery in deliveries {
            self.0
                .send(delivery.clone())
                .map_err(|_| QueueError("the local delivery task has stopped".to_owned()))?;
        }
        Ok(())
    }

    async fn retry_in(
        &self,
        _receipt: &str,
        _delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        Ok(())
    }
}

/// Publishes to `inner`, then fans the event out.
struct FanOutPublisher {
    inner: Arc<dyn EventPublisher>,
    deliverer: WebhookDeliverer,
}

#[async_trait]
impl EventPublisher for FanOutPublisher {
    async fn publish(&self, event: &ServiceEvent) -> Result<(), PublishError> {
        self.inner.publish(event).await?;
        let published = PublishedEvent {
            id: connector::domain::session_nonce(),
            kind: event.kind,
            time: self.deliverer.clock.now().to_rfc3339(),
            detail: event_detail(event),
        };
        if let Err(e) = self.deliverer.fan_out(&published).await {
            tracing::warn!(error = %e, "the event was not fanned out to the webhooks");
        }
        Ok(())
    }
}

/// `inner` with every event also delivered to the webhook endpoints in
/// `registry`, by a task this spawns.
///
/// # Errors
/// When the HTTPS client cannot be built (a bad `WEBHOOK_EXTRA_CA_FILE`).
pub fn delivering(
    inner: Arc<dyn EventPublisher>,
    registry: Arc<dyn WebhookRegistry>,
    clock: Arc<dyn Clock>,
    settings: &WebhookSettings,
) -> anyhow::Result<Arc<dyn EventPublisher>> {
    let (queue, mut waiting) = mpsc::unbounded_channel();
    let deliverer = WebhookDeliverer {
        registry,
        queue: Arc::new(ChannelQueue(queue)),
        transport: Arc::new(HttpsWebhookTransport::new(
            settings.allow_loopback,
            settings.extra_roots_pem.as_deref(),
        )?),
        clock,
        allow_loopback: settings.allow_loopback,
    };
    let posting = deliverer.clone();
    let base = settings.retry_base;
    tokio::spawn(async move {
        while let Some(delivery) = waiting.recv().await {
            let deliverer = posting.clone();
            tokio::spawn(async move {
                for attempt in 1..=ATTEMPTS {
                    match deliverer.deliver(&delivery).await {
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(webhook_id = %delivery.webhook_id, attempt, error = %e, "webhook delivery failed");
                            tokio::time::sleep(retry_delay(attempt, base)).await;
                        }
                    }
                }
                tracing::error!(webhook_id = %delivery.webhook_id, "webhook delivery given up after {ATTEMPTS} attempts");
            });
        }
    });
    Ok(Arc::new(FanOutPublisher { inner, deliverer }))
}
