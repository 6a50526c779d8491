//! The API function end to end: API Gateway HTTP API v2 events (IAM-signed) into
//! the proxy router, DynamoDB and SQS on moto, the RD Station sandbox on loopback.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use connector::clock::Clock;
use connector::domain::Product;
use connector::inbound::http::api_proxy_router;
use connector::outbound::rdstation::api_client::RdApiClient;
use connector::secret::ExposeSecret;
use integration_tests::apigw::{self, Answer, EventRequest};
use integration_tests::refresh_app::RefreshApp;
use rd_sandbox::SandboxProduct;
use serde_json::json;

/// A proxy instance (its own token cache) over the app's store and sandbox.
fn instance(app: &RefreshApp) -> Router {
    api_proxy_router(app.assembly.api_state().expect("client"))
}

async fn call(router: &Router, method: &str, path: &str, query: &str) -> Answer {
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, method, path);
    request.query = query;
    apigw::send(router, &request).await
}

fn echo_path(product: Product, id: &str) -> String {
    match product {
        Product::Marketing => format!("/proxy/{id}/platform/echo"),
        Product::Crm => format!("/proxy/{id}/crm/v2/echo"),
    }
}

/// No token or client secret in anything a caller received.
fn assert_no_secret_in(app: &RefreshApp, answers: &[&Answer]) {
    for secret in app.secrets() {
        for answer in answers {
            assert!(!answer.text().contains(&secret), "a secret in a body");
            for value in answer.headers.values() {
                assert!(
                    !value.to_str().unwrap_or_default().contains(&secret),
                    "a secret in a header"
                );
            }
        }
    }
}

#[tokio::test]
async fn requests_round_trip_with_one_upstream_call_each() {
    let app = RefreshApp::start().await;
    let router = instance(&app);
    for (id, product) in [("rt-mkt", Product::Marketing), ("rt-crm", Product::Crm)] {
        app.connect(id, product).await;
        let path = echo_path(product, id);

        // GET with a query string.
        let calls = app.sandbox.sandbox.stats().api_calls;
        let mut get = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", &path);
        get.query = "page=2&q=ana%20maria";
        get.headers.push(("x-custom", "kept"));
        get.cookies.push("caller_session=secret-cookie".to_owned());
        let answer = apigw::send(&router, &get).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.headers["x-echo-method"], "GET");
        assert_eq!(answer.headers["x-echo-query"], "page=2&q=ana%20maria");
        assert_eq!(answer.headers["x-echo-custom"], "kept");
        assert_eq!(answer.headers["x-rd-request-id"], "sandbox-request");
        assert!(
            answer.headers.get("x-echo-cookie").is_none(),
            "cookies stay"
        );
        assert!(answer.headers.get("x-echo-forwarded-for").is_none());
        assert!(
            answer.headers.get("set-cookie").is_none(),
            "RD's cookies stay"
        );
        assert_eq!(app.sandbox.sandbox.stats().api_calls, calls + 1);

        // POST with a JSON body.
        let mut post = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", &path);
        let body = json!({"name": "Ana", "tags": ["a", "b"]}).to_string();
        post.body = Some(body.clone().into_bytes());
        post.headers.push(("content-type", "application/json"));
        let answer = apigw::send(&router, &post).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.text(), body);
        assert_eq!(answer.headers["content-type"], "application/json");

        // A binary body, base64 in the event as API Gateway sends it.
        let bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut put = EventRequest::new(apigw::IAM_AUTHORIZED, "PUT", &path);
        put.body = Some(bytes.clone());
        put.base64 = true;
        put.headers
            .push(("content-type", "application/octet-stream"));
        let answer = apigw::send(&router, &put).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, bytes);

        // RD's own status comes back as it is.
        let answer = call(&router, "GET", &path, "status=422").await;
        assert_eq!(answer.status, 422);
        assert_eq!(app.sandbox.sandbox.stats().api_calls, calls + 4);
        assert_no_secret_in(&app, &[&answer]);
    }
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        2,
        "the two code exchanges"
    );
}

#[tokio::test]
async fn an_answer_too_large_to_pass_back_gets_our_502_and_is_asked_for_once() {
    let app = RefreshApp::start().await;
    app.connect("big", Product::Crm).await;
    // The same proxy with a 1 KiB answer limit (4 MiB in a deployment), so the
    // sandbox's echo can cross it with a small body.
    let mut state = app.assembly.api_state().expect("client");
    state.proxy.upstream = Arc::new(
        RdApiClient::new(
            integration_tests::sandbox_endpoints(&app.sandbox).api_base,
            Duration::from_secs(5),
            1024,
        )
        .expect("client"),
    );
    let router = api_proxy_router(state);
    let path = echo_path(Product::Crm, "big");
    let put = |size: usize| {
        let mut put = EventRequest::new(apigw::IAM_AUTHORIZED, "PUT", &path);
        put.body = Some(vec![b'x'; size]);
        put.headers
            .push(("content-type", "application/octet-stream"));
        put
    };
    let calls = app.sandbox.sandbox.stats().api_calls;
    let answer = apigw::send(&router, &put(1024)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body.len(), 1024);
    // PUT is idempotent, so a 5xx from RD would be retried; this is not RD's 5xx.
    let answer = apigw::send(&router, &put(1025)).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    assert_eq!(answer.error_code(), "rdstation_answer_too_large");
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls + 2);
}

#[tokio::test]
async fn a_token_expired_at_rd_is_refreshed_once_and_the_call_retried_once() {
    let app = RefreshApp::start().await;
    app.connect("expired", Product::Crm).await;
    let router = instance(&app);
    let path = echo_path(Product::Crm, "expired");
    assert_eq!(call(&router, "GET", &path, "").await.status, 200);
    // RD's clock passes the token's expiry; the service still thinks it is fresh.
    app.sandbox.sandbox.advance_clock(7_300);
    // A refusal of a pair issued moments ago is not expiry: time passes for us too.
    app.clock
        .advance(connector::services::proxy::REFUSAL_COOLDOWN_SECONDS);
    let (tokens, api) = (
        app.sandbox.sandbox.stats().token_calls,
        app.sandbox.sandbox.stats().api_calls,
    );
    let answer = call(&router, "GET", &path, "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let stats = app.sandbox.sandbox.stats();
    assert_eq!(stats.token_calls, tokens + 1, "exactly one refresh");
    assert_eq!(stats.api_calls, api + 2, "the 401 and one retry");

    // A 401 to the pair just issued goes back to the caller as it is, with no
    // rotation (it is not expiry). (Before: every 401 rotated the pair again.)
    let (tokens, api) = (
        app.sandbox.sandbox.stats().token_calls,
        app.sandbox.sandbox.stats().api_calls,
    );
    let answer = call(&router, "GET", &path, "status=401").await;
    assert_eq!(answer.status, 401);
    assert_eq!(app.sandbox.sandbox.stats().api_calls, api + 1);
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        tokens,
        "no rotation"
    );
    // Later, a 401 refreshes once; a second 401 goes back as it is.
    app.clock
        .advance(connector::services::proxy::REFUSAL_COOLDOWN_SECONDS);
    let api = app.sandbox.sandbox.stats().api_calls;
    let answer = call(&router, "GET", &path, "status=401").await;
    assert_eq!(answer.status, 401);
    assert_eq!(app.sandbox.sandbox.stats().api_calls, api + 2);
    assert_eq!(app.sandbox.sandbox.stats().token_calls, tokens + 1);
    assert_no_secret_in(&app, &[&answer]);
}

/// The invocation's deadline reaches the 401 path: with the deployed timing
/// (T = 10 s, commit budget 10 s), a request whose invocation has 3 s left when
/// RD answers 401 claims no lease and calls no token endpoint, so no rotated
/// pair can be left in memory when Lambda ends it; with a whole invocation
/// ahead, the same 401 refreshes. (Before: the proxy passed no deadline, and
/// the 3 s request claimed and called RD.)
#[tokio::test]
async fn a_401_with_too_little_invocation_left_claims_no_lease() {
    let app =
        RefreshApp::start_with(connector::services::refresh_protocol::RefreshSettings::default())
            .await;
    app.connect("late", Product::Crm).await;
    let router = instance(&app);
    let path = echo_path(Product::Crm, "late");
    assert_eq!(call(&router, "GET", &path, "").await.status, 200);
    // RD's clock passes the token's expiry; the service still thinks it is fresh.
    app.sandbox.sandbox.advance_clock(7_300);
    // A refusal of a pair issued moments ago is not expiry: time passes for us too.
    app.clock
        .advance(connector::services::proxy::REFUSAL_COOLDOWN_SECONDS);
    let before = app.stored("late").await;
    let tokens = app.sandbox.sandbox.stats().token_calls;
    let ending_in = |ms: i64| {
        Some(connector::inbound::http::InvocationDeadline(
            app.clock.now_ms() + ms,
        ))
    };
    let request = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", &path);
    let answer = apigw::send_by(&router, &request, ending_in(3_000)).await;
    assert_eq!(answer.status, 504, "{}", answer.text());
    assert_eq!(answer.error_code(), "deadline_exceeded");
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        tokens,
        "RD not called"
    );
    let after = app.stored("late").await;
    assert_eq!(after.version, before.version, "no lease claimed");
    assert_eq!(after.lease, None);
    assert_eq!(after.status, connector::domain::ConnectionStatus::Active);

    // A whole invocation (29 s) fits the token call and the commit.
    let answer = apigw::send_by(&router, &request, ending_in(29_000)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(app.sandbox.sandbox.stats().token_calls, tokens + 1);
}

/// Retries stop where the invocation ends, not after a fresh 20 s budget per
/// send: RD answers 503 with `Retry-After: 1` every time, and the request is
/// answered with RD's 503 before its invocation's end. (Before: four retries
/// of at least a second each, past the deadline.)
#[tokio::test]
async fn retries_end_before_the_invocation_does() {
    let app = RefreshApp::start().await;
    app.connect("retried", Product::Crm).await;
    let router = instance(&app);
    let path = echo_path(Product::Crm, "retried");
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", &path);
    request.query = "status=503&retry_after=1";
    let calls = app.sandbox.sandbox.stats().api_calls;
    let started = std::time::Instant::now();
    let deadline = connector::inbound::http::InvocationDeadline(app.clock.now_ms() + 2_500);
    let answer = apigw::send_by(&router, &request, Some(deadline)).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(
        took < Duration::from_millis(2_500),
        "answered after {took:?}"
    );
    let sent = app.sandbox.sandbox.stats().api_calls - calls;
    assert!(
        (1..=2).contains(&sent),
        "{sent} sends in 2 s with 1 s pauses"
    );
}

#[tokio::test]
async fn fifty_callers_meeting_a_401_together_cost_one_token_call() {
    let app = RefreshApp::start().await;
    app.connect("crowd", Product::Crm).await;
    let router = instance(&app);
    // A budget whose burst takes the fifty and their retries.
    let mut patch = EventRequest::new(apigw::IAM_AUTHORIZED, "PATCH", "/connections/crowd");
    patch.headers.push(("content-type", "application/json"));
    patch.body = Some(
        json!({"rate_limit_per_minute": 1_000})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(apigw::send(&router, &patch).await.status, 200);
    let path = echo_path(Product::Crm, "crowd");
    assert_eq!(call(&router, "GET", &path, "").await.status, 200);
    app.sandbox.sandbox.advance_clock(7_300);
    // A refusal of a pair issued moments ago is not expiry: time passes for us too.
    app.clock
        .advance(connector::services::proxy::REFUSAL_COOLDOWN_SECONDS);
    let tokens = app.sandbox.sandbox.stats().token_calls;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let router = router.clone();
        let path = path.clone();
        tasks.spawn(async move { call(&router, "GET", &path, "").await.status });
    }
    let statuses = tasks.join_all().await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(app.sandbox.sandbox.stats().token_calls, tokens + 1);
    assert_eq!(
        app.sandbox.sandbox.stats().dead_refresh_token_presentations,
        0
    );
}

#[tokio::test]
async fn a_stale_cached_token_after_another_instance_refreshed_costs_no_token_call() {
    let app = RefreshApp::start().await;
    app.connect("stale", Product::Crm).await;
    let first = instance(&app);
    let second = instance(&app);
    let path = echo_path(Product::Crm, "stale");
    assert_eq!(call(&first, "GET", &path, "").await.status, 200);
    // Later, the other instance refreshes (its token is about to expire)...
    app.sandbox.sandbox.advance_clock(7_100);
    let refreshed = call(&second, "POST", "/connections/stale/refresh", "").await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    // ...and RD then refuses the first instance's cached token.
    app.sandbox.sandbox.advance_clock(200);
    app.clock
        .advance(connector::services::proxy::REFUSAL_COOLDOWN_SECONDS);
    let tokens = app.sandbox.sandbox.stats().token_calls;
    let answer = call(&first, "GET", &path, "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(app.sandbox.sandbox.stats().token_calls, tokens);
}

#[tokio::test]
async fn a_warm_instance_reads_nothing_from_the_store() {
    let app = RefreshApp::start().await;
    app.connect("warm", Product::Marketing).await;
    let router = instance(&app);
    let path = echo_path(Product::Marketing, "warm");
    assert_eq!(call(&router, "GET", &path, "").await.status, 200);
    let reads = app
        .store
        .counts
        .reads
        .load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..10 {
        assert_eq!(call(&router, "GET", &path, "").await.status, 200);
    }
    assert_eq!(
        app.store
            .counts
            .reads
            .load(std::sync::atomic::Ordering::SeqCst),
        reads
    );
}

/// An anonymous caller (no IAM identity in the request context, as a request that
/// bypassed API Gateway's authoriser would be) is refused on every route of the
/// API function, and nothing reaches RD.
#[tokio::test]
async fn an_unauthenticated_caller_is_refused_on_every_route() {
    let app = RefreshApp::start().await;
    app.connect("guarded", Product::Crm).await;
    let router = instance(&app);
    let api_calls = app.sandbox.sandbox.stats().api_calls;
    for (method, path) in [
        ("GET", "/proxy/guarded/crm/v2/contacts"),
        ("POST", "/proxy/guarded/crm/v2/contacts"),
        ("GET", "/connections"),
        ("GET", "/connections/guarded"),
        ("PATCH", "/connections/guarded"),
        ("DELETE", "/connections/guarded"),
        ("POST", "/connections/guarded/refresh"),
    ] {
        let answer = apigw::send(&router, &EventRequest::new(apigw::BROWSER, method, path)).await;
        assert_eq!(answer.status, 403, "{method} {path}");
        assert_eq!(answer.error_code(), "forbidden", "{method} {path}");
    }
    assert_eq!(app.sandbox.sandbox.stats().api_calls, api_calls);
    assert_eq!(app.stored("guarded").await.version, 1);
}

/// Found by the route fuzzer: a connection id that is not UTF-8 once decoded got
/// axum's plain-text 400 on every `/connections/{id}` route.
#[tokio::test]
async fn a_non_utf8_connection_id_gets_our_json_error_on_every_route() {
    let app = RefreshApp::start().await;
    let router = instance(&app);
    for (method, path) in [
        ("GET", "/connections/%80"),
        ("PATCH", "/connections/%80"),
        ("DELETE", "/connections/%C3%28"),
        ("POST", "/connections/%FF/refresh"),
    ] {
        let answer = call(&router, method, path, "").await;
        assert_eq!(answer.status, 400, "{method} {path}");
        assert_eq!(answer.error_code(), "invalid_path", "{method} {path}");
    }
}

#[tokio::test]
async fn bad_paths_ids_and_states_get_precise_errors_and_reach_nothing() {
    let app = RefreshApp::start().await;
    app.connect("guarded", Product::Crm).await;
    let gone = app.connect("revoked", Product::Crm).await;
    assert!(
        app.sandbox
            .sandbox
            .revoke(gone.tokens.refresh_token.expose_secret())
    );
    app.advance(7_200);
    assert!(matches!(
        app.refresh("revoked", Default::default()).await,
        Err(connector::services::refresh_protocol::RefreshFailure::NeedsReauth(_))
    ));
    let router = instance(&app);
    let before = app.sandbox.sandbox.stats();
    for (path, status, code) in [
        ("/proxy/guarded/auth/token", 403, "oauth_endpoint_refused"),
        ("/proxy/guarded/oauth2/token", 403, "oauth_endpoint_refused"),
        // Checked as sent, never resolved (to `crm/auth/token` or anything else).
        (
            "/proxy/guarded/crm/v2/%2e%2e/auth/token",
            400,
            "invalid_path",
        ),
        ("/proxy/guarded/%61uth/token", 403, "oauth_endpoint_refused"),
        ("/proxy/guarded/crm%2Fv2/contacts", 400, "invalid_path"),
        (
            "/proxy/guarded/http:%2F%2Fevil.example/x",
            400,
            "invalid_path",
        ),
        ("/proxy/guarded/crm\\v2\\contacts", 400, "invalid_path"),
        ("/proxy/guarded/crm/v2//contacts", 400, "invalid_path"),
        (
            "/proxy/has%20space/crm/v2/contacts",
            400,
            "invalid_connection_id",
        ),
        ("/proxy/nobody/crm/v2/contacts", 404, "connection_not_found"),
        ("/proxy/revoked/crm/v2/contacts", 409, "needs_reauth"),
        ("/connections/nobody", 404, "connection_not_found"),
    ] {
        let answer = call(&router, "GET", path, "").await;
        assert_eq!(
            answer.status,
            status,
            "{path}: {} {:?}",
            answer.text(),
            answer.headers
        );
        assert_eq!(answer.error_code(), code, "{path}");
    }
    // Bodies over API Gateway's 10 MB.
    let mut big = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/proxy/guarded/crm/v2/echo");
    big.body = Some(vec![b'x'; connector::inbound::http::MAX_BODY_BYTES + 1]);
    big.base64 = true;
    let answer = apigw::send(&router, &big).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error_code(), "payload_too_large");
    // Without an IAM identity.
    let anonymous = apigw::send(
        &router,
        &EventRequest::new(apigw::BROWSER, "GET", "/proxy/guarded/crm/v2/contacts"),
    )
    .await;
    assert_eq!(anonymous.status, 403);
    let after = app.sandbox.sandbox.stats();
    assert_eq!(after.api_calls, before.api_calls, "nothing reached RD");
    assert_eq!(after.token_calls, before.token_calls);
}

/// Whether any 60 s window (half-open, ending at an accepted request) holds more
/// than `limit` of the `accepted` times (ms).
fn busiest_minute(accepted: &[i64]) -> usize {
    let mut first = 0;
    let mut busiest = 0;
    for (last, at) in accepted.iter().enumerate() {
        while accepted[first] <= at - 60_000 {
            first += 1;
        }
        busiest = busiest.max(last - first + 1);
    }
    busiest
}

/// Four instances, 200 requests at once: the burst (a fifth of RD's 120) passes,
/// the rest get our 429 with an honest `Retry-After`, and RD sees only what
/// passed.
/// One product's token on the other product's API: RD would refuse it with a
/// 401 every time, each costing a refresh. Refused here, RD not called.
/// (Before: a token call per request.)
#[tokio::test]
async fn a_call_to_the_other_products_api_is_refused_without_a_token_call() {
    let app = RefreshApp::start().await;
    app.connect("crm-only", Product::Crm).await;
    app.connect("mkt-only", Product::Marketing).await;
    let router = instance(&app);
    let before = app.sandbox.sandbox.stats();
    for path in [
        "/proxy/crm-only/platform/contacts",
        "/proxy/crm-only/PLATFORM/contacts/email:a@b.com",
        "/proxy/mkt-only/crm/v2/contacts",
    ] {
        let answer = call(&router, "GET", path, "").await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.text());
        assert_eq!(answer.error_code(), "wrong_product");
    }
    let after = app.sandbox.sandbox.stats();
    assert_eq!(after.api_calls, before.api_calls);
    assert_eq!(after.token_calls, before.token_calls);
}

#[tokio::test]
async fn the_rate_budget_holds_across_instances() {
    let app = RefreshApp::start().await;
    app.connect("busy", Product::Marketing).await;
    let routers: Vec<Router> = (0..4).map(|_| instance(&app)).collect();
    let path = echo_path(Product::Marketing, "busy");
    let calls = app.sandbox.sandbox.stats().api_calls;
    let started_ms = app.clock.now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let router = routers[i % 4].clone();
        let path = path.clone();
        tasks.spawn(async move {
            let answer = call(&router, "GET", &path, "").await;
            (answer.status, answer.headers.get("retry-after").cloned())
        });
    }
    let answers = tasks.join_all().await;
    let passed = answers.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    // 24 at once, then one each emission (60 s / 97 = 619 ms) while the 200
    // are being answered.
    let took_ms = app.clock.now_ms() - started_ms;
    let pace = connector::domain::RequestPace::of(120);
    let most = 24 + (took_ms / pace.emission_ms) as usize + 1;
    assert!(
        (24..=most).contains(&passed),
        "{passed} passed in {took_ms} ms (at most {most})"
    );
    assert_eq!(passed + limited.len(), 200);
    for (_, retry_after) in limited {
        let seconds: u64 = retry_after
            .as_ref()
            .expect("Retry-After")
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&seconds));
    }
    assert_eq!(app.sandbox.sandbox.stats().api_calls - calls, passed as u64);
}

/// The budget is a sliding 60 s, not a clock minute: traffic that starts five
/// seconds before a minute ends, from two instances, never puts more than the
/// budget in any 60 s. (Before: the budget of the minute that ended and that of
/// the next both passed within a few seconds, 20 where the budget is 10.)
#[tokio::test]
async fn no_sixty_seconds_hold_more_than_the_budget_across_a_minute_boundary() {
    let app = RefreshApp::start().await;
    app.connect("paced", Product::Crm).await;
    let routers = [instance(&app), instance(&app)];
    let mut patch = EventRequest::new(apigw::IAM_AUTHORIZED, "PATCH", "/connections/paced");
    patch.headers.push(("content-type", "application/json"));
    patch.body = Some(
        json!({"rate_limit_per_minute": 10})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(apigw::send(&routers[0], &patch).await.status, 200);
    let into_minute = app.clock.now_ms().rem_euclid(60_000) / 1000;
    app.clock.advance(55 - into_minute);
    let path = echo_path(Product::Crm, "paced");
    let mut accepted = Vec::new();
    for second in 0..130 {
        for i in 0..3 {
            let answer = call(&routers[(second + i) % 2], "GET", &path, "").await;
            match answer.status {
                200 => accepted.push(app.clock.now_ms()),
                429 => {}
                other => panic!("{other}: {}", answer.text()),
            }
        }
        app.clock.advance(1);
    }
    assert!(
        busiest_minute(&accepted) <= 10,
        "{} in one 60 s: {accepted:?}",
        busiest_minute(&accepted)
    );
    // A burst of 2, then one each 6.7 s: about 21 in 130 s.
    assert!(accepted.len() >= 18, "only {} passed", accepted.len());
}

/// After a delete or a reconnect has answered, no later request goes out with
/// the ended grant's token, on any instance, with one request per budget write
/// (`PROXY_BUDGET_SLICE_SECONDS=0`): the budget's own write finds the token
/// replaced (no extra AWS call per request). With slices, see the next test.
/// (Before: a warm instance kept sending the deleted connection's token for as
/// long as it lived, up to 2 h.)
#[tokio::test]
async fn a_grant_that_ended_is_not_used_again_by_a_warm_instance() {
    let app = RefreshApp::start().await;
    app.connect("ended", Product::Crm).await;
    app.connect("moved", Product::Crm).await;
    let settings = connector::assembly::Settings {
        proxy: connector::services::proxy::ProxySettings {
            budget_slice: std::time::Duration::ZERO,
            ..connector::services::proxy::ProxySettings::default()
        },
        ..app.assembly.settings().clone()
    };
    let unsliced = || {
        api_proxy_router(
            connector::assembly::Assembly::new(app.assembly.parts().clone(), settings.clone())
                .expect("assembled")
                .api_state()
                .expect("state"),
        )
    };
    let (a, b) = (unsliced(), unsliced());
    for id in ["ended", "moved"] {
        assert_eq!(
            call(&b, "GET", &echo_path(Product::Crm, id), "")
                .await
                .status,
            200
        );
    }
    // Deleted through instance A; B is warm.
    assert_eq!(
        call(&a, "DELETE", "/connections/ended", "").await.status,
        200
    );
    let calls = app.sandbox.sandbox.stats().api_calls;
    let answer = call(&b, "GET", &echo_path(Product::Crm, "ended"), "").await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(answer.error_code(), "connection_not_found");
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls, "nothing sent");

    // Connected again (a new grant): B sends the new grant's token.
    let old = app.stored("moved").await.tokens.access_token;
    app.reconnect_now("moved").await;
    let calls = app.sandbox.sandbox.stats().api_calls;
    let answer = call(&b, "GET", &echo_path(Product::Crm, "moved"), "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls + 1);
    assert_ne!(
        app.sandbox.sandbox.last_api_bearer().as_deref(),
        Some(old.expose_secret()),
        "the ended grant's token was sent"
    );
    assert_eq!(
        app.sandbox.sandbox.last_api_bearer().as_deref(),
        Some(
            app.stored("moved")
                .await
                .tokens
                .access_token
                .expose_secret()
        )
    );
}

/// With the budget taken in slices, a warm instance may spend what is left of
/// its slice with the token it was taken for, and no longer: once the slice
/// is over (at most twice its life after it was taken), the next request's
/// write finds the grant ended.
#[tokio::test]
async fn a_warm_instance_stops_using_an_ended_grant_when_its_slice_ends() {
    let app = RefreshApp::start().await;
    app.connect("sliced", Product::Crm).await;
    let (a, b) = (instance(&app), instance(&app));
    let path = echo_path(Product::Crm, "sliced");
    // One request, then a slice of two (one left).
    for _ in 0..2 {
        assert_eq!(call(&b, "GET", &path, "").await.status, 200);
    }
    assert_eq!(
        call(&a, "DELETE", "/connections/sliced", "").await.status,
        200
    );
    // A slice's last request may go up to 2 d after the write that took it.
    let slice = connector::services::proxy::DEFAULT_BUDGET_SLICE;
    app.clock.advance(2 * slice.as_secs() as i64 + 1);
    let calls = app.sandbox.sandbox.stats().api_calls;
    let answer = call(&b, "GET", &path, "").await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls, "nothing sent");
}

/// Slices of the budget, taken and spent on four instances under a steady
/// overload: RD never gets more than the budget in any 60 s, and every 429
/// says to wait at least a second.
#[tokio::test]
async fn slices_never_put_more_than_the_budget_in_any_60_s_across_instances() {
    let app = RefreshApp::start().await;
    app.connect("steady", Product::Crm).await;
    let routers: Vec<Router> = (0..4).map(|_| instance(&app)).collect();
    let mut patch = EventRequest::new(apigw::IAM_AUTHORIZED, "PATCH", "/connections/steady");
    patch.headers.push(("content-type", "application/json"));
    patch.body = Some(
        json!({"rate_limit_per_minute": 30})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(apigw::send(&routers[0], &patch).await.status, 200);
    let path = echo_path(Product::Crm, "steady");
    let calls = app.sandbox.sandbox.stats().api_calls;
    let start = app.clock.now_ms();
    let mut passed = Vec::new();
    // Three requests a second for four minutes, round-robin.
    for i in 0..720 {
        let due = start + i * 333;
        let now = app.clock.now_ms();
        if due > now {
            app.clock.advance_ms(due - now);
        }
        let answer = call(&routers[i as usize % 4], "GET", &path, "").await;
        match answer.status {
            200 => passed.push(app.clock.now_ms()),
            429 => {
                let seconds: u64 = answer.headers["retry-after"]
                    .to_str()
                    .expect("ascii")
                    .parse()
                    .expect("seconds");
                assert!((1..=60).contains(&seconds));
            }
            other => panic!("{other}: {}", answer.text()),
        }
    }
    assert!(
        busiest_minute(&passed) <= 30,
        "{} in one 60 s",
        busiest_minute(&passed)
    );
    assert_eq!(
        app.sandbox.sandbox.stats().api_calls - calls,
        passed.len() as u64
    );
    // A burst of 6, then 25 each 70 s: about 91 in four minutes, less what
    // slices left unspent.
    assert!(passed.len() >= 60, "only {} passed", passed.len());
}

/// With the budget off nothing is written per request, so a warm instance
/// trusts its cached token for at most
/// `TOKEN_RECHECK_WITHOUT_BUDGET_SECONDS`: after that, an ended grant is not
/// used again. (Before: up to the token's life, 2 h.)
#[tokio::test]
async fn without_the_budget_a_warm_instance_rechecks_within_its_bound() {
    let app = RefreshApp::start().await;
    app.connect("unbudgeted", Product::Crm).await;
    let settings = connector::assembly::Settings {
        proxy: connector::services::proxy::ProxySettings {
            rate_limit_per_minute: None,
            ..connector::services::proxy::ProxySettings::default()
        },
        ..app.assembly.settings().clone()
    };
    let unbudgeted = || {
        connector::assembly::Assembly::new(app.assembly.parts().clone(), settings.clone())
            .expect("assembled")
            .api_state()
            .expect("client")
    };
    let (a, b) = (
        api_proxy_router(unbudgeted()),
        api_proxy_router(unbudgeted()),
    );
    let path = echo_path(Product::Crm, "unbudgeted");
    assert_eq!(call(&b, "GET", &path, "").await.status, 200);
    assert_eq!(
        call(&a, "DELETE", "/connections/unbudgeted", "")
            .await
            .status,
        200
    );
    app.clock
        .advance(connector::assembly::TOKEN_RECHECK_WITHOUT_BUDGET_SECONDS);
    let calls = app.sandbox.sandbox.stats().api_calls;
    let answer = call(&b, "GET", &path, "").await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls, "nothing sent");
}

#[tokio::test]
async fn the_connections_api_shows_refreshes_and_deletes() {
    let app = RefreshApp::start().await;
    app.connect("shown", Product::Crm).await;
    app.connect("mkt", Product::Marketing).await;
    let router = instance(&app);

    let shown = call(&router, "GET", "/connections/shown", "").await;
    assert_eq!(shown.status, 200);
    let body = shown.json();
    assert_eq!(body["product"], "crm");
    assert_eq!(body["status"], "active");
    assert!(body["refresh_token_dies_at"].is_string());
    assert_eq!(body["consecutive_failures"], 0);
    let marketing = call(&router, "GET", "/connections/mkt", "").await.json();
    assert!(marketing["refresh_token_dies_at"].is_null());

    let tokens = app.sandbox.sandbox.stats().token_calls;
    let refreshed = call(&router, "POST", "/connections/shown/refresh", "").await;
    assert_eq!(refreshed.status, 200);
    assert_eq!(refreshed.json()["outcome"], "refreshed");
    assert_eq!(app.sandbox.sandbox.stats().token_calls, tokens + 1);

    // Marketing: revoked at RD, then deleted.
    let before = app.stored("mkt").await;
    let deleted = call(&router, "DELETE", "/connections/mkt", "").await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["revoked_at_rd"], "revoked");
    assert!(!app.sandbox.sandbox.access_token_is_valid(
        SandboxProduct::Marketing,
        before.tokens.access_token.expose_secret()
    ));
    assert_eq!(
        call(&router, "GET", "/connections/mkt", "").await.status,
        404
    );
    // CRM: RD documents no revoke.
    let deleted = call(&router, "DELETE", "/connections/shown", "").await;
    assert_eq!(deleted.json()["revoked_at_rd"], "not_supported");
    for answer in [&shown, &refreshed, &deleted] {
        assert_no_secret_in(&app, &[answer]);
        let text = answer.text();
        assert!(!text.contains("fingerprint"));
    }
}

/// A settings write touches its own attribute only: a refresh in flight still
/// commits, and the refresh's commit keeps the setting. (Before: the PATCH
/// rewrote the whole item and moved the version, so the refresh's commit was
/// refused, its pair went to the rescue queue and the connection was marked
/// `possibly_lost`; checked against the whole-item write.)
#[tokio::test]
async fn a_settings_write_during_a_refresh_does_not_fence_it_out() {
    let app = RefreshApp::start().await;
    app.connect("patched", Product::Crm).await;
    app.advance(7_200 - 300);
    let router = instance(&app);
    let before = app.stored("patched").await;
    let refresh = app
        .refresh_until_rd_is_called("patched", Duration::from_millis(200))
        .await;
    let mut patch = EventRequest::new(apigw::IAM_AUTHORIZED, "PATCH", "/connections/patched");
    patch.headers.push(("content-type", "application/json"));
    patch.body = Some(
        json!({"rate_limit_per_minute": 50})
            .to_string()
            .into_bytes(),
    );
    let answer = apigw::send(&router, &patch).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["rate_limit_per_minute"], 50);
    let outcome = refresh.await.expect("joined");
    assert!(
        matches!(
            outcome,
            Ok(connector::services::refresh_protocol::Refreshed::Rotated(_))
        ),
        "{outcome:?}"
    );
    let after = app.stored("patched").await;
    assert_eq!(after.status, connector::domain::ConnectionStatus::Active);
    assert_eq!(after.rate_limit_per_minute, Some(50), "the commit kept it");
    assert_ne!(
        after.tokens.refresh_token.expose_secret(),
        before.tokens.refresh_token.expose_secret()
    );
    assert!(app.rescues.peek().await.is_empty());
    // Clearing it is a settings write too.
    patch.body = Some(
        json!({"rate_limit_per_minute": null})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(apigw::send(&router, &patch).await.status, 200);
    let cleared = app.stored("patched").await;
    assert_eq!(cleared.rate_limit_per_minute, None);
    assert_eq!(cleared.version, after.version, "settings leave the version");
}

#[tokio::test]
async fn deleting_during_a_refresh_does_not_bring_the_connection_back() {
    let app = RefreshApp::start().await;
    app.connect("deleted", Product::Crm).await;
    app.advance(7_200 - 300);
    let router = instance(&app);
    let refresh = app
        .refresh_until_rd_is_called("deleted", Duration::from_millis(200))
        .await;
    let deleted = call(&router, "DELETE", "/connections/deleted", "").await;
    assert_eq!(deleted.status, 200);
    let _ = refresh.await.expect("joined");
    // The refresh's pair may wait on the rescue queue; the next run finds it
    // superseded.
    app.run().await;
    assert!(
        app.engine
            .store
            .get(&connector::domain::ConnectionId::in_default_tenant("deleted").expect("valid"))
            .await
            .expect("read")
            .is_none()
    );
    assert!(app.rescues.peek().await.is_empty());
    assert_eq!(
        call(&router, "GET", "/connections/deleted", "")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_429_and_5xx_and_posts_never_after_rd_saw_them() {
    let app = RefreshApp::start().await;
    app.connect("flaky-api", Product::Crm).await;
    let router = instance(&app);
    let path = echo_path(Product::Crm, "flaky-api");

    // GET: a 503 and a 429 (Retry-After: 1), then success.
    app.sandbox.sandbox.inject_api_fault(503, None, 1);
    app.sandbox.sandbox.inject_api_fault(429, Some(1), 1);
    let calls = app.sandbox.sandbox.stats().api_calls;
    let started = std::time::Instant::now();
    let answer = call(&router, "GET", &path, "").await;
    assert_eq!(answer.status, 200);
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls + 3);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );

    // POST without an Idempotency-Key: RD's 429 goes back with its Retry-After.
    app.sandbox.sandbox.inject_api_fault(429, Some(7), 1);
    let calls = app.sandbox.sandbox.stats().api_calls;
    let mut post = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", &path);
    post.body = Some(b"{}".to_vec());
    post.headers.push(("content-type", "application/json"));
    let answer = apigw::send(&router, &post).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["retry-after"], "7");
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls + 1);

    // With one, still not sent twice: RD is not known to deduplicate on the key,
    // so a POST it may have received is never repeated. (Before: retried.)
    app.sandbox.sandbox.inject_api_fault(502, None, 1);
    post.headers.push(("idempotency-key", "order-42"));
    let answer = apigw::send(&router, &post).await;
    assert_eq!(answer.status, 502);
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls + 2);
    let answer = apigw::send(&router, &post).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-echo-idempotency-key"], "order-42");
}

/// RD's `Retry-After` may be any number or an HTTP date. (Before: the largest
/// number overflowed the retry budget's sum and panicked; a date was ignored and
/// the GET retried four times.)
#[tokio::test]
async fn any_retry_after_from_rd_is_honoured_without_a_panic() {
    let app = RefreshApp::start().await;
    app.connect("slow-down", Product::Crm).await;
    let router = instance(&app);
    let path = echo_path(Product::Crm, "slow-down");
    let in_an_hour =
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3_600))
            .replace(' ', "%20")
            .replace(',', "%2C");
    // The largest number after a first wait of a second: the sum of what was
    // spent and what is asked overflows unless it saturates.
    app.sandbox.sandbox.inject_api_fault(503, Some(1), 1);
    let calls = app.sandbox.sandbox.stats().api_calls;
    let answer = call(
        &router,
        "GET",
        &path,
        "status=503&retry_after=18446744073709551615",
    )
    .await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["retry-after"], "18446744073709551615");
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls + 2);
    for retry_after in ["0".to_owned(), in_an_hour] {
        let calls = app.sandbox.sandbox.stats().api_calls;
        let answer = call(
            &router,
            "GET",
            &path,
            &format!("status=503&retry_after={retry_after}"),
        )
        .await;
        assert_eq!(answer.status, 503, "{retry_after}");
        let sent = app.sandbox.sandbox.stats().api_calls - calls;
        if retry_after == "0" {
            assert!(sent > 1, "no wait asked: retried");
        } else {
            assert_eq!(sent, 1, "a wait past the retry budget is not waited");
        }
    }
}

/// (Before: TRACE reached RD, and `Proxy-Connection` went with every request.)
#[tokio::test]
async fn trace_and_proxy_headers_never_reach_rd() {
    let app = RefreshApp::start().await;
    app.connect("hops", Product::Crm).await;
    let router = instance(&app);
    let path = echo_path(Product::Crm, "hops");
    let calls = app.sandbox.sandbox.stats().api_calls;
    for method in ["TRACE", "CONNECT"] {
        let answer = call(&router, method, &path, "").await;
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.error_code(), "method_not_allowed");
    }
    assert_eq!(app.sandbox.sandbox.stats().api_calls, calls);
    let mut get = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", &path);
    get.headers.push(("proxy-connection", "keep-alive"));
    get.headers.push(("x-custom", "kept"));
    let answer = apigw::send(&router, &get).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-echo-custom"], "kept");
    assert!(!answer.headers.contains_key("x-echo-proxy-connection"));
}

#[tokio::test]
async fn the_connections_list_pages_and_answers_who_needs_a_person() {
    let app = RefreshApp::start().await;
    for i in 0..3 {
        app.connect(&format!("listed-{i}"), Product::Crm).await;
    }
    let gone = app.stored("listed-1").await;
    assert!(
        app.sandbox
            .sandbox
            .revoke(gone.tokens.refresh_token.expose_secret())
    );
    app.advance(7_200);
    app.run().await;
    let router = instance(&app);

    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let page = call(&router, "GET", "/connections", &query).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let body = page.json();
        for c in body["connections"].as_array().expect("list") {
            seen.push(c["connection_id"].as_str().expect("id").to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
        assert_no_secret_in(&app, &[&page]);
    }
    seen.sort();
    assert_eq!(seen, ["listed-0", "listed-1", "listed-2"]);

    let attention = call(&router, "GET", "/connections", "status=needs_reauth").await;
    let body = attention.json();
    let listed = body["connections"].as_array().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["connection_id"], "listed-1");
    assert_eq!(listed[0]["status_reason"], "revoked");

    for (query, code) in [
        ("status=dead", "invalid_status"),
        ("product=sales", "invalid_product"),
        ("limit=0", "invalid_limit"),
        ("cursor=v1.bm90LWEta2V5", "invalid_cursor"),
        ("sort=desc", "invalid_query"),
    ] {
        let answer = call(&router, "GET", "/connections", query).await;
        assert_eq!(answer.status, 400, "{query}");
        assert_eq!(answer.error_code(), code, "{query}");
    }
}

#[tokio::test]
async fn the_connect_and_api_routes_merge_into_one_service_as_make_run_serves_them() {
    let app = RefreshApp::start().await;
    app.connect("merged", Product::Crm).await;
    let router = connector::inbound::http::finish(
        connector::inbound::http::connect_routes(
            app.assembly.connect_service(),
            connector::inbound::http::Pages::default(),
        )
        .merge(connector::inbound::http::api_routes(
            app.assembly.api_state().expect("client"),
        )),
        connector::inbound::http::Pages::default(),
    );
    let proxied = call(&router, "GET", "/proxy/merged/crm/v2/contacts", "").await;
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    let mut open = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
    open.body = Some(
        json!({"connection_id": "merged-2", "product": "crm"})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(apigw::send(&router, &open).await.status, 201);
    let unknown = call(&router, "GET", "/nowhere", "").await;
    assert_eq!(unknown.error_code(), "not_found");
}

/// `GET /connections?limit=1` returns every connection exactly once from a
/// table that also holds sessions, states and rate-budget items. DynamoDB's
/// `Limit` counts a Scan's items before its filter (moto's does not), so a
/// Scan's last key could be a session's and the next page be refused; the
/// listing must be a Query whose keys are all connections'. (Before: a Scan,
/// which this test sees through the recording proxy in front of moto.)
#[tokio::test]
async fn the_connections_list_pages_by_one_through_a_table_of_every_kind_of_item() {
    let aws = integration_tests::aws_faults::AwsFaultProxy::start(
        &std::env::var("AWS_ENDPOINT_URL").expect("moto"),
        1,
        Duration::from_millis(1),
    )
    .await;
    let table = integration_tests::moto::unique_name("listing");
    connector::outbound::dynamodb::schema::create_table(
        &integration_tests::moto::dynamodb().await,
        &table,
    )
    .await
    .expect("table");
    let recorded =
        aws_sdk_dynamodb::config::Builder::from(integration_tests::moto::sdk_config().await)
            .endpoint_url(&aws.endpoint)
            .build();
    let store = connector::outbound::dynamodb::DynamoStore::new(
        aws_sdk_dynamodb::Client::from_conf(recorded),
        &table,
    );
    let app = RefreshApp::start_on(integration_tests::refresh_app::test_settings(), store).await;
    let router = instance(&app);
    let mut connected = Vec::new();
    for i in 0..5 {
        let id = format!("paged-{i}");
        // Each connection leaves its session and state items behind.
        app.connect(&id, Product::Crm).await;
        // And a rate-budget item.
        assert_eq!(
            call(&router, "GET", &echo_path(Product::Crm, &id), "")
                .await
                .status,
            200
        );
        connected.push(id);
    }
    let mut seen = Vec::new();
    let mut query = "limit=1".to_owned();
    for _ in 0..20 {
        let page = call(&router, "GET", "/connections", &query).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let json = page.json();
        for c in json["connections"].as_array().expect("a list") {
            seen.push(c["connection_id"].as_str().expect("an id").to_owned());
        }
        match json["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=1&cursor={cursor}"),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, connected, "every connection exactly once");
    assert_eq!(aws.counts.operation("Scan"), 0, "no Scan");
    assert!(aws.counts.operation("Query") >= 5);
    // A cursor naming anything but a connection of that listing is refused.
    use base64::Engine;
    for forged in [
        r#"{"pk":"SESSION#x","sk":"SESSION","kind":"connect_session","connection_id":"x"}"#,
        r#"{"pk":"CONN#a","sk":"CONN","kind":"connection","connection_id":"b"}"#,
        r#"{"pk":"CONN#a","sk":"CONN"}"#,
    ] {
        let cursor = format!(
            "v1.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged)
        );
        let page = call(&router, "GET", "/connections", &format!("cursor={cursor}")).await;
        assert_eq!(page.status, 400, "{forged}: {}", page.text());
        assert_eq!(page.error_code(), "invalid_cursor");
    }
}

#[tokio::test]
async fn a_connection_can_have_a_budget_of_its_own() {
    let app = RefreshApp::start().await;
    app.connect("small-plan", Product::Crm).await;
    let router = instance(&app);
    let mut patch = EventRequest::new(apigw::IAM_AUTHORIZED, "PATCH", "/connections/small-plan");
    patch.headers.push(("content-type", "application/json"));
    for (body, status) in [
        (json!({"rate_limit_per_minute": 0}), 400),
        (json!({"rate_limit_per_minute": 100_000}), 400),
        (json!({"rate_limit": 5}), 400),
        (json!({"rate_limit_per_minute": 3}), 200),
    ] {
        patch.body = Some(body.to_string().into_bytes());
        let answer = apigw::send(&router, &patch).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text());
    }
    assert_eq!(
        call(&router, "GET", "/connections/small-plan", "")
            .await
            .json()["rate_limit_per_minute"],
        3
    );
    // Three in any 60 s: one at once, then one every 70 / 3 s (paced over 60 s
    // and the 10 s a budget slice's request may be sent late).
    let path = echo_path(Product::Crm, "small-plan");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(call(&router, "GET", &path, "").await.status);
    }
    assert_eq!(statuses, [200, 429, 429]);
    let limited = call(&router, "GET", &path, "").await;
    let retry_after: i64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=24).contains(&retry_after), "{retry_after}");
    app.clock.advance(retry_after);
    assert_eq!(call(&router, "GET", &path, "").await.status, 200);
    assert_eq!(call(&router, "GET", &path, "").await.status, 429);
}
