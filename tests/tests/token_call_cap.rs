//! The deployment-wide cap on calls to RD's token endpoint
//! (`TOKEN_CALLS_PER_SECOND`): after an outage, two refresher instances racing
//! through every due connection never call RD faster than the cap, every
//! connection is refreshed by later runs with one token call each, and a proxied
//! request that meets the cap is answered 503 with `Retry-After` instead of
//! calling RD. DynamoDB on moto, RD's sandbox on loopback.

use connector::clock::Clock;
use connector::domain::{Product, RequestPace};
use connector::inbound::http::api_proxy_router;
use connector::services::scheduled_refresh::{self, RunLimits};
use integration_tests::apigw::{self, EventRequest};
use integration_tests::refresh_app::{RefreshApp, crowd_settings};

/// One call a second: a run of ten due connections meets it at once.
const RATE: u32 = 1;

fn limits() -> RunLimits {
    RunLimits {
        concurrency: 32,
        finish_by_ms: None,
        counted_tenants: vec![connector::domain::TenantId::default_tenant()],
    }
}

#[tokio::test]
async fn two_instances_never_call_rd_faster_than_the_cap_and_every_connection_is_refreshed() {
    let mut settings = crowd_settings();
    settings.token_calls_per_second = Some(RATE);
    let app = RefreshApp::start_with(settings).await;
    let ids: Vec<String> = (0..10).map(|i| format!("backlog-{i}")).collect();
    for id in &ids {
        app.connect(id, Product::Crm).await;
    }
    // RD was down: every connection is due at once.
    app.advance(86_400);
    let other = app.second_instance().await;
    let pace = RequestPace::per_second(RATE);
    let calls_before = app.sandbox.sandbox.stats().token_calls;
    let limits = limits();

    let started_ms = app.clock.now_ms();
    let (first, second) = tokio::join!(
        scheduled_refresh::run(&app.engine, &limits),
        scheduled_refresh::run(&other, &limits)
    );
    let took_ms = app.clock.now_ms() - started_ms;
    let calls = app.sandbox.sandbox.stats().token_calls - calls_before;
    // A second's worth at once, then one per emission while the runs went on.
    let most = 1 + (took_ms / pace.emission_ms) as u64 + 1;
    assert!(
        calls <= most,
        "{calls} token calls in {took_ms} ms (cap: {most})"
    );
    assert!(first.capped + second.capped > 0, "{first:?} {second:?}");
    assert_eq!(first.refreshed + second.refreshed, calls);

    // Later runs (time moving on) take the rest, one token call each.
    for _ in 0..30 {
        let mut left = 0;
        for id in &ids {
            if app.stored(id).await.version == 1 {
                left += 1;
            }
        }
        if left == 0 {
            break;
        }
        app.advance(5);
        tokio::join!(
            scheduled_refresh::run(&app.engine, &limits),
            scheduled_refresh::run(&other, &limits)
        );
    }
    for id in &ids {
        assert!(app.stored(id).await.version > 1, "{id} was refreshed");
        assert!(app.usable(id).await, "{id}");
    }
    let stats = app.sandbox.sandbox.stats();
    assert_eq!(
        stats.token_calls - calls_before,
        ids.len() as u64,
        "one call each"
    );
    assert_eq!(stats.dead_refresh_token_presentations, 0);
}

#[tokio::test]
async fn a_proxied_request_that_meets_the_cap_is_told_when_to_retry() {
    let mut settings = crowd_settings();
    settings.token_calls_per_second = Some(RATE);
    let app = RefreshApp::start_with(settings).await;
    app.connect("capped", Product::Crm).await;
    let router = api_proxy_router(app.assembly.api_state().expect("client"));
    let path = "/proxy/capped/crm/v2/echo";
    let call = || async {
        apigw::send(
            &router,
            &EventRequest::new(apigw::IAM_AUTHORIZED, "GET", path),
        )
        .await
    };
    assert_eq!(call().await.status, 200);
    // RD now refuses the cached token, and the deployment's calls are spent.
    app.sandbox.sandbox.advance_clock(7_300);
    app.clock
        .advance(connector::services::proxy::REFUSAL_COOLDOWN_SECONDS);
    let budget = app.assembly.parts().rate_budget.clone();
    let pace = RequestPace::per_second(RATE);
    while budget
        .take_token_call(pace, app.clock.now_ms())
        .await
        .expect("pace")
        .is_none()
    {}
    let calls = app.sandbox.sandbox.stats().token_calls;
    let answer = call().await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.error_code(), "token_unavailable");
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=1).contains(&retry_after), "{retry_after}");
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        calls,
        "RD was not called"
    );
    // Once the cap allows a call, the same request refreshes and goes through.
    app.clock.advance(2);
    let answer = call().await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls + 1);
}
