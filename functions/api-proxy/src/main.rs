//! Lambda: the proxy to RD Station's API and the connections API. Builds its
//! dependencies once per cold start (the token cache lives as long as the
//! environment) and serves the router from the `connector` library, converting
//! API Gateway's events itself (see `connector::inbound::apigw`).

use connector::assembly::Assembly;
use connector::config::Config;
use connector::inbound::apigw;
use connector::inbound::http::api_proxy_router;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    connector::telemetry::init();
    let config = Config::from_env()?;
    let state = Assembly::aws(&config).await?.api_state()?;
    apigw::run(api_proxy_router(state)).await
}
