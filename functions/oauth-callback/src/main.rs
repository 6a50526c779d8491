//! Lambda: connect sessions, the redirect to RD Station's consent page, and the
//! OAuth callback. Builds its dependencies once per cold start and serves the
//! router from the `connector` library, converting API Gateway's events itself
//! (see `connector::inbound::apigw`).

use connector::assembly::Assembly;
use connector::config::Config;
use connector::inbound::apigw;
use connector::inbound::http::{Pages, oauth_callback_router};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    connector::telemetry::init();
    let config = Config::from_env()?;
    let service = Assembly::aws(&config).await?.connect_service();
    apigw::run(oauth_callback_router(service, Pages::new(config.brand))).await
}
