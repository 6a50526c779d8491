//! AWS clients pointed at the moto server `make test` starts. The SDK reads
//! `AWS_ENDPOINT_URL` itself; these helpers only insist that it is set, so a run
//! outside `make test` fails with a clear message instead of calling real AWS.

use aws_config::SdkConfig;
use connector::outbound::dynamodb::{DynamoStore, schema};
use rand::Rng;
use tokio::sync::OnceCell;

static SDK: OnceCell<SdkConfig> = OnceCell::const_new();

/// The SDK configuration for moto.
///
/// # Panics
/// When `AWS_ENDPOINT_URL` is not a loopback address: run the suite with `make test`.
pub async fn sdk_config() -> &'static SdkConfig {
    SDK.get_or_init(|| async {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        assert!(
            endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
            "AWS_ENDPOINT_URL must point at the moto server on loopback; run the tests with `make test`"
        );
        connector::assembly::sdk_config().await
    })
    .await
}

/// A name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::rng().random::<u64>())
}

/// A DynamoDB client for moto.
pub async fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk_config().await)
}

/// A Secrets Manager client for moto.
pub async fn secretsmanager() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(sdk_config().await)
}

/// A store over a freshly created table of its own.
pub async fn fresh_store() -> DynamoStore {
    let client = dynamodb().await;
    let table = unique_name("connections");
    schema::create_table(&client, &table)
        .await
        .expect("moto creates the table");
    DynamoStore::new(client, table)
}

/// Creates a secret with `json` as its SecretString and returns its name.
pub async fn create_secret(json: &str) -> String {
    let name = unique_name("rd-credentials");
    secretsmanager()
        .await
        .create_secret()
        .name(&name)
        .secret_string(json)
        .send()
        .await
        .expect("moto creates the secret");
    name
}

/// An SQS client for moto.
pub async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk_config().await)
}

/// Creates an SQS queue of its own on moto (with `visibility_seconds` when
/// given) and returns its URL.
pub async fn create_queue(visibility_seconds: Option<&str>) -> String {
    let mut request = sqs()
        .await
        .create_queue()
        .queue_name(unique_name("rescues"));
    if let Some(seconds) = visibility_seconds {
        request = request.attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            seconds,
        );
    }
    request
        .send()
        .await
        .expect("moto creates the queue")
        .queue_url()
        .expect("a queue url")
        .to_owned()
}

/// An S3 client for moto (path-style, as the service builds it for an endpoint).
pub async fn s3() -> aws_sdk_s3::Client {
    connector::assembly::s3_client(sdk_config().await)
}

/// Creates an S3 bucket of its own on moto and returns its name.
pub async fn create_bucket() -> String {
    let name = unique_name("rescues");
    s3().await
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("moto creates the bucket");
    name
}

/// A rescue store over a bucket of its own on moto.
pub async fn fresh_rescue_store() -> connector::outbound::rescue_store::S3RescueStore {
    connector::outbound::rescue_store::S3RescueStore::new(s3().await, create_bucket().await)
}
