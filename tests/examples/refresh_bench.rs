//! Refresher throughput: N due connections (default 10,000) on DynamoDB (moto),
//! refreshed by one refresher run at concurrency 32 against the RD Station sandbox
//! answering each token call after 50 ms.
//!
//! Run with `make bench` (starts moto on loopback). Prints wall time beside the
//! ideal `N × 50 ms / 32`, provider calls per refresh, and DynamoDB reads and
//! writes per refresh. `REFRESH_BENCH_STORE=memory` runs the same against the
//! in-memory store, to separate the protocol's own cost from moto's.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use connector::assembly::{Assembly, Parts, Settings};
use connector::clock::{Clock, SystemClock};
use connector::domain::{Connection, ConnectionId, Product, TokenPair};
use connector::outbound::credentials::StaticCredentials;
use connector::outbound::events::RecordingPublisher;
use connector::outbound::memory::MemoryRescueStore;
use connector::ports::ConnectionStore;
use connector::secret::{AccessToken, RefreshToken};
use connector::services::caller_policy::CallerPolicy;
use connector::services::refresh_protocol::RefreshSettings;
use connector::services::scheduled_refresh::{self, RunLimits};
use integration_tests::instrumented::InstrumentedStore;
use integration_tests::moto;
use rd_sandbox::{Sandbox, SandboxConfig, SandboxProduct};

const CONCURRENCY: usize = 32;
const LATENCY: Duration = Duration::from_millis(50);

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("REFRESH_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let config = SandboxConfig::default();
    let sandbox = Sandbox::new(config.clone())
        .spawn_local()
        .await
        .expect("sandbox");
    sandbox.sandbox.set_token_latency(LATENCY);
    let settings = RefreshSettings::default();
    let in_memory = std::env::var("REFRESH_BENCH_STORE").as_deref() == Ok("memory");
    let store = if in_memory {
        InstrumentedStore::new(connector::outbound::memory::MemoryStore::with_due_policy(
            settings.due.clone(),
        ))
    } else {
        InstrumentedStore::new(
            moto::fresh_store()
                .await
                .with_due_policy(settings.due.clone()),
        )
    };
    println!(
        "store: {}",
        if in_memory {
            "in-memory"
        } else {
            "DynamoDB (moto)"
        }
    );
    let credentials = integration_tests::sandbox_credentials(&config);
    let parts = Parts {
        connections: Arc::new(store.clone()),
        sessions: Arc::new(connector::outbound::memory::MemoryStore::new()),
        rescues: if in_memory {
            Arc::new(MemoryRescueStore::default())
        } else {
            Arc::new(moto::fresh_rescue_store().await)
        },
        credentials: Arc::new(StaticCredentials(credentials)),
        events: Arc::new(RecordingPublisher::new()),
        clock: Arc::new(SystemClock),
        rate_budget: Arc::new(connector::outbound::memory::MemoryStore::new()),
        run_lock: Arc::new(connector::outbound::memory::MemoryStore::new()),
        shard_leases: Arc::new(connector::outbound::memory::MemoryStore::new()),
        webhooks: Arc::new(connector::outbound::memory::MemoryStore::new()),
        tenants: Arc::new(connector::outbound::memory::MemoryStore::new()),
    };
    let engine = Assembly::new(
        parts,
        Settings {
            rdstation: integration_tests::sandbox_endpoints(&sandbox),
            refresh: settings,
            public_base: connector::services::connect::PublicBase::Fixed(
                "https://connect.example.com".parse().expect("url"),
            ),
            allowed_return_origins: Vec::new(),
            caller_policy: CallerPolicy::LocalUnauthenticated,
            proxy: connector::services::proxy::ProxySettings::default(),
            tenancy: Default::default(),
        },
    )
    .expect("client")
    .refresh_engine();

    // Seed: half CRM, half Marketing, all a minute from expiry (due now).
    let seeding = Instant::now();
    let now = SystemClock.now();
    let mut tasks = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    for i in 0..n {
        let product = if i % 2 == 0 {
            Product::Crm
        } else {
            Product::Marketing
        };
        let (access, refresh, _) = sandbox.sandbox.issue_pair(match product {
            Product::Crm => SandboxProduct::Crm,
            Product::Marketing => SandboxProduct::Marketing,
        });
        let connection = Connection::connected(
            ConnectionId::in_default_tenant(&format!("bench-{i:05}")).expect("valid"),
            product,
            TokenPair {
                access_token: AccessToken::new(access),
                refresh_token: RefreshToken::new(refresh),
                access_expires_at: now.plus_seconds(60),
            },
            now,
        );
        let store = store.clone();
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        tasks.spawn(async move {
            store.create(&connection).await.expect("seeded");
            drop(permit);
        });
    }
    tasks.join_all().await;
    println!(
        "seeded {n} connections in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let reads_before = store.counts.reads.load(Ordering::Relaxed);
    let writes_before = store.counts.writes.load(Ordering::Relaxed);
    let calls_before = sandbox.sandbox.stats().token_calls;
    let started = Instant::now();
    let summary = scheduled_refresh::run(
        &engine,
        &RunLimits {
            concurrency: CONCURRENCY,
            finish_by_ms: None,
            counted_tenants: vec![connector::domain::TenantId::default_tenant()],
        },
    )
    .await;
    let wall = started.elapsed().as_secs_f64();
    let refreshed = summary.refreshed.max(1) as f64;
    let calls = (sandbox.sandbox.stats().token_calls - calls_before) as f64;
    let reads = (store.counts.reads.load(Ordering::Relaxed) - reads_before) as f64;
    let writes = (store.counts.writes.load(Ordering::Relaxed) - writes_before) as f64;
    let ideal = n as f64 * LATENCY.as_secs_f64() / CONCURRENCY as f64;
    println!(
        "summary: {}",
        serde_json::to_string(&summary).unwrap_or_default()
    );
    println!("connections:               {n}");
    println!(
        "wall time:                 {wall:.1} s (ideal {n} x 50 ms / {CONCURRENCY} = {ideal:.1} s; {:.2}x)",
        wall / ideal
    );
    println!(
        "refreshes per second:      {:.0}",
        summary.refreshed as f64 / wall
    );
    println!("provider calls / refresh:  {:.3}", calls / refreshed);
    println!(
        "DynamoDB reads / refresh:  {:.3} (incl. {} due-index queries)",
        reads / refreshed,
        engine.store.due_shards()
    );
    println!("DynamoDB writes / refresh: {:.3}", writes / refreshed);
    assert_eq!(
        summary.refreshed as usize, n,
        "every due connection refreshed"
    );
}
