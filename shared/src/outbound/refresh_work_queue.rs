//! The SQS queue a scheduled run hands due-index shards to. The refresher
//! function consumes it through an event source mapping whose maximum
//! concurrency bounds the workers (see `template.yaml`).

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::ports::{RefreshWorkQueue, ShardWork, WorkQueueError};

/// SQS takes at most ten messages per batch.
const BATCH: usize = 10;

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
    async fn hand_out(&self, work: &[ShardWork]) -> Result<usize, WorkQueueError> {
        let mut queued = 0;
        for chunk in work.chunks(BATCH) {
            let entries = chunk
                .iter()
                .map(|w| {
                    let body = serde_json::to_string(w)
                        .map_err(|e| WorkQueueError(format!("shard {}: {e}", w.shard)))?;
                    SendMessageBatchRequestEntry::builder()
                        .id(format!("shard-{}", w.shard))
                        .message_body(body)
                        .build()
                        .map_err(|e| WorkQueueError(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    WorkQueueError(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())
                })?;
            for failed in output.failed() {
                tracing::warn!(
                    entry = failed.id(),
                    code = failed.code(),
                    "SQS did not queue a shard; the next run hands it out again"
                );
            }
            queued += output.successful().len();
        }
        Ok(queued)
    }
}
