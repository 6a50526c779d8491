//! The webhook sender's handler: SQS messages from the delivery queue. A
//! message is either an event EventBridge put there (fanned out into one
//! delivery per endpoint) or one delivery (posted). Whatever failed is reported
//! back as a batch item failure, a failed delivery after its next attempt was
//! put off by the backoff, so SQS retries it alone and, after the queue's
//! `maxReceiveCount`, moves it to the dead-letter queue.

use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde_json::Value;

use crate::ports::PendingDelivery;
use crate::services::webhooks::{Delivered, PublishedEvent, WebhookDeliverer, retry_delay};

/// Handles the delivery queue's messages.
#[derive(Clone)]
pub struct WebhookSender {
    /// Fans out and posts.
    pub deliverer: WebhookDeliverer,
    /// The first retry's delay, doubled for each further one (at most 15
    /// minutes).
    pub retry_base: Duration,
}

/// What one message was.
enum Message {
    Event(PublishedEvent),
    Delivery(PendingDelivery),
}

fn parse(message: &SqsMessage) -> Option<Message> {
    let body: Value = serde_json::from_str(message.body.as_deref()?).ok()?;
    if let Some(event) = PublishedEvent::from_envelope(&body) {
        return Some(Message::Event(event));
    }
    serde_json::from_value(body).ok().map(Message::Delivery)
}

impl WebhookSender {
    /// Handles one batch; the failures are the messages SQS should retry.
    pub async fn handle(&self, batch: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for message in &batch.records {
            if !self.handle_one(message).await {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message.message_id.clone().unwrap_or_default();
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// Whether `message` is done with (handled, or not worth retrying).
    async fn handle_one(&self, message: &SqsMessage) -> bool {
        match parse(message) {
            None => {
                tracing::error!(message_id = ?message.message_id, "a delivery-queue message is neither an event nor a delivery; dropped");
                true
            }
            Some(Message::Event(event)) => match self.deliverer.fan_out(&event).await {
                Ok(count) => {
                    tracing::info!(event_id = %event.id, kind = event.kind.detail_type(), deliveries = count, "event fanned out");
                    true
                }
                Err(e) => {
                    tracing::warn!(event_id = %event.id, error = %e, "event not fanned out; SQS retries it");
                    false
                }
            },
            Some(Message::Delivery(delivery)) => self.deliver(message, &delivery).await,
        }
    }

    async fn deliver(&self, message: &SqsMessage, delivery: &PendingDelivery) -> bool {
        match self.deliverer.deliver(delivery).await {
            Ok(Delivered::Landed) => {
                tracing::info!(webhook_id = %delivery.webhook_id, scope = %delivery.scope, webhook_message = %delivery.message_id, "webhook delivered");
                true
            }
            Ok(Delivered::EndpointGone) => {
                tracing::info!(webhook_id = %delivery.webhook_id, scope = %delivery.scope, "the endpoint was removed; delivery dropped");
                true
            }
            Err(e) => {
                let attempt = message
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(1);
                let delay = retry_delay(attempt, self.retry_base);
                tracing::warn!(webhook_id = %delivery.webhook_id, scope = %delivery.scope, attempt, retry_in_seconds = delay.as_secs(), error = %e, "webhook delivery failed");
                if let Some(receipt) = &message.receipt_handle
                    && let Err(e) = self.deliverer.queue.retry_in(receipt, delay).await
                {
                    tracing::warn!(error = %e, "the retry could not be put off; SQS retries after the queue's visibility timeout");
                }
                false
            }
        }
    }
}
