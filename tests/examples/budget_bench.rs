//! The proxy's rate budget at a steady load: one connection, 2 requests a
//! second, spread round-robin over 4 instances of the service (each its own
//! token cache and budget slices), for `BUDGET_BENCH_MINUTES` minutes (default
//! 10) of service time, once per budget-slice life (0, 5, 10 and 15 s; 0 is one
//! write per request). The table is DynamoDB on moto, reached through a
//! counting proxy, so every `UpdateItem` is counted; RD is the sandbox.
//!
//! Prints, per slice life: the budget's `UpdateItem`s per proxied request (goal
//! at most 0.2), the requests that reached the sandbox in the busiest 60 s
//! (goal: never above the budget, 120) and in each clock minute, and how many
//! got our 429.
//!
//! Service time is the test clock: each request is made when the clock reads
//! its moment (one each 500 ms), so ten minutes take seconds.
//!
//! Run with `make bench` (starts moto), or with `AWS_ENDPOINT_URL` pointing at
//! a moto server.

use std::time::Duration;

use axum::Router;
use connector::assembly::Assembly;
use connector::clock::Clock;
use connector::domain::Product;
use connector::inbound::http::api_proxy_router;
use connector::outbound::dynamodb::{DynamoStore, schema};
use connector::services::proxy::ProxySettings;
use integration_tests::apigw::{self, EventRequest};
use integration_tests::aws_faults::AwsFaultProxy;
use integration_tests::moto;
use integration_tests::refresh_app::{RefreshApp, test_settings};

const INSTANCES: usize = 4;
const INTERVAL_MS: i64 = 500;
const BUDGET: usize = 120;

/// What one slice life did.
struct Row {
    slice_seconds: u64,
    requests: usize,
    update_items: u64,
    passed: Vec<i64>,
    limited: usize,
    reached_rd: u64,
}

fn busiest_60s(sent: &[i64]) -> usize {
    let mut first = 0;
    let mut busiest = 0;
    for (last, at) in sent.iter().enumerate() {
        while sent[first] <= at - 60_000 {
            first += 1;
        }
        busiest = busiest.max(last - first + 1);
    }
    busiest
}

async fn run(slice_seconds: u64, minutes: i64) -> Row {
    let moto_url =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (make bench sets it)");
    let counting = AwsFaultProxy::start(&moto_url, 0, Duration::ZERO).await;
    let table = moto::unique_name("budget-bench");
    schema::create_table(&moto::dynamodb().await, &table)
        .await
        .expect("table");
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(moto::sdk_config().await)
            .endpoint_url(&counting.endpoint)
            .build(),
    );
    let app = RefreshApp::start_on(test_settings(), DynamoStore::new(client, &table)).await;
    app.connect("steady", Product::Crm).await;
    let mut settings = app.assembly.settings().clone();
    settings.proxy = ProxySettings {
        rate_limit_per_minute: Some(BUDGET as u32),
        budget_slice: Duration::from_secs(slice_seconds),
        ..ProxySettings::default()
    };
    let instances: Vec<Router> = (0..INSTANCES)
        .map(|_| {
            let assembly =
                Assembly::new(app.assembly.parts().clone(), settings.clone()).expect("assembled");
            api_proxy_router(assembly.api_state().expect("state"))
        })
        .collect();
    let request = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/proxy/steady/crm/v2/echo");
    // Warm each instance's token cache first: the reads are not the budget's.
    for router in &instances {
        let _ = apigw::send(router, &request).await;
    }
    app.clock.advance(120);
    let updates_before = counting.counts.operation("UpdateItem");
    let rd_before = app.sandbox.sandbox.stats().api_calls;
    let start = app.clock.now_ms();
    let requests = (minutes * 60_000 / INTERVAL_MS) as usize;
    let mut passed = Vec::new();
    let mut limited = 0;
    for i in 0..requests {
        let due = start + i as i64 * INTERVAL_MS;
        let now = app.clock.now_ms();
        if due > now {
            app.clock.advance_ms(due - now);
        }
        let answer = apigw::send(&instances[i % INSTANCES], &request).await;
        match answer.status {
            200 => passed.push(app.clock.now_ms() - start),
            429 => limited += 1,
            other => panic!("{other}: {}", answer.text()),
        }
    }
    Row {
        slice_seconds,
        requests,
        update_items: counting.counts.operation("UpdateItem") - updates_before,
        passed,
        limited,
        reached_rd: app.sandbox.sandbox.stats().api_calls - rd_before,
    }
}

#[tokio::main]
async fn main() {
    let minutes: i64 = std::env::var("BUDGET_BENCH_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!(
        "rate budget: one connection, 2 requests/s round-robin over {INSTANCES} instances, budget {BUDGET} in any 60 s, {minutes} min of service time"
    );
    println!(
        "slice life | UpdateItem per request | reached RD | busiest 60 s | per clock minute | our 429s"
    );
    for slice_seconds in [0, 5, 10, 15] {
        let row = run(slice_seconds, minutes).await;
        assert_eq!(
            row.reached_rd,
            row.passed.len() as u64,
            "every 200 reached RD once"
        );
        let per_minute: Vec<usize> = (0..minutes)
            .map(|m| row.passed.iter().filter(|t| **t / 60_000 == m).count())
            .collect();
        println!(
            "{:>8} s | {:>22.3} | {:>10} | {:>12} | {:?} | {}",
            row.slice_seconds,
            row.update_items as f64 / row.requests as f64,
            row.reached_rd,
            busiest_60s(&row.passed),
            per_minute,
            row.limited,
        );
    }
}
