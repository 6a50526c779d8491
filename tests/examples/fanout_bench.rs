//! The refresher's fan-out: refresh throughput against the number of workers.
//! A scheduled run hands the 16 due-index shards to an in-memory work queue;
//! 1, 2, 4 and 8 in-process workers (each its own engine and RD client, as a
//! Lambda environment has; 32 refreshes at a time each) take shards from it
//! under their leases until none is left. The store is in memory; the RD
//! Station sandbox answers each token call after 200 ms.
//!
//! `FANOUT_BENCH_CONNECTIONS` due connections (default 4,000) per worker count.
//! `FANOUT_BENCH_MILLION=1` instead stores 1,000,000 CRM connections whose
//! access tokens expire evenly over the next two hours (the due share a real
//! run meets), runs one scheduled run with 8 workers, and reports refreshes per
//! second, the process's memory, and store operations per refresh.
//!
//! Run: `cargo run --release -p integration-tests --example fanout_bench`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use connector::assembly::{Assembly, Parts, Settings};
use connector::clock::{Clock, SystemClock};
use connector::domain::{Connection, ConnectionId, Product, TenantId, TokenPair};
use connector::outbound::credentials::StaticCredentials;
use connector::outbound::events::RecordingPublisher;
use connector::outbound::memory::{MemoryRescueStore, MemoryStore, MemoryWorkQueue};
use connector::ports::{ConnectionStore, ShardLease};
use connector::secret::{AccessToken, RefreshToken};
use connector::services::caller_policy::CallerPolicy;
use connector::services::refresh_protocol::{RefreshEngine, RefreshSettings};
use connector::services::scheduled_refresh::{self, RunLimits, RunSummary};
use integration_tests::instrumented::InstrumentedStore;
use rd_sandbox::{RunningSandbox, Sandbox, SandboxConfig, SandboxProduct};

const CONCURRENCY: usize = 32;
const LATENCY: Duration = Duration::from_millis(200);

/// One Lambda environment's engine over the shared store and sandbox.
fn engine(
    store: &InstrumentedStore,
    sandbox: &RunningSandbox,
    config: &SandboxConfig,
) -> RefreshEngine {
    let memory = || Arc::new(MemoryStore::new());
    let parts = Parts {
        connections: Arc::new(store.clone()),
        sessions: memory(),
        rescues: Arc::new(MemoryRescueStore::default()),
        credentials: Arc::new(StaticCredentials(integration_tests::sandbox_credentials(
            config,
        ))),
        events: Arc::new(RecordingPublisher::new()),
        clock: Arc::new(SystemClock),
        rate_budget: memory(),
        run_lock: memory(),
        shard_leases: memory(),
        webhooks: memory(),
        tenants: memory(),
    };
    Assembly::new(
        parts,
        Settings {
            rdstation: integration_tests::sandbox_endpoints(sandbox),
            refresh: RefreshSettings::default(),
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
    .refresh_engine()
}

/// Stores `n` CRM connections whose access tokens expire `expires_in(i)`
/// seconds from now.
async fn seed(
    store: &InstrumentedStore,
    sandbox: &RunningSandbox,
    n: usize,
    expires_in: impl Fn(usize) -> i64,
) {
    let now = SystemClock.now();
    for i in 0..n {
        let (access, refresh, _) = sandbox.sandbox.issue_pair(SandboxProduct::Crm);
        let connection = Connection::connected(
            ConnectionId::in_default_tenant(&format!("bench-{i:07}")).expect("valid"),
            Product::Crm,
            TokenPair {
                access_token: AccessToken::new(access),
                refresh_token: RefreshToken::new(refresh),
                access_expires_at: now.plus_seconds(expires_in(i)),
            },
            now,
        );
        store.create(&connection).await.expect("seeded");
    }
}

/// One scheduled run handing out its shards, then `workers` workers taking
/// them until none is left. Returns the workers' summed summary.
async fn fan_out(engines: &[RefreshEngine], leases: Arc<dyn ShardLease>) -> RunSummary {
    let limits = RunLimits {
        concurrency: CONCURRENCY,
        finish_by_ms: None,
        counted_tenants: vec![TenantId::default_tenant()],
    };
    let queue = Arc::new(MemoryWorkQueue::new());
    scheduled_refresh::dispatch(&engines[0], &limits, queue.as_ref(), "bench-run").await;
    let mut workers = tokio::task::JoinSet::new();
    for (n, engine) in engines.iter().enumerate() {
        let (engine, queue, leases, limits) = (
            engine.clone(),
            queue.clone(),
            leases.clone(),
            limits.clone(),
        );
        workers.spawn(async move {
            let mut total = RunSummary::default();
            while let Some(work) = queue.take() {
                let holder = format!("worker-{n}-shard-{}", work.shard);
                let summary = scheduled_refresh::work_shard(
                    &engine,
                    leases.as_ref(),
                    &limits,
                    work.shard,
                    &holder,
                )
                .await;
                total.add(&summary);
            }
            total
        });
    }
    let mut total = RunSummary::default();
    for summary in workers.join_all().await {
        total.add(&summary);
    }
    total
}

/// The process's resident and peak memory, in MiB (Linux).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn scaling(n: usize) {
    println!(
        "{n} due CRM connections, 16 shards, {CONCURRENCY} refreshes at a time per worker, RD answering after {} ms",
        LATENCY.as_millis()
    );
    println!("workers | wall time | refreshes/s | vs 1 worker");
    let mut one_worker = None;
    for workers in [1, 2, 4, 8] {
        let config = SandboxConfig::default();
        let sandbox = Sandbox::new(config.clone())
            .spawn_local()
            .await
            .expect("sandbox");
        sandbox.sandbox.set_token_latency(LATENCY);
        let store =
            InstrumentedStore::new(MemoryStore::with_due_policy(RefreshSettings::default().due));
        seed(&store, &sandbox, n, |_| 60).await;
        let engines: Vec<_> = (0..workers)
            .map(|_| engine(&store, &sandbox, &config))
            .collect();
        let started = Instant::now();
        let summary = fan_out(&engines, Arc::new(MemoryStore::new())).await;
        let wall = started.elapsed().as_secs_f64();
        assert_eq!(
            summary.refreshed as usize, n,
            "every due connection refreshed: {summary:?}"
        );
        let rate = n as f64 / wall;
        let base = *one_worker.get_or_insert(rate);
        println!(
            "{workers:>7} | {wall:>7.1} s | {rate:>11.0} | {:>10.2}x",
            rate / base
        );
    }
}

async fn million() {
    const N: usize = 1_000_000;
    let config = SandboxConfig::default();
    let sandbox = Sandbox::new(config.clone())
        .spawn_local()
        .await
        .expect("sandbox");
    sandbox.sandbox.set_token_latency(LATENCY);
    let store =
        InstrumentedStore::new(MemoryStore::with_due_policy(RefreshSettings::default().due));
    let seeding = Instant::now();
    // Expiries spread evenly over two hours (CRM's access-token life).
    seed(&store, &sandbox, N, |i| 60 + (i as i64 * 7_200) / N as i64).await;
    let (rss, _) = memory_mib();
    println!(
        "stored {N} connections in {:.0} s; resident memory {rss:.0} MiB (the sandbox's grants included)",
        seeding.elapsed().as_secs_f64()
    );
    let engines: Vec<_> = (0..8).map(|_| engine(&store, &sandbox, &config)).collect();
    let reads = store.counts.reads.load(Ordering::Relaxed);
    let writes = store.counts.writes.load(Ordering::Relaxed);
    let started = Instant::now();
    let summary = fan_out(&engines, Arc::new(MemoryStore::new())).await;
    let wall = started.elapsed().as_secs_f64();
    let refreshed = summary.refreshed.max(1) as f64;
    let (rss, peak) = memory_mib();
    println!(
        "one run, 8 workers: {}",
        serde_json::to_string(&summary).unwrap_or_default()
    );
    println!(
        "refreshed {} of {} due in {wall:.1} s: {:.0} refreshes/s",
        summary.refreshed,
        summary.due,
        refreshed / wall
    );
    println!(
        "store per refresh: {:.3} reads, {:.3} writes (due-index queries not counted: {} a run)",
        (store.counts.reads.load(Ordering::Relaxed) - reads) as f64 / refreshed,
        (store.counts.writes.load(Ordering::Relaxed) - writes) as f64 / refreshed,
        engines[0].store.due_shards()
    );
    println!("memory: resident {rss:.0} MiB, peak {peak:.0} MiB");
}

#[tokio::main]
async fn main() {
    if std::env::var("FANOUT_BENCH_MILLION").as_deref() == Ok("1") {
        million().await;
    } else {
        let n = std::env::var("FANOUT_BENCH_CONNECTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4_000);
        scaling(n).await;
    }
}
