//! Builds the service's dependencies on AWS, once per Lambda environment. The SDK
//! reads region, credentials and `AWS_ENDPOINT_URL` from the standard environment,
//! so tests and local runs point it at moto without special code.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::outbound::credentials::SecretsManagerCredentials;
use crate::outbound::dynamodb::DynamoStore;
use crate::outbound::events::{EventBridgePublisher, LogPublisher};
use crate::outbound::rdstation::{ClientBuildError, RdStationClient};
use crate::outbound::rescue_queue::SqsRescueQueue;
use crate::ports::EventPublisher;
use crate::services::caller_policy::CallerPolicy;
use crate::services::connect::ConnectService;
use crate::services::refresh_protocol::RefreshEngine;

/// The shared AWS SDK configuration, from the standard environment, with bounded
/// call times: a refresh commit must not outlive its lease waiting on one request.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}

fn store(sdk: &aws_config::SdkConfig, config: &Config) -> Arc<DynamoStore> {
    Arc::new(
        DynamoStore::new(
            aws_sdk_dynamodb::Client::new(sdk),
            &config.connections_table,
        )
        .with_due_policy(config.refresh.due.clone()),
    )
}

fn credentials(sdk: &aws_config::SdkConfig, config: &Config) -> Arc<SecretsManagerCredentials> {
    Arc::new(SecretsManagerCredentials::new(
        aws_sdk_secretsmanager::Client::new(sdk),
        &config.client_credentials_secret,
    ))
}

/// The connect flow over DynamoDB, Secrets Manager and RD Station.
///
/// # Errors
/// [`ClientBuildError`] if the HTTP client cannot be built.
pub async fn connect_service(config: &Config) -> Result<ConnectService, ClientBuildError> {
    let sdk = sdk_config().await;
    let store = store(&sdk, config);
    Ok(ConnectService {
        connections: store.clone(),
        sessions: store,
        credentials: credentials(&sdk, config),
        rdstation: RdStationClient::new(config.rdstation.clone(), config.token_call_timeout)?,
        clock: Arc::new(SystemClock),
        public_base_url: config.public_base_url.clone(),
        redirect_uri: config.redirect_uri(),
        allowed_return_origins: config.allowed_return_origins.clone(),
        caller_policy: CallerPolicy::Iam {
            allowed_arns: config.allowed_caller_arns.clone(),
        },
    })
}

/// Why the refresh protocol could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum EngineBuildError {
    /// The RD Station HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    /// `RESCUE_QUEUE_URL` is not set: a refresh must have somewhere to save a
    /// pair whose commit failed.
    #[error("missing environment variable RESCUE_QUEUE_URL")]
    NoRescueQueue,
}

/// The refresh protocol over DynamoDB, SQS, Secrets Manager, RD Station and
/// EventBridge (events are only logged when `EVENT_BUS_NAME` is unset).
///
/// # Errors
/// [`EngineBuildError`] if the HTTP client cannot be built or no rescue queue is set.
pub async fn refresh_engine(config: &Config) -> Result<RefreshEngine, EngineBuildError> {
    let queue_url = config
        .rescue_queue_url
        .as_deref()
        .ok_or(EngineBuildError::NoRescueQueue)?;
    let sdk = sdk_config().await;
    let store = store(&sdk, config);
    let events: Arc<dyn EventPublisher> = match &config.event_bus_name {
        Some(bus) => Arc::new(EventBridgePublisher::new(
            aws_sdk_eventbridge::Client::new(&sdk),
            bus,
        )),
        None => Arc::new(LogPublisher),
    };
    Ok(RefreshEngine {
        store,
        rescues: Arc::new(SqsRescueQueue::new(
            aws_sdk_sqs::Client::new(&sdk),
            queue_url,
        )),
        credentials: credentials(&sdk, config),
        rdstation: RdStationClient::new(config.rdstation.clone(), config.refresh.token_timeout())?,
        events,
        clock: Arc::new(SystemClock),
        settings: config.refresh.clone(),
    })
}
