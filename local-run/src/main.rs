//! `make run`: the service and the RD Station sandbox on localhost, with an
//! in-memory store and no AWS account. Prints the URLs to open.

mod dev_pages;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use connector::assembly::{Assembly, Parts, Settings};
use connector::clock::SystemClock;
use connector::inbound::http::{api_routes, connect_routes, finish};
use connector::outbound::credentials::{CredentialSet, StaticCredentials};
use connector::outbound::events::LogPublisher;
use connector::outbound::memory::{MemoryRescueQueue, MemoryStore};
use connector::outbound::rdstation::RdStationEndpoints;
use connector::secret::ClientSecret;
use connector::services::caller_policy::CallerPolicy;
use connector::services::connect::PublicBase;
use connector::services::refresh_protocol::RefreshSettings;
use connector::services::scheduled_refresh::{self, RunLimits};
use rd_sandbox::{Sandbox, SandboxConfig};
use tokio::net::TcpListener;

fn env_u16(name: &str, default: u16) -> anyhow::Result<u16> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a whole number up to 65535")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let service_port = env_u16("PORT", 8787)?;
    let sandbox_port = env_u16("SANDBOX_PORT", 8788)?;
    let public_base_url = format!("http://127.0.0.1:{service_port}");
    let redirect_uri = format!("{public_base_url}/oauth/callback");

    let mut sandbox_config = SandboxConfig::default();
    sandbox_config.marketing.redirect_uri = Some(redirect_uri.clone());
    sandbox_config.crm.redirect_uri = Some(redirect_uri.clone());
    let credentials = CredentialSet::new(
        Some((
            sandbox_config.marketing.client_id.clone(),
            ClientSecret::new(sandbox_config.marketing.client_secret.clone()),
        )),
        Some((
            sandbox_config.crm.client_id.clone(),
            ClientSecret::new(sandbox_config.crm.client_secret.clone()),
        )),
    );
    let sandbox_listener = TcpListener::bind(("127.0.0.1", sandbox_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{sandbox_port} (set SANDBOX_PORT)"))?;
    let sandbox = Sandbox::new(sandbox_config).spawn_on(sandbox_listener)?;

    let store = Arc::new(MemoryStore::new());
    let parts = Parts {
        connections: store.clone(),
        sessions: store.clone(),
        rescues: Arc::new(MemoryRescueQueue::default()),
        credentials: Arc::new(StaticCredentials(credentials)),
        events: Arc::new(LogPublisher),
        clock: Arc::new(SystemClock),
        rate_budget: store,
        run_lock: Arc::new(connector::outbound::memory::MemoryStore::new()),
    };
    let settings = Settings {
        rdstation: RdStationEndpoints {
            api_base: sandbox.base_url.clone(),
            marketing_authorize: sandbox.url("/auth/dialog"),
            crm_authorize: sandbox.url("/oauth/authorize"),
        },
        refresh: RefreshSettings::default(),
        public_base: PublicBase::Fixed(public_base_url.parse()?),
        allowed_return_origins: Vec::new(),
        // No API Gateway here to check SigV4: anyone on this machine may call.
        caller_policy: CallerPolicy::LocalUnauthenticated,
        proxy: connector::services::proxy::ProxySettings::default(),
    };
    let assembly = Assembly::new(parts, settings)?;
    let engine = assembly.refresh_engine();
    // The scheduled refresher, as EventBridge would run it in AWS.
    let every = Duration::from_secs(env_u16("REFRESH_INTERVAL_SECONDS", 60)?.into());
    tokio::spawn(async move {
        let limits = RunLimits {
            concurrency: 32,
            finish_by_ms: None,
        };
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            scheduled_refresh::run(&engine, &limits).await;
        }
    });
    let service = assembly.connect_service();
    // One router for everything: routes merged first, finished once.
    let app = finish(
        connect_routes(service.clone())
            .merge(api_routes(assembly.api_state()?))
            .merge(dev_pages::routes(service)),
    );

    let listener = TcpListener::bind(("127.0.0.1", service_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{service_port} (set PORT)"))?;
    println!();
    println!("RD Station connection service, local run (in-memory store, RD Station sandbox)");
    println!("  Open:            {public_base_url}/");
    println!(
        "  Service API:     {public_base_url}  (POST /connect/sessions, GET /connect/{{session}}, GET /oauth/callback)"
    );
    println!(
        "  RD sandbox:      {}  (control: /_sandbox/stats)",
        sandbox.base_url.as_str().trim_end_matches('/')
    );
    println!(
        "  Proxy:           {public_base_url}/proxy/<connection_id>/<path on RD's API>  (e.g. /proxy/demo-crm/crm/v2/contacts)"
    );
    println!(
        "  Connections:     {public_base_url}/connections/<id>  (GET, DELETE; POST .../refresh)"
    );
    println!(
        "  Caller auth:     NONE (local run; in AWS every caller route requires an IAM-signed caller)"
    );
    println!(
        "  Open a session:  curl -s -X POST {public_base_url}/connect/sessions -H 'content-type: application/json' -d '{{\"connection_id\":\"demo-crm\",\"product\":\"crm\"}}'"
    );
    println!(
        "  Refresher:       runs every {}s (REFRESH_INTERVAL_SECONDS)",
        every.as_secs()
    );
    println!("Stop with Ctrl-C.");
    println!();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
