//! Lambda: the scheduled refresher. Builds its dependencies once per cold start and
//! hands each event (a scheduled run, or SQS messages naming shards for a
//! worker) to the schedule handler.

use connector::assembly::Assembly;
use connector::config::Config;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    connector::telemetry::init();
    let config = Config::from_env()?;
    let refresher = Assembly::aws(&config)
        .await?
        .refresher(config.refresh_concurrency);
    let refresher = &refresher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        refresher.handle_any(event).await
    }))
    .await
}
