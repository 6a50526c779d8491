//! The SQS rescue queue of earlier versions. Rescued pairs now wait in the
//! [`crate::outbound::rescue_store`]; the refresher moves whatever this queue
//! still holds there, and nothing decides anything on what it does or does not
//! return (a receive samples SQS's servers and skips messages in flight).

use async_trait::async_trait;
use aws_sdk_sqs::Client;

use crate::outbound::aws_error::unavailable;
use crate::outbound::rescue_body::{from_body, to_body};
use crate::ports::{LegacyRescueQueue, ReceivedRescue, RescuedPair, StoreError};

/// The SQS queue earlier versions rescued pairs to.
#[derive(Clone, Debug)]
pub struct SqsLegacyRescueQueue {
    client: Client,
    queue_url: String,
}

impl SqsLegacyRescueQueue {
    /// The queue at `queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Sends `rescue` as earlier versions did (tests use it to stand for a queue
    /// left by a deployment of one).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if SQS refuses it.
    pub async fn send_as_earlier_versions_did(
        &self,
        rescue: &RescuedPair,
    ) -> Result<(), StoreError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(to_body(rescue)?)
            .send()
            .await
            .map_err(|e| unavailable("legacy rescue queue", &e))?;
        Ok(())
    }
}

#[async_trait]
impl LegacyRescueQueue for SqsLegacyRescueQueue {
    async fn receive_rescues(&self, max: usize) -> Result<Vec<ReceivedRescue>, StoreError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            // SQS allows 1 to 10 per call.
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .send()
            .await
            .map_err(|e| unavailable("legacy rescue queue", &e))?;
        let mut received = Vec::new();
        for message in output.messages() {
            let (Some(body), Some(receipt)) = (message.body(), message.receipt_handle()) else {
                continue;
            };
            match from_body(body.as_bytes()) {
                Ok(rescue) => received.push(ReceivedRescue {
                    rescue,
                    receipt: receipt.to_owned(),
                }),
                // Kept on the queue (it never moves, so an operator sees it age).
                Err(e) => tracing::error!(
                    message_id = message.message_id().unwrap_or_default(),
                    error = %e,
                    "unreadable rescue message left on the legacy queue"
                ),
            }
        }
        Ok(received)
    }

    async fn delete_rescue(&self, receipt: &str) -> Result<(), StoreError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| unavailable("legacy rescue queue", &e))?;
        Ok(())
    }
}
