//! Property tests over every route's inputs, sent as API Gateway v2 events through
//! the routers `make run` and the functions serve: random methods, paths (with
//! encoded slashes, dots, `@`, backslashes, control characters and non-UTF-8
//! percent-escapes), query strings, headers, cookies and bodies (JSON-like, form,
//! binary, huge), from a signed caller or an anonymous browser.
//!
//! Invariants: no panic; never a 5xx (the store and RD are healthy here, so a 5xx
//! would be ours); every 4xx is our JSON error (or a page for browsers that asked
//! for HTML); and a rejected request changes nothing in the store.
//!
//! Case counts come from `PROPTEST_CASES` (default below); a failing case is saved
//! in `fuzz_routes.proptest-regressions` beside this file (kept in git) and
//! replayed first on every later run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use connector::assembly::{Assembly, Parts, Settings};
use connector::inbound::http::{Pages, api_routes, connect_routes, finish};
use connector::outbound::events::RecordingPublisher;
use connector::outbound::memory::{MemoryRescueStore, MemoryStore};
use connector::services::caller_policy::CallerPolicy;
use connector::services::connect::PublicBase;
use connector::services::proxy::ProxySettings;
use connector::services::refresh_protocol::RefreshSettings;
use integration_tests::apigw::{self, EventRequest};
use proptest::prelude::*;
use rd_sandbox::{RunningSandbox, Sandbox, SandboxConfig};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 300;

struct Target {
    runtime: tokio::runtime::Runtime,
    router: Router,
    store: Arc<MemoryStore>,
    sandbox: RunningSandbox,
    cases: AtomicU64,
    rejected: AtomicU64,
    accepted: AtomicU64,
}

fn target() -> Target {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = SandboxConfig::default();
    let sandbox = runtime
        .block_on(Sandbox::new(config.clone()).spawn_local())
        .expect("sandbox");
    let store = Arc::new(MemoryStore::new());
    let assembly = Assembly::new(
        Parts {
            events: Arc::new(RecordingPublisher::new()),
            ..Parts::on_one_store(
                store.clone(),
                Arc::new(MemoryRescueStore::default()),
                integration_tests::sandbox_credentials(&config),
            )
        },
        Settings {
            rdstation: integration_tests::sandbox_endpoints(&sandbox),
            refresh: RefreshSettings::default(),
            public_base: PublicBase::RequestDomain,
            allowed_return_origins: vec![
                url::Url::parse("https://app.example.com")
                    .expect("url")
                    .origin(),
            ],
            caller_policy: CallerPolicy::Iam {
                allowed_arns: Vec::new(),
            },
            proxy: ProxySettings::default(),
            tenancy: Default::default(),
        },
    )
    .expect("assembly");
    let router = finish(
        connect_routes(assembly.connect_service(), Pages::default())
            .merge(api_routes(assembly.api_state().expect("api state"))),
        Pages::default(),
    );
    Target {
        runtime,
        router,
        store,
        sandbox,
        cases: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

/// One path segment: plain characters, the route words, and hostile pieces.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._:~-]{0,12}",
        Just("..".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("%2F".to_owned()),
        Just("%5C".to_owned()),
        Just("%00".to_owned()),
        Just("%0d%0aSet-Cookie:%20x=1".to_owned()),
        Just("%ff%fe".to_owned()),
        Just("@evil.example".to_owned()),
        Just("http:%2F%2Fevil.example".to_owned()),
        Just("auth".to_owned()),
        Just("oauth2".to_owned()),
        Just("token".to_owned()),
        Just("connect".to_owned()),
        Just("sessions".to_owned()),
        Just("connections".to_owned()),
        Just("proxy".to_owned()),
        Just("refresh".to_owned()),
        Just("callback".to_owned()),
        Just("import".to_owned()),
        Just("webhooks".to_owned()),
        Just("rotate-secret".to_owned()),
        Just("x".repeat(300)),
        // Any byte, percent-encoded: decodes to anything, valid UTF-8 or not.
        proptest::collection::vec(any::<u8>(), 1..6)
            .prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect()),
    ]
}

/// A path that often starts like one of ours.
fn path() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just(""),
        Just("/connect"),
        Just("/connect/sessions"),
        Just("/oauth/callback"),
        Just("/connections"),
        Just("/connections/import"),
        Just("/webhooks"),
        Just("/proxy"),
        Just("/proxy/acme"),
    ];
    let segments = prop_oneof![Just(Vec::new()), proptest::collection::vec(segment(), 1..5),];
    (prefix, segments).prop_map(|(prefix, segments)| {
        let mut path = prefix.to_owned();
        for s in segments {
            path.push('/');
            path.push_str(&s);
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    })
}

fn query() -> impl Strategy<Value = String> {
    let pair = (
        prop_oneof![
            Just("state".to_owned()),
            Just("code".to_owned()),
            Just("error".to_owned()),
            Just("status".to_owned()),
            Just("product".to_owned()),
            Just("cursor".to_owned()),
            Just("limit".to_owned()),
            "[a-z_%0-9]{0,8}"
        ],
        "[A-Za-z0-9%._~:/?=+-]{0,40}",
    )
        .prop_map(|(k, v)| format!("{k}={v}"));
    prop_oneof![
        Just(String::new()),
        proptest::collection::vec(pair, 1..4).prop_map(|pairs| pairs.join("&")),
    ]
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        4 => Just(None),
        4 => any::<Vec<u8>>().prop_map(Some),
        8 => (
            "[a-z:._-]{0,20}",
            prop_oneof![
                Just("crm"),
                Just("marketing"),
                Just("CRM"),
                Just(""),
                Just("crm\u{0}")
            ],
            prop_oneof![
                Just("null".to_owned()),
                Just("\"https://app.example.com/done\"".to_owned()),
                Just("\"https://evil.example/\"".to_owned()),
                Just("\"javascript:alert(1)\"".to_owned()),
                "\"[ -~]{0,30}\""
            ],
            any::<bool>(),
        )
            .prop_map(|(id, product, return_url, reconnect)| {
                Some(
                    format!(
                        r#"{{"connection_id":"{id}","product":"{product}","return_url":{return_url},"reconnect":{reconnect}}}"#
                    )
                    .into_bytes(),
                )
            }),
        1 => Just(Some(b"{\"rate_limit_per_minute\": -1}".to_vec())),
        1 => Just(Some(b"{\"rate_limit_per_minute\": 1e309}".to_vec())),
        1 => Just(Some(vec![b'['; 10_000])),
        // Over API Gateway's 10 MB: rare, as it is slow to build.
        1 => Just(Some(vec![b'a'; 10 * 1024 * 1024 + 1])),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    method: &'static str,
    signed: bool,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    cookies: Vec<String>,
    body: Option<Vec<u8>>,
    base64: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("PATCH"),
        Just("DELETE"),
        Just("HEAD"),
        Just("OPTIONS"),
    ];
    let header = (
        prop_oneof![
            Just("content-type".to_owned()),
            Just("accept".to_owned()),
            Just("authorization".to_owned()),
            Just("content-length".to_owned()),
            Just("idempotency-key".to_owned()),
            Just("x-forwarded-host".to_owned()),
            "x-[a-z]{1,10}"
        ],
        prop_oneof![
            Just("application/json".to_owned()),
            Just("text/html".to_owned()),
            Just("99999999999999999999".to_owned()),
            "[ -~]{0,40}"
        ],
    );
    (
        method,
        any::<bool>(),
        path(),
        query(),
        proptest::collection::vec(header, 0..3),
        proptest::collection::vec("[ -~]{0,30}", 0..3),
        body(),
        any::<bool>(),
    )
        .prop_map(
            |(method, signed, path, query, headers, cookies, body, base64)| Case {
                method,
                signed,
                path,
                query,
                headers,
                cookies,
                body,
                base64,
            },
        )
}

fn check(target: &Target, case: &Case) -> Result<(), TestCaseError> {
    let mut request = EventRequest::new(
        if case.signed {
            apigw::IAM_AUTHORIZED
        } else {
            apigw::BROWSER
        },
        case.method,
        &case.path,
    );
    request.query = &case.query;
    request.headers = case
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    request.cookies = case.cookies.clone();
    request.body = case.body.clone();
    request.base64 = case.base64
        || case
            .body
            .as_ref()
            .is_some_and(|b| std::str::from_utf8(b).is_err());
    // An event the Lambda runtime cannot deserialize never reaches the adapter
    // (AWS does not send one); everything else must be answered.
    prop_assume!(
        serde_json::from_value::<aws_lambda_events::apigw::ApiGatewayV2httpRequest>(
            request.event()
        )
        .is_ok()
    );

    let before = format!("{:?}", target.store);
    let token_calls = target.sandbox.sandbox.stats().token_calls;
    let answer = target
        .runtime
        .block_on(apigw::send(&target.router, &request));
    target.cases.fetch_add(1, Ordering::Relaxed);
    prop_assert!(
        answer.status < 500,
        "{} {} ?{} -> {}: {}",
        case.method,
        case.path,
        case.query,
        answer.status,
        answer.text()
    );
    if answer.status < 400 {
        target.accepted.fetch_add(1, Ordering::Relaxed);
    }
    if answer.status >= 400 {
        target.rejected.fetch_add(1, Ordering::Relaxed);
        let is_page = answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/html"));
        if !is_page && case.method != "HEAD" {
            let json: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|_| {
                TestCaseError::fail(format!(
                    "{} {} -> {} without a JSON error: {}",
                    case.method,
                    case.path,
                    answer.status,
                    answer.text()
                ))
            })?;
            prop_assert!(
                json["code"].is_string() && json["message"].is_string(),
                "{json}"
            );
        }
        prop_assert_eq!(
            format!("{:?}", target.store),
            before,
            "a rejected request changed the store"
        );
    }
    // No connection exists here, so nothing may reach RD's token endpoint.
    prop_assert_eq!(target.sandbox.sandbox.stats().token_calls, token_calls);
    Ok(())
}

#[test]
fn fuzz_every_route_with_hostile_input() {
    let target = target();
    proptest!(config(), |(case in case())| {
        check(&target, &case)?;
    });
    let cases = target.cases.load(Ordering::Relaxed);
    let rejected = target.rejected.load(Ordering::Relaxed);
    let accepted = target.accepted.load(Ordering::Relaxed);
    println!(
        "fuzz_every_route_with_hostile_input: {cases} requests: {accepted} accepted, {rejected} rejected with our error; 0 panics, 0 5xx, no write on a rejection"
    );
    assert!(cases > 0);
}

/// `POST /connect/sessions` from a signed caller, every body shape: 201 or our
/// 4xx JSON, and nothing written on a 4xx.
#[test]
fn fuzz_connect_session_bodies() {
    let target = target();
    proptest!(config(), |(body in body(), content_type in prop_oneof![
        Just("application/json".to_owned()),
        Just("application/json; charset=utf-8".to_owned()),
        Just("text/plain".to_owned()),
        "[ -~]{0,30}",
    ], base64 in any::<bool>())| {
        let case = Case {
            method: "POST",
            signed: true,
            path: "/connect/sessions".to_owned(),
            query: String::new(),
            headers: vec![("content-type".to_owned(), content_type)],
            cookies: Vec::new(),
            body,
            base64,
        };
        check(&target, &case)?;
    });
    let cases = target.cases.load(Ordering::Relaxed);
    let accepted = target.accepted.load(Ordering::Relaxed);
    println!(
        "fuzz_connect_session_bodies: {cases} requests: {accepted} sessions opened, {} rejected with our error and no write",
        target.rejected.load(Ordering::Relaxed)
    );
    assert!(cases > 0);
}

/// `GET /oauth/callback` with every query and cookie shape, from a browser that
/// wants a page or a client that wants JSON: never a 5xx, never a token call (no
/// session was opened), never a write.
#[test]
fn fuzz_oauth_callback_queries_and_cookies() {
    let target = target();
    proptest!(config(), |(query in query(), cookies in proptest::collection::vec(
        prop_oneof![
            "__Host-[a-z_]{0,10}=[ -~]{0,40}",
            "rdc_binding=[A-Za-z0-9_-]{0,50}",
            "[ -~]{0,40}",
        ], 0..3), html in any::<bool>())| {
        let accept = if html { "text/html" } else { "application/json" };
        let case = Case {
            method: "GET",
            signed: false,
            path: "/oauth/callback".to_owned(),
            query,
            headers: vec![("accept".to_owned(), accept.to_owned())],
            cookies,
            body: None,
            base64: false,
        };
        check(&target, &case)?;
    });
    println!(
        "fuzz_oauth_callback_queries_and_cookies: {} callbacks, all refused with our error, no token call, no write",
        target.cases.load(Ordering::Relaxed)
    );
}

/// What RD's token endpoint may answer: any status, content type and body (every
/// documented error shape among them). The client never panics, never hands back a
/// pair it did not get, and classifies every refusal.
#[test]
fn fuzz_rd_token_answers() {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    use connector::domain::Product;
    use connector::ports::ClientCredentials;
    use connector::secret::{ClientSecret, RefreshToken};
    use std::sync::Mutex;

    type Answer = (u16, String, Vec<u8>);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let next: Arc<Mutex<Answer>> = Arc::new(Mutex::new((200, String::new(), Vec::new())));
    let served = next.clone();
    let base = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new().fallback(move || {
            let (status, content_type, body) = served.lock().expect("lock").clone();
            async move {
                let mut response = body.into_response();
                *response.status_mut() = StatusCode::from_u16(status).expect("status");
                if let Ok(value) = HeaderValue::from_str(&content_type) {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    });
    let endpoints = connector::outbound::rdstation::RdStationEndpoints {
        api_base: url::Url::parse(&base).expect("url"),
        marketing_authorize: url::Url::parse(&format!("{base}/auth/dialog")).expect("url"),
        crm_authorize: url::Url::parse(&format!("{base}/oauth/authorize")).expect("url"),
    };
    let client = connector::outbound::rdstation::RdStationClient::new(
        endpoints,
        std::time::Duration::from_secs(5),
    )
    .expect("client");
    let credentials = ClientCredentials {
        client_id: "fuzz".to_owned(),
        client_secret: ClientSecret::new("fuzz-secret".to_owned()),
    };
    let body = prop_oneof![
        any::<Vec<u8>>(),
        "[ -~]{0,80}".prop_map(String::into_bytes),
        (
            prop_oneof![
                Just("access_token".to_owned()),
                Just("refresh_token".to_owned()),
                Just("expires_in".to_owned()),
                Just("error".to_owned()),
                Just("errors".to_owned()),
                "[a-z_]{1,12}",
            ],
            prop_oneof![
                Just("\"x\"".to_owned()),
                Just("86400".to_owned()),
                Just("-1".to_owned()),
                Just("1e400".to_owned()),
                Just("null".to_owned()),
                Just("{\"error_type\":\"INVALID_REFRESH_TOKEN\"}".to_owned()),
                Just("[]".to_owned())
            ],
        )
            .prop_map(|(k, v)| format!("{{\"{k}\":{v}}}").into_bytes()),
        Just(br#"{"access_token":"a","refresh_token":"r","expires_in":86400}"#.to_vec()),
        Just(br#"{"access_token":"a","expires_in":"soon"}"#.to_vec()),
        Just(br#"{"error":"invalid_grant","error_description":"bad"}"#.to_vec()),
        Just(br#"{"errors":{"error_type":"EXPIRED_CODE_GRANT","error_message":"x"}}"#.to_vec()),
        Just(br#"{"errors":[{"error_type":"UNAUTHORIZED","error_message":"x"}]}"#.to_vec()),
    ];
    let cases = AtomicU64::new(0);
    let pairs = AtomicU64::new(0);
    proptest!(config(), |(status in prop_oneof![Just(200u16), Just(400u16), Just(401u16), Just(429u16), Just(500u16), 100u16..600u16],
                          content_type in prop_oneof![Just("application/json".to_owned()), Just("text/html".to_owned()), "[ -~]{0,20}"],
                          body in body,
                          crm in any::<bool>())| {
        *next.lock().expect("lock") = (status, content_type, body.clone());
        let product = if crm { Product::Crm } else { Product::Marketing };
        let result = runtime.block_on(client.refresh(
            product,
            &credentials,
            &RefreshToken::new("fuzz-refresh".to_owned()),
        ));
        cases.fetch_add(1, Ordering::Relaxed);
        if let Ok(issued) = result {
            pairs.fetch_add(1, Ordering::Relaxed);
            // A pair only from a 2xx that carried an access token.
            prop_assert!((200..300).contains(&status), "a pair from status {status}");
            prop_assert!(
                String::from_utf8_lossy(&body).contains("access_token"),
                "a pair from {:?}",
                String::from_utf8_lossy(&body)
            );
            let _ = issued;
        }
    });
    println!(
        "fuzz_rd_token_answers: {} answers parsed, {} pairs accepted, every other answer classified; 0 panics",
        cases.load(Ordering::Relaxed),
        pairs.load(Ordering::Relaxed)
    );
}
