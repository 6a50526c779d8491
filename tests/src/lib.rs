//! Helpers shared by the integration tests: moto-backed AWS clients, API Gateway
//! HTTP API v2 events, a log capture, and a `TestApp` that wires the callback
//! router to a fresh table, a fresh secret and a sandbox on loopback.

pub mod apigw;
pub mod app;
pub mod aws_faults;
pub mod delivery_queues;
pub mod iam_moto;
pub mod instrumented;
pub mod local_run;
pub mod logs;
pub mod moto;
pub mod openapi;
pub mod refresh_app;
pub mod runtime_api;
pub mod sam_template;
pub mod webdriver;
pub mod webhook_receiver;
pub mod work_queue;

/// RD Station's endpoints on a running sandbox.
pub fn sandbox_endpoints(
    sandbox: &rd_sandbox::RunningSandbox,
) -> connector::outbound::rdstation::RdStationEndpoints {
    connector::outbound::rdstation::RdStationEndpoints {
        api_base: sandbox.base_url.clone(),
        marketing_authorize: sandbox.url("/auth/dialog"),
        crm_authorize: sandbox.url("/oauth/authorize"),
    }
}

/// The app credentials a sandbox with `config` accepts, for both products.
pub fn sandbox_credentials(
    config: &rd_sandbox::SandboxConfig,
) -> connector::outbound::credentials::CredentialSet {
    use connector::secret::ClientSecret;
    connector::outbound::credentials::CredentialSet::new(
        Some((
            config.marketing.client_id.clone(),
            ClientSecret::new(config.marketing.client_secret.clone()),
        )),
        Some((
            config.crm.client_id.clone(),
            ClientSecret::new(config.crm.client_secret.clone()),
        )),
    )
}
