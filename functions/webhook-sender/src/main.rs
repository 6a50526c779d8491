//! Lambda: the webhook sender. Builds its dependencies once per cold start and
//! hands each batch from the delivery queue (events EventBridge put there, and
//! the deliveries they fan out into) to the sender; what failed goes back to
//! SQS as batch item failures, retried on its own and, in the end,
//! dead-lettered.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use connector::assembly::Assembly;
use connector::config::Config;
use connector::outbound::delivery_queue::SqsDeliveryQueue;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    connector::telemetry::init();
    let config = Config::from_env()?;
    let queue_url = config
        .webhook_queue_url
        .clone()
        .ok_or("missing environment variable WEBHOOK_QUEUE_URL")?;
    let assembly = Assembly::aws(&config).await?;
    let sdk = connector::assembly::sdk_config().await;
    let queue = SqsDeliveryQueue::new(aws_sdk_sqs::Client::new(&sdk), queue_url);
    let sender = assembly.webhook_sender(Arc::new(queue))?;
    let sender = &sender;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, lambda_runtime::Error>(sender.handle(event.payload).await)
    }))
    .await
}
