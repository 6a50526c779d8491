//! The webhook delivery path on moto as the template deploys it: a bus, a rule
//! sending every event to the delivery queue, the queue's dead-letter queue;
//! and Lambda's SQS poller, emulated: a receive of up to ten messages, the SQS
//! event the function is invoked with, and the delete of every message the
//! function did not report failed.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::json;

use crate::moto::{sdk_config, sqs, unique_name};

/// The bus, the delivery queue and its dead-letter queue.
pub struct DeliveryQueues {
    /// The event bus the service publishes to.
    pub bus: String,
    /// The delivery queue.
    pub queue_url: String,
    /// Its ARN.
    pub queue_arn: String,
    /// Its dead-letter queue.
    pub dead_letter_url: String,
}

async fn arn_of(url: &str) -> String {
    sqs()
        .await
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("moto answers")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .expect("an ARN")
        .clone()
}

/// A queue of its own named after `prefix`, with `attributes`; its URL.
async fn create_queue(prefix: &str, attributes: &[(QueueAttributeName, String)]) -> String {
    let mut request = sqs().await.create_queue().queue_name(unique_name(prefix));
    for (name, value) in attributes {
        request = request.attributes(name.clone(), value);
    }
    request
        .send()
        .await
        .expect("moto creates the queue")
        .queue_url()
        .expect("url")
        .to_owned()
}

impl DeliveryQueues {
    /// Creates them, the queue giving a message to its dead-letter queue after
    /// `max_receives` receives.
    pub async fn create(max_receives: u32) -> Self {
        let dead_letter_url = create_queue("webhooks-dlq", &[]).await;
        let redrive = json!({
            "deadLetterTargetArn": arn_of(&dead_letter_url).await,
            "maxReceiveCount": max_receives.to_string(),
        });
        let queue_url = create_queue(
            "webhooks",
            &[
                (QueueAttributeName::VisibilityTimeout, "180".to_owned()),
                (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            ],
        )
        .await;
        let queue_arn = arn_of(&queue_url).await;
        let events = aws_sdk_eventbridge::Client::new(sdk_config().await);
        let bus = unique_name("connections");
        events
            .create_event_bus()
            .name(&bus)
            .send()
            .await
            .expect("moto creates the bus");
        events
            .put_rule()
            .name("webhooks")
            .event_bus_name(&bus)
            .event_pattern(
                json!({"source": [connector::outbound::events::EVENT_SOURCE]}).to_string(),
            )
            .send()
            .await
            .expect("moto puts the rule");
        events
            .put_targets()
            .rule("webhooks")
            .event_bus_name(&bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("webhook-queue")
                    .arn(&queue_arn)
                    .build()
                    .expect("target"),
            )
            .send()
            .await
            .expect("moto puts the target");
        Self {
            bus,
            queue_url,
            queue_arn,
            dead_letter_url,
        }
    }

    /// One receive of up to ten messages of `url`, waiting up to a second for
    /// the first.
    pub async fn receive(url: &str) -> Vec<Message> {
        sqs()
            .await
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("moto receives")
            .messages()
            .to_vec()
    }

    /// The SQS event Lambda invokes the sender with for `messages`.
    pub fn event(&self, messages: &[Message]) -> SqsEvent {
        serde_json::from_value(lambda_event(messages, &self.queue_arn)).expect("an SQS event")
    }

    /// What the poller does with the function's answer: deletes every message
    /// not reported failed.
    pub async fn settle(&self, messages: &[Message], response: &SqsBatchResponse) {
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        for message in messages {
            if failed.contains(&message.message_id().unwrap_or_default()) {
                continue;
            }
            sqs()
                .await
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("moto deletes");
        }
    }
}

/// The SQS event (as JSON) Lambda invokes a function with for `messages`
/// received from the queue `queue_arn`.
pub fn lambda_event(messages: &[Message], queue_arn: &str) -> serde_json::Value {
    let records: Vec<_> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .attributes()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone().into()))
                .collect();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}
