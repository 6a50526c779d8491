//! The webhook delivery queue on SQS: EventBridge puts connection events in it
//! (a rule's target), the webhook sender fans each out into one message per
//! endpoint, and each of those is retried on its own, with backoff, until it
//! lands or SQS moves it to the dead-letter queue (see `template.yaml`).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;

use crate::ports::{DeliveryQueue, PendingDelivery, QueueError};

/// The delivery queue on SQS.
#[derive(Clone, Debug)]
pub struct SqsDeliveryQueue {
    client: Client,
    queue_url: String,
}

impl SqsDeliveryQueue {
    /// The queue at `queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

fn error(e: impl std::error::Error) -> QueueError {
    QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

#[async_trait]
impl DeliveryQueue for SqsDeliveryQueue {
    /// One `SendMessage` per delivery (an event has a few endpoints at most).
    async fn queue(&self, deliveries: &[PendingDelivery]) -> Result<(), QueueError> {
        for delivery in deliveries {
            let body = serde_json::to_string(delivery).map_err(|e| QueueError(e.to_string()))?;
            self.client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(body)
                .send()
                .await
                .map_err(error)?;
        }
        Ok(())
    }

    async fn retry_in(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        // SQS takes at most 12 hours.
        let seconds = delay.as_secs().min(43_200) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(error)?;
        Ok(())
    }
}
