//! The fault soak: 90 days of RD time for 200 connections (half CRM, half
//! Marketing, Marketing's refresh tokens rolling for a third of the days), in
//! one-day steps (`SOAK_STEP_HOURS`), with the refresher run at each step as
//! deployed (a scheduled run hands the due-index shards out; two workers, one on
//! each instance, refresh them under shard leases; two runs racing at once, or
//! workers cut off at a deadline, at some), proxied calls meeting
//! expired tokens between runs, and faults drawn from a seeded generator: from RD
//! (500, a hang past the token timeout, 429 with `Retry-After`, an answer dropped
//! after RD processed the call, slow answers, 401 on the API) and from DynamoDB
//! (through `aws_faults::AwsFaultProxy`: throttling, throughput exceeded, 500,
//! slow answers, a write's answer dropped after it was applied), in stretches.
//!
//! Afterwards it checks, and prints with counts: no refresh token presented while
//! another call with it was in flight; every refresh token that rolls and was
//! presented more than once met an injected RD fault first; every `possibly_lost`
//! connection is one whose refresh token's answer RD dropped after processing; no
//! `needs_reauth`; every other connection `active` with a token RD accepts; no 5xx
//! of ours to a caller while RD and the store were healthy; no CRM refresh token
//! died idle; every dead refresh token presented is one whose answer RD dropped.
//!
//! `SOAK_SEED` replays a run's fault schedule and calls (the seed is printed;
//! thread interleavings still vary); `SOAK_DAYS`, `SOAK_CONNECTIONS` and
//! `SOAK_STEP_HOURS` shrink or grow it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use connector::clock::Clock;
use connector::domain::{ConnectionStatus, Product};
use connector::inbound::http::api_proxy_router;
use connector::outbound::dynamodb::{DynamoStore, schema};
use connector::outbound::memory::MemoryWorkQueue;
use connector::ports::ShardLease;
use connector::secret::{ExposeSecret, fingerprint};
use connector::services::refresh_protocol::RefreshEngine;
use connector::services::scheduled_refresh::{self, RunLimits};
use integration_tests::apigw::{self, EventRequest};
use integration_tests::aws_faults::{ALL_FAULTS, AwsFaultProxy};
use integration_tests::moto;
use integration_tests::refresh_app::{RefreshApp, crowd_settings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rd_sandbox::{Fault, SandboxProduct};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What happened, for the report.
#[derive(Default)]
struct Tally {
    rd_faults: BTreeMap<&'static str, u64>,
    api_401s_injected: u64,
    slow_rd_steps: u64,
    proxied: u64,
    proxied_by_status: BTreeMap<u16, u64>,
    ours_5xx_while_healthy: u64,
    runs: u64,
    double_runs: u64,
    aws_stretches: u64,
    in_calls: Duration,
    in_runs: Duration,
    cut_off_runs: u64,
}

/// Two workers, one on each instance, take the shards the run handed out until
/// none is left, each under the shard's lease.
async fn work_the_queue(
    engines: &[RefreshEngine; 2],
    leases: &[Arc<dyn ShardLease>; 2],
    queue: &MemoryWorkQueue,
    limits: &RunLimits,
    step: u64,
) {
    let worker = |n: usize| async move {
        let mut invocation = 0;
        while let Some(work) = queue.take() {
            invocation += 1;
            let holder = format!("step-{step}-worker-{n}-{invocation}");
            scheduled_refresh::work_shard(
                &engines[n],
                leases[n].as_ref(),
                limits,
                work.shard,
                &holder,
            )
            .await;
        }
    };
    tokio::join!(worker(0), worker(1));
}

async fn proxied_call(router: &Router, id: &str, product: Product) -> (u16, String) {
    let path = match product {
        Product::Crm => format!("/proxy/{id}/crm/v2/contacts"),
        Product::Marketing => format!("/proxy/{id}/marketing/account_info"),
    };
    let answer = apigw::send(
        router,
        &EventRequest::new(apigw::IAM_AUTHORIZED, "GET", &path),
    )
    .await;
    (answer.status, format!("{id}: {}", answer.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_days_of_faults_lose_no_connection_that_could_be_kept() {
    let seed = env_number("SOAK_SEED", 20_261_202);
    let days = env_number("SOAK_DAYS", 90);
    let count = env_number("SOAK_CONNECTIONS", 200) as usize;
    let step_seconds = env_number("SOAK_STEP_HOURS", 24) as i64 * 3_600;
    println!(
        "soak: seed {seed} (SOAK_SEED={seed} reproduces this run), {count} connections, {days} days"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    // DynamoDB through the fault proxy; the table is made directly on moto.
    let moto_url = std::env::var("AWS_ENDPOINT_URL").expect("make test sets AWS_ENDPOINT_URL");
    let aws = AwsFaultProxy::start(&moto_url, seed, Duration::from_millis(300)).await;
    let table = moto::unique_name("soak");
    schema::create_table(&moto::dynamodb().await, &table)
        .await
        .expect("table");
    let through_faults = aws_sdk_dynamodb::config::Builder::from(moto::sdk_config().await)
        .endpoint_url(&aws.endpoint)
        .build();
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(through_faults), &table);
    let app = RefreshApp::start_on(crowd_settings(), store).await;
    let rd = &app.sandbox.sandbox;
    // Short lives, so that 90 days hold many refreshes: CRM 2 days, Marketing 3.
    rd.set_access_ttl(SandboxProduct::Crm, 2 * 86_400);
    rd.set_access_ttl(SandboxProduct::Marketing, 3 * 86_400);

    let mut connections = Vec::with_capacity(count);
    for i in 0..count {
        let (id, product) = if i % 2 == 0 {
            (format!("crm-{i}"), Product::Crm)
        } else {
            (format!("mkt-{i}"), Product::Marketing)
        };
        app.connect(&id, product).await;
        connections.push((id, product));
    }
    // A second instance of the service, as a second Lambda environment: its own
    // SDK clients (DynamoDB through the same faults), rescue gate and engine.
    let other = app
        .instance_on(aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(moto::sdk_config().await)
                .endpoint_url(&aws.endpoint)
                .build(),
        ))
        .await;
    let engines = [app.engine.clone(), other.refresh_engine()];
    // Each instance's shard leases, on the same table (through the faults).
    let leases = [
        app.assembly.parts().shard_leases.clone(),
        other.parts().shard_leases.clone(),
    ];
    let work = MemoryWorkQueue::new();
    // Two proxy instances, one on each instance of the service.
    let routers = [
        api_proxy_router(app.assembly.api_state().expect("state")),
        api_proxy_router(other.api_state().expect("state")),
    ];

    let mut tally = Tally::default();
    let steps = days * 86_400 / step_seconds as u64;
    for step in 0..steps {
        app.advance(step_seconds);
        // Marketing's refresh tokens roll during the middle third.
        rd.set_marketing_rolling(step >= steps / 3 && step < 2 * steps / 3);

        // This step's faults.
        let mut unhealthy = false;
        if rng.random_bool(0.3) {
            let (fault, name) = match rng.random_range(0..4) {
                0 => (Fault::ServerError, "500"),
                1 => (
                    Fault::hang(Duration::from_millis(700)),
                    "hang past the token timeout",
                ),
                2 => (
                    Fault::RateLimited {
                        retry_after_seconds: 3_600,
                    },
                    "429 with Retry-After",
                ),
                _ => (
                    Fault::DropAfterProcessing,
                    "answer dropped after processing",
                ),
            };
            let n = rng.random_range(1..=3);
            rd.inject_fault(fault, n);
            *tally.rd_faults.entry(name).or_default() += n as u64;
            unhealthy = true;
        }
        if rng.random_bool(0.2) {
            // Each kind in turn, so that every kind has its stretches.
            let fault = ALL_FAULTS[tally.aws_stretches as usize % ALL_FAULTS.len()];
            tally.aws_stretches += 1;
            aws.stretch(Some((fault, 0.25)));
            unhealthy = true;
        } else {
            aws.stretch(None);
        }
        // Slow answers from RD's token endpoint, within the token timeout.
        let slow = rng.random_bool(0.1);
        rd.set_token_latency(if slow {
            Duration::from_millis(150)
        } else {
            Duration::ZERO
        });
        tally.slow_rd_steps += u64::from(slow);
        if rng.random_bool(0.1) {
            rd.inject_api_fault(401, None, 1);
            tally.api_401s_injected += 1;
            unhealthy = true;
        }

        // Callers between runs: some tokens have expired since the last run.
        let mut calls = Vec::new();
        for _ in 0..6 {
            let (id, product) = connections[rng.random_range(0..connections.len())].clone();
            let router = routers[rng.random_range(0..2)].clone();
            calls.push(tokio::spawn(async move {
                proxied_call(&router, &id, product).await
            }));
        }
        let started = std::time::Instant::now();
        for call in calls {
            let (status, answer) = call.await.expect("call");
            tally.proxied += 1;
            *tally.proxied_by_status.entry(status).or_default() += 1;
            if status >= 500 && !unhealthy {
                tally.ours_5xx_while_healthy += 1;
                println!("soak: step {step}: a 5xx while healthy: {answer}");
            }
        }

        tally.in_calls += started.elapsed();
        // The refresher as deployed: a scheduled run hands the shards out, and
        // two workers (one on each instance) take them from the queue at once.
        // Usually one run; sometimes two at once (each handing out every shard,
        // racing for the same due connections); sometimes the workers are cut off.
        let started = std::time::Instant::now();
        let limits = |finish_by_ms| RunLimits {
            concurrency: 32,
            finish_by_ms,
            counted_tenants: vec![connector::domain::TenantId::default_tenant()],
        };
        match rng.random_range(0..10) {
            0 => {
                let unbounded = limits(None);
                tokio::join!(
                    scheduled_refresh::dispatch(&engines[0], &unbounded, &work, "run-a"),
                    scheduled_refresh::dispatch(&engines[1], &unbounded, &work, "run-b")
                );
                work_the_queue(&engines, &leases, &work, &unbounded, step).await;
                tally.runs += 2;
                tally.double_runs += 1;
            }
            1 => {
                let dispatcher = rng.random_range(0..2);
                scheduled_refresh::dispatch(&engines[dispatcher], &limits(None), &work, "run")
                    .await;
                let cut_off = limits(Some(app.clock.now_ms() + 5_000));
                work_the_queue(&engines, &leases, &work, &cut_off, step).await;
                tally.runs += 1;
                tally.cut_off_runs += 1;
            }
            _ => {
                let dispatcher = rng.random_range(0..2);
                let unbounded = limits(None);
                scheduled_refresh::dispatch(&engines[dispatcher], &unbounded, &work, "run").await;
                work_the_queue(&engines, &leases, &work, &unbounded, step).await;
                tally.runs += 1;
            }
        }
        tally.in_runs += started.elapsed();
        // Faults no call met are not carried into the next step.
        rd.clear_faults();
        // A call RD holds past our timeout ends before time jumps a day: in real
        // time the backoff after an ambiguous outcome (at least 60 s) outlasts it,
        // and compressing a day into an instant must not make the next day's call
        // overlap one RD still holds.
        rd.wait_until_idle().await;
    }

    // Healthy again: let backoffs expire and the refresher settle.
    aws.stretch(None);
    rd.clear_faults();
    rd.set_token_latency(Duration::ZERO);
    rd.set_marketing_rolling(false);
    for _ in 0..4 {
        app.advance(3_600);
        app.run().await;
    }

    // The invariants.
    let stats = rd.stats();
    let dropped: HashSet<&String> = stats
        .faults_by_refresh_token
        .iter()
        .filter(|(_, faults)| faults.iter().any(|f| f == "DropAfterProcessing"))
        .map(|(fp, _)| fp)
        .collect();
    // Marketing's stable refresh tokens are meant to be presented at every refresh;
    // a token that rolls on use must be presented once.
    let presented_again: Vec<&String> = stats
        .rolling_calls_by_refresh_token
        .iter()
        .filter(|(_, calls)| **calls > 1)
        .map(|(fp, _)| fp)
        .collect();
    // A repeat is explained when an earlier call with the token met an injected
    // fault, or was abandoned by our client (its timeout ran out while RD was slow,
    // as on a loaded machine): both leave the outcome unknown to the client.
    let unexplained_repeats: Vec<&&String> = presented_again
        .iter()
        .filter(|fp| {
            let faulted = stats
                .faults_by_refresh_token
                .get(**fp)
                .is_some_and(|f| !f.is_empty());
            let abandoned = stats
                .abandoned_calls_by_refresh_token
                .get(**fp)
                .is_some_and(|n| *n > 0);
            !faulted && !abandoned
        })
        .collect();
    for fp in &unexplained_repeats {
        println!(
            "soak: refresh token {fp} was presented again without an injected fault or an abandoned call: calls {:?}, rolling calls {:?}",
            stats.calls_by_refresh_token.get(**fp),
            stats.rolling_calls_by_refresh_token.get(**fp),
        );
    }
    // A dead refresh token is presented when the client never learned of its
    // rotation: RD processed the call and dropped the answer. The same dead token
    // may be presented again when marking the connection failed in between (the
    // store faulting); a dead token whose answer was never dropped is a lost
    // rotation.
    let unexplained_dead: Vec<&String> = stats
        .dead_presentations_by_refresh_token
        .keys()
        .filter(|fp| !dropped.contains(fp))
        .collect();
    for fp in &unexplained_dead {
        println!(
            "soak: dead refresh token {fp} was presented though RD dropped no answer for it: dead presentations {:?}, faults {:?}, calls {:?}",
            stats.dead_presentations_by_refresh_token.get(*fp),
            stats.faults_by_refresh_token.get(*fp),
            stats.calls_by_refresh_token.get(*fp),
        );
    }
    let dead_again = stats
        .dead_presentations_by_refresh_token
        .values()
        .filter(|n| **n > 1)
        .count();
    let abandoned_repeats = presented_again
        .iter()
        .filter(|fp| stats.abandoned_calls_by_refresh_token.contains_key(**fp))
        .count();

    let mut active = 0;
    let mut usable = 0;
    let mut possibly_lost = Vec::new();
    let mut needs_reauth = Vec::new();
    for (id, _) in &connections {
        let c = app.stored(id).await;
        match c.status {
            ConnectionStatus::Active => {
                active += 1;
                if app.usable(id).await {
                    usable += 1;
                }
            }
            ConnectionStatus::PossiblyLost => {
                let fp = fingerprint(c.tokens.refresh_token.expose_secret());
                if !dropped.contains(&fp) {
                    println!(
                        "soak: {id} is possibly_lost ({:?}) though RD dropped no answer for its refresh token {fp}: faults it met {:?}, calls with it {:?}, rolling calls {:?}, version {}, last error {:?}",
                        c.status_reason,
                        stats.faults_by_refresh_token.get(&fp),
                        stats.calls_by_refresh_token.get(&fp),
                        stats.rolling_calls_by_refresh_token.get(&fp),
                        c.version,
                        c.backoff.last_error,
                    );
                }
                possibly_lost.push((id.clone(), fp));
            }
            ConnectionStatus::NeedsReauth => needs_reauth.push(id.clone()),
        }
    }
    let explained_lost = possibly_lost
        .iter()
        .filter(|(_, fp)| dropped.contains(fp))
        .count();

    println!(
        "soak: {} steps of {} h, {} refresher runs ({} steps with two racing at once, {} cut off at a deadline), {} DynamoDB fault stretches",
        steps,
        step_seconds / 3_600,
        tally.runs,
        tally.double_runs,
        tally.cut_off_runs,
        tally.aws_stretches
    );
    println!(
        "soak: wall time in proxied calls {:.1} s, in refresher runs {:.1} s",
        tally.in_calls.as_secs_f64(),
        tally.in_runs.as_secs_f64()
    );
    println!(
        "soak: RD faults injected: {:?}; steps with slow token answers: {}; API 401s injected: {}",
        tally.rd_faults, tally.slow_rd_steps, tally.api_401s_injected
    );
    let aws_counts: Vec<String> = ALL_FAULTS
        .iter()
        .map(|f| format!("{f:?}: {}", aws.counts.of(*f)))
        .collect();
    println!(
        "soak: DynamoDB requests passed {}, faulted: {}",
        aws.counts.passed.load(std::sync::atomic::Ordering::Relaxed),
        aws_counts.join(", ")
    );
    println!(
        "soak: token calls {}, refreshes {}, refresh tokens presented more than once {} (after an injected RD fault or a call our client abandoned: {}; abandoned calls among them: {}), dead refresh tokens presented {} ({} tokens, each after a dropped answer: {}; presented dead more than once: {}), overlapping presentations {}",
        stats.token_calls,
        stats.refreshes,
        presented_again.len(),
        presented_again.len() - unexplained_repeats.len(),
        abandoned_repeats,
        stats.dead_refresh_token_presentations,
        stats.dead_presentations_by_refresh_token.len(),
        stats.dead_presentations_by_refresh_token.len() - unexplained_dead.len(),
        dead_again,
        stats.overlapping_presentations
    );
    println!(
        "soak: proxied calls {} by status {:?}; 5xx of ours while healthy {}",
        tally.proxied, tally.proxied_by_status, tally.ours_5xx_while_healthy
    );
    println!(
        "soak: connections active {active} (token accepted by RD: {usable}), possibly_lost {} (explained by an answer RD dropped after processing: {explained_lost}), needs_reauth {}",
        possibly_lost.len(),
        needs_reauth.len()
    );

    assert_eq!(
        stats.overlapping_presentations, 0,
        "a refresh token was presented twice at once"
    );
    assert!(
        unexplained_repeats.is_empty(),
        "{} refresh tokens were presented again without an injected fault or an abandoned call",
        unexplained_repeats.len()
    );
    assert_eq!(
        explained_lost,
        possibly_lost.len(),
        "possibly_lost without a dropped answer: {possibly_lost:?}"
    );
    assert!(needs_reauth.is_empty(), "needs_reauth: {needs_reauth:?}");
    assert_eq!(
        usable, active,
        "an active connection's token is refused by RD"
    );
    assert_eq!(active + possibly_lost.len(), connections.len());
    assert_eq!(tally.ours_5xx_while_healthy, 0);
    assert!(
        unexplained_dead.is_empty(),
        "{} dead refresh tokens were presented without a dropped answer to explain them",
        unexplained_dead.len()
    );
}
