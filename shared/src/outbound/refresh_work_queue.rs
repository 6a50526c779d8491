//! The SQS queue a scheduled run hands due-index shards to. The refresher
//! function consumes it through an event source mapping whose maximum
//! concurrency bounds the workers (see `template.yaml`).

use async_trait::async_trait;
use aws_sdk_sqs::Client;

use crate::ports::{RefreshWorkQueue, ShardWork, WorkQueueError};

/// The refresh work queue on SQS.
#[derive(Clone, Debug)]
pub struct SqsWorkQueue {
    client: Client,
    queue_url: String,
}

impl SqsWorkQueue {
    /// The queue at `queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl RefreshWorkQueue for SqsWorkQueue {
    /// One `SendMessage` per shard (a few dozen a run), each authorized by
    /// `sqs:SendMessage` alone. Stops at the first refusal: the run then knows
    /// how many went out.
    async fn hand_out(&self, work: &[ShardWork]) -> Result<usize, WorkQueueError> {
        for (queued, shard) in work.iter().enumerate() {
            let body = serde_json::to_string(shard)
                .map_err(|e| WorkQueueError(format!("shard {}: {e}", shard.shard)))?;
            let sent = self
                .client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(body)
                .send()
                .await;
            if let Err(e) = sent {
                let error = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
                if queued == 0 {
                    return Err(WorkQueueError(error));
                }
                tracing::warn!(
                    shard = shard.shard,
                    error,
                    "SQS refused a shard; the next run hands it out again"
                );
                return Ok(queued);
            }
        }
        Ok(work.len())
    }
}
