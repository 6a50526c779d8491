//! The refresh work queue as the Lambda SQS poller sees it: every message a
//! scheduled run queued, received from moto, and the SQS event Lambda would
//! invoke the refresher with for one of them.

use std::collections::HashMap;

use serde_json::Value;

/// The queue a scheduled run hands its shards to: a fresh SQS queue on moto.
pub async fn create() -> String {
    crate::moto::create_queue(Some("900")).await
}

/// Receives the `count` messages the queue holds, however SQS samples them: an
/// empty receive proves nothing, so this keeps receiving until it has them all
/// (each message's body, by message id).
pub async fn receive_all(queue_url: &str, count: usize) -> Vec<(String, String)> {
    let sqs = crate::moto::sqs().await;
    let mut received: HashMap<String, String> = HashMap::new();
    while received.len() < count {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("moto receives");
        for message in output.messages() {
            received.insert(
                message.message_id().expect("an id").to_owned(),
                message.body().expect("a body").to_owned(),
            );
        }
    }
    let mut messages: Vec<_> = received.into_iter().collect();
    messages.sort();
    messages
}

/// The SQS event Lambda invokes a function with for the message `id` with
/// `body` (`tests/fixtures/sqs/work-message.json`, as AWS documents it).
pub fn sqs_event(id: &str, body: &str) -> Value {
    let mut event: Value =
        serde_json::from_str(include_str!("../fixtures/sqs/work-message.json")).expect("fixture");
    let record = &mut event["Records"][0];
    record["messageId"] = id.into();
    record["body"] = body.into();
    event
}
