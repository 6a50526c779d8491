//! `make run`: every HTTP route of the three functions on one localhost port, the
//! refresher on a timer, and — by default — the RD Station sandbox and an
//! in-memory store, so no AWS account is needed. The environment can point it at
//! a real RD Station and at DynamoDB instead (see `environment`). Prints what it
//! uses and the URLs to open.

mod dev_pages;
mod environment;
mod webhooks;

use std::time::Duration;

use anyhow::Context;
use connector::assembly::{Assembly, Settings};
use connector::clock::{Clock, SystemClock};
use connector::domain::TenantId;
use connector::inbound::http::{InvocationDeadline, Pages, api_routes, connect_routes, finish};
use connector::services::caller_policy::CallerPolicy;
use connector::services::connect::PublicBase;
use connector::services::refresh_protocol::RefreshSettings;
use connector::services::scheduled_refresh::{self, RunLimits};
use tokio::net::TcpListener;

fn env_u16(name: &str, default: u16) -> anyhow::Result<u16> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name} must be a whole number up to 65535")),
        Err(_) => Ok(default),
    }
}

/// Ctrl-C or SIGTERM: the run stops serving and exits cleanly.
async fn stop_requested() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = interrupt => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = interrupt.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    connector::telemetry::init();
    // Port 0 takes any free port; the banner says which.
    let service_port = env_u16("PORT", 8787)?;
    let sandbox_port = env_u16("SANDBOX_PORT", 8788)?;
    let listener = TcpListener::bind(("127.0.0.1", service_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{service_port} (set PORT)"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let redirect_uri = format!("{base}/oauth/callback");
    let sandbox_listener = TcpListener::bind(("127.0.0.1", sandbox_port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{sandbox_port} (set SANDBOX_PORT)"))?;

    let rd = environment::rd_target(sandbox_listener, &redirect_uri)?;
    let (mut parts, store_described) = environment::parts(rd.credentials.clone()).await?;
    // Loopback endpoints are allowed here unless the environment says otherwise.
    let webhook_settings = connector::config::webhook_settings_from_lookup(|name| {
        std::env::var(name)
            .ok()
            .or_else(|| (name == "WEBHOOK_ALLOW_LOOPBACK").then(|| "true".to_owned()))
    })?;
    parts.events = webhooks::delivering(
        parts.events.clone(),
        parts.webhooks.clone(),
        parts.clock.clone(),
        &webhook_settings,
    )?;
    let settings = Settings {
        rdstation: rd.endpoints.clone(),
        refresh: RefreshSettings::default(),
        public_base: PublicBase::Fixed(base.parse()?),
        allowed_return_origins: Vec::new(),
        // No API Gateway here to check SigV4: anyone on this machine may call.
        caller_policy: CallerPolicy::LocalUnauthenticated,
        proxy: connector::services::proxy::ProxySettings::default(),
        tenancy: Default::default(),
    };
    let assembly = Assembly::new(parts, settings)?.with_webhook_settings(webhook_settings);
    let engine = assembly.refresh_engine();
    let tenants = assembly.parts().tenants.clone();
    // The scheduled refresher, as EventBridge would run it in AWS.
    let every = Duration::from_secs(env_u16("REFRESH_INTERVAL_SECONDS", 60)?.into());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            let counted_tenants = match tenants.tenants().await {
                Ok(configured) => configured.all_with_default(),
                Err(_) => vec![TenantId::default_tenant()],
            };
            let limits = RunLimits {
                concurrency: 32,
                finish_by_ms: None,
                counted_tenants,
            };
            scheduled_refresh::run(&engine, &limits).await;
        }
    });
    let service = assembly.connect_service();
    let pages = Pages::new(connector::config::brand_from_lookup(|name| {
        std::env::var(name).ok()
    })?);
    let consent_origins = [
        &rd.endpoints.crm_authorize,
        &rd.endpoints.marketing_authorize,
    ]
    .map(|url| url.origin().ascii_serialization())
    .to_vec();
    // One router for everything: routes merged first, finished once.
    let app = finish(
        connect_routes(service.clone(), pages.clone())
            .merge(api_routes(assembly.api_state()?))
            .merge(dev_pages::routes(service, pages.clone(), consent_origins)),
        pages,
    )
    .layer(axum::middleware::map_request(with_deadline));

    print_banner(&base, &rd.described, &store_described, every);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_requested())
        .await?;
    println!("Stopped.");
    Ok(())
}

fn print_banner(base: &str, rd: &str, store: &str, every: Duration) {
    println!();
    println!("RD Station connection service, local run");
    println!("  RD Station:      {rd}");
    println!("  Store:           {store}");
    println!("  Open:            {base}/");
    println!(
        "  Connect:         {base}  (POST /connect/sessions, GET /connect/{{session}}, GET /oauth/callback)"
    );
    println!(
        "  Proxy:           {base}/proxy/<connection_id>/<path on RD's API>  (e.g. /proxy/demo-crm/crm/v2/contacts)"
    );
    println!(
        "  Connections:     {base}/connections[/<id>]  (GET, PATCH, DELETE; POST /connections/<id>/refresh; POST /connections/import, or rdconn import FILE)"
    );
    println!(
        "  Webhooks:        {base}/webhooks  (POST {{\"url\": \"https://…\"}}; loopback endpoints allowed here, WEBHOOK_ALLOW_LOOPBACK)"
    );
    println!(
        "  API description: {base}/openapi.json  (OpenAPI 3.1: every route, its answers and their schemas)"
    );
    println!(
        "  Caller auth:     none here (local routes need no SigV4; in AWS every caller route requires an IAM-signed request)"
    );
    println!(
        "  Open a session:  curl -s -X POST {base}/connect/sessions -H 'content-type: application/json' -d '{{\"connection_id\":\"demo-crm\",\"product\":\"crm\"}}'"
    );
    println!(
        "  Refresher:       runs every {}s (REFRESH_INTERVAL_SECONDS)",
        every.as_secs()
    );
    println!("  Operator CLI:    export RDCONN_URL={base}  then  rdconn connections list");
    println!("Stop with Ctrl-C.");
    println!();
}

/// How long a request may run here: the API function's timeout on Lambda.
const REQUEST_DEADLINE_MS: i64 = 29_000;

/// Gives each request the deadline its Lambda invocation would have, so that a
/// refresh it starts fits the same time here as there.
async fn with_deadline(mut request: axum::extract::Request) -> axum::extract::Request {
    request.extensions_mut().insert(InvocationDeadline(
        SystemClock.now_ms() + REQUEST_DEADLINE_MS,
    ));
    request
}
