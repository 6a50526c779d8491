//! The rescue queue on SQS: rotated pairs whose commit to the table failed wait
//! here, outside the table, until the refresher restores them. The queue is
//! encrypted at rest (SQS-managed SSE, declared in the template); the message body
//! is the pair as JSON, built and read only in this module.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::domain::{ConnectionId, TokenPair};
use crate::ports::{ReceivedRescue, RescueQueue, RescuedPair, StoreError};
use crate::secret::{AccessToken, ExposeSecret, RefreshToken};

/// Rescued pairs on an SQS queue.
#[derive(Clone, Debug)]
pub struct SqsRescueQueue {
    client: Client,
    queue_url: String,
}

impl SqsRescueQueue {
    /// The queue at `queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

/// The message body. Only this module sees the tokens in plain text.
#[derive(Serialize, Deserialize)]
struct Body {
    connection_id: String,
    lease_id: String,
    access_token: String,
    refresh_token: String,
    access_expires_at: i64,
    spent_refresh_token: String,
    replaced_access_token: String,
    rescued_at: i64,
}

fn to_body(r: &RescuedPair) -> Result<String, StoreError> {
    serde_json::to_string(&Body {
        connection_id: r.connection_id.as_str().to_owned(),
        lease_id: r.lease_id.clone(),
        access_token: r.tokens.access_token.expose_secret().to_owned(),
        refresh_token: r.tokens.refresh_token.expose_secret().to_owned(),
        access_expires_at: r.tokens.access_expires_at.0,
        spent_refresh_token: r.spent_refresh_token.clone(),
        replaced_access_token: r.replaced_access_token.clone(),
        rescued_at: r.rescued_at.0,
    })
    .map_err(|e| StoreError::Corrupt(format!("rescued pair not serialisable: {e}")))
}

fn from_body(text: &str) -> Result<RescuedPair, StoreError> {
    // The serde error may quote the body: never pass it on.
    let body: Body = serde_json::from_str(text)
        .map_err(|_| StoreError::Corrupt("a rescue message is not a rescued pair".to_owned()))?;
    Ok(RescuedPair {
        connection_id: ConnectionId::parse(&body.connection_id)
            .map_err(|e| StoreError::Corrupt(format!("rescue message: {e}")))?,
        lease_id: body.lease_id,
        tokens: TokenPair {
            access_token: AccessToken::new(body.access_token),
            refresh_token: RefreshToken::new(body.refresh_token),
            access_expires_at: Timestamp(body.access_expires_at),
        },
        spent_refresh_token: body.spent_refresh_token,
        replaced_access_token: body.replaced_access_token,
        rescued_at: Timestamp(body.rescued_at),
    })
}

fn unavailable<E>(err: &E) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match err.code() {
        Some(code) => StoreError::Unavailable(format!(
            "rescue queue: {code}: {}",
            err.message().unwrap_or("no message")
        )),
        None => StoreError::Unavailable(format!("rescue queue: {}", DisplayErrorContext(err))),
    }
}

impl SqsRescueQueue {
    /// Up to 10 waiting pairs, left visible to every receiver (for inspection).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if SQS cannot be reached.
    pub async fn peek(&self) -> Result<Vec<RescuedPair>, StoreError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        output
            .messages()
            .iter()
            .filter_map(|m| m.body())
            .map(from_body)
            .collect()
    }
}

#[async_trait]
impl RescueQueue for SqsRescueQueue {
    async fn put_rescue(&self, rescue: &RescuedPair) -> Result<(), StoreError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(to_body(rescue)?)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }

    async fn receive_rescues(&self, max: usize) -> Result<Vec<ReceivedRescue>, StoreError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            // SQS allows 1 to 10 per call.
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut received = Vec::new();
        for message in output.messages() {
            let (Some(body), Some(receipt)) = (message.body(), message.receipt_handle()) else {
                continue;
            };
            match from_body(body) {
                Ok(rescue) => received.push(ReceivedRescue {
                    rescue,
                    receipt: receipt.to_owned(),
                }),
                // Kept on the queue (it never restores, so an operator sees it age).
                Err(e) => tracing::error!(
                    message_id = message.message_id().unwrap_or_default(),
                    error = %e,
                    "unreadable rescue message left on the queue"
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
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }

    async fn return_rescue(&self, receipt: &str) -> Result<(), StoreError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_bad_ones_do_not_echo() {
        let r = RescuedPair {
            connection_id: ConnectionId::parse("c-1").expect("valid"),
            lease_id: "l".to_owned(),
            tokens: TokenPair {
                access_token: AccessToken::new("at-secret".to_owned()),
                refresh_token: RefreshToken::new("rt-secret".to_owned()),
                access_expires_at: Timestamp(9),
            },
            spent_refresh_token: "fp1".to_owned(),
            replaced_access_token: "fp2".to_owned(),
            rescued_at: Timestamp(5),
        };
        let body = to_body(&r).expect("serialised");
        assert_eq!(from_body(&body).expect("parsed"), r);
        let err = from_body(r#"{"access_token":"at-secret"}"#).expect_err("incomplete");
        assert!(!err.to_string().contains("at-secret"));
    }
}
