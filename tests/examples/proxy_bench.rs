//! Proxy overhead: the same GET to the RD Station sandbox on loopback, made
//! directly with reqwest (what a caller would use), directly with hyper's pooled
//! client (what the proxy uses to reach RD), and through the proxy router in
//! process (warm token cache), in turn, N times each (default 2,000). Prints p50
//! and p99 of each and the proxy's ratios to both, and DynamoDB reads and writes
//! per proxied request with the rate budget off and on (the budget is counted in
//! the table, on moto).
//!
//! Run with `make bench` (starts moto on loopback). `PROXY_BENCH_RUNTIME=current_thread`
//! runs everything on one thread, to isolate the proxy's own CPU time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, Uri, header};
use connector::assembly::{Assembly, Parts, Settings};
use connector::clock::{Clock, SystemClock};
use connector::domain::{Connection, ConnectionId, Product, TokenPair};
use connector::inbound::http::api_proxy_router;
use connector::outbound::credentials::{CredentialSet, StaticCredentials};
use connector::outbound::events::RecordingPublisher;
use connector::outbound::memory::MemoryRescueStore;
use connector::ports::{BudgetDecision, ConnectionStore, RateBudget, StoreError};
use connector::secret::{AccessToken, ClientSecret, ExposeSecret, RefreshToken};
use connector::services::caller_policy::CallerPolicy;
use connector::services::proxy::ProxySettings;
use connector::services::refresh_protocol::RefreshSettings;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use integration_tests::instrumented::InstrumentedStore;
use integration_tests::moto;
use rd_sandbox::{Sandbox, SandboxConfig, SandboxProduct};
use tower::ServiceExt;

/// Counts the budget's writes (one conditional update each).
struct CountedBudget {
    inner: Arc<dyn RateBudget>,
    writes: AtomicU64,
}

#[async_trait]
impl RateBudget for CountedBudget {
    async fn take_token_call(
        &self,
        pace: connector::domain::RequestPace,
        now_ms: i64,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        self.inner.take_token_call(pace, now_ms).await
    }

    async fn take(
        &self,
        connection: &ConnectionId,
        access_token: &AccessToken,
        pace: connector::domain::RequestPace,
        wanted: u32,
        horizon_ms: i64,
        now_ms: i64,
    ) -> Result<BudgetDecision, StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner
            .take(connection, access_token, pace, wanted, horizon_ms, now_ms)
            .await
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// p50 and p99 of `times` (sorted here).
fn p50_p99(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (percentile(times, 0.5), percentile(times, 0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `PROXY_BENCH_RUNTIME=current_thread` puts the sandbox, the direct client and
    // the proxy on one thread: no cross-thread wake-ups, so the difference is the
    // proxy's own work. The default (multi-thread) is closer to a deployment.
    let mut runtime = match std::env::var("PROXY_BENCH_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build().expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let n: usize = std::env::var("PROXY_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let config = SandboxConfig::default();
    let sandbox = Sandbox::new(config.clone())
        .spawn_local()
        .await
        .expect("sandbox");
    let table = moto::fresh_store().await;
    let store = InstrumentedStore::new(table.clone());
    let credentials = CredentialSet::new(
        None,
        Some((
            config.crm.client_id.clone(),
            ClientSecret::new(config.crm.client_secret.clone()),
        )),
    );
    let budget = Arc::new(CountedBudget {
        inner: Arc::new(table),
        writes: AtomicU64::new(0),
    });
    let assembly = |rate_limit: Option<u32>| {
        Assembly::new(
            Parts {
                connections: Arc::new(store.clone()),
                sessions: Arc::new(connector::outbound::memory::MemoryStore::new()),
                rescues: Arc::new(MemoryRescueStore::default()),
                credentials: Arc::new(StaticCredentials(credentials.clone())),
                events: Arc::new(RecordingPublisher::new()),
                clock: Arc::new(SystemClock),
                rate_budget: budget.clone(),
                run_lock: Arc::new(connector::outbound::memory::MemoryStore::new()),
                shard_leases: Arc::new(connector::outbound::memory::MemoryStore::new()),
                webhooks: Arc::new(connector::outbound::memory::MemoryStore::new()),
                tenants: Arc::new(connector::outbound::memory::MemoryStore::new()),
            },
            Settings {
                rdstation: integration_tests::sandbox_endpoints(&sandbox),
                refresh: RefreshSettings::default(),
                public_base: connector::services::connect::PublicBase::Fixed(
                    "http://127.0.0.1".parse().expect("url"),
                ),
                allowed_return_origins: Vec::new(),
                caller_policy: CallerPolicy::LocalUnauthenticated,
                proxy: ProxySettings {
                    // High enough never to refuse here: the cost is what is measured.
                    rate_limit_per_minute: rate_limit,
                    ..ProxySettings::default()
                },
                tenancy: Default::default(),
            },
        )
        .expect("client")
    };

    let (access, refresh, expires_in) = sandbox.sandbox.issue_pair(SandboxProduct::Crm);
    let now = SystemClock.now();
    let connection = Connection::connected(
        ConnectionId::in_default_tenant("bench").expect("valid"),
        Product::Crm,
        TokenPair {
            access_token: AccessToken::new(access),
            refresh_token: RefreshToken::new(refresh),
            access_expires_at: now.plus_seconds(expires_in),
        },
        now,
    );
    store.create(&connection).await.expect("stored");
    let direct = reqwest::Client::new();
    let direct_url = sandbox.url("/crm/v2/contacts");
    let token = connection.tokens.access_token.expose_secret().to_owned();
    let hyper: HyperClient<_, Body> = HyperClient::builder(TokioExecutor::new()).build_http();
    let hyper_uri: Uri = direct_url.as_str().parse().expect("uri");
    let bearer = format!("Bearer {token}");

    for (label, rate_limit) in [("budget off", None), ("budget on", Some(1_000_000))] {
        let router = api_proxy_router(assembly(rate_limit).api_state().expect("state"));
        let request = || {
            Request::get("/proxy/bench/crm/v2/contacts")
                .body(Body::empty())
                .expect("request")
        };
        // Warm the cache (one store read), then measure.
        let warm = router.clone().oneshot(request()).await.expect("answer");
        assert_eq!(warm.status(), 200);
        let (reads, writes) = (
            store.counts.reads.load(Ordering::Relaxed),
            budget.writes.load(Ordering::Relaxed),
        );
        let mut via_proxy = Vec::with_capacity(n);
        let mut via_reqwest = Vec::with_capacity(n);
        let mut via_hyper = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let answer = direct
                .get(direct_url.clone())
                .bearer_auth(&token)
                .send()
                .await
                .expect("direct");
            let _ = answer.bytes().await.expect("body");
            via_reqwest.push(started.elapsed());

            let started = Instant::now();
            let direct_request = Request::get(hyper_uri.clone())
                .header(header::AUTHORIZATION, &bearer)
                .body(Body::empty())
                .expect("request");
            let answer = hyper.request(direct_request).await.expect("direct");
            let _ = answer.into_body().collect().await.expect("body");
            via_hyper.push(started.elapsed());

            let started = Instant::now();
            let answer = router.clone().oneshot(request()).await.expect("answer");
            let _ = axum::body::to_bytes(answer.into_body(), usize::MAX)
                .await
                .expect("body");
            via_proxy.push(started.elapsed());
        }
        let (p50, p99) = p50_p99(&mut via_proxy);
        println!("{label}: {n} requests each way");
        for (name, times) in [("reqwest", &mut via_reqwest), ("hyper", &mut via_hyper)] {
            let (d50, d99) = p50_p99(times);
            println!(
                "  direct ({name}): p50 {:.3} ms, p99 {:.3} ms; proxy / direct: p50 {:.2}x, p99 {:.2}x",
                ms(d50),
                ms(d99),
                p50.as_secs_f64() / d50.as_secs_f64(),
                p99.as_secs_f64() / d99.as_secs_f64()
            );
        }
        println!("  proxy: p50 {:.3} ms, p99 {:.3} ms", ms(p50), ms(p99));
        println!(
            "  DynamoDB per proxied request: {:.3} reads, {:.3} writes",
            (store.counts.reads.load(Ordering::Relaxed) - reads) as f64 / n as f64,
            (budget.writes.load(Ordering::Relaxed) - writes) as f64 / n as f64
        );
    }
}
