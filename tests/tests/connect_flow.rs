//! The connect flow end to end: API Gateway HTTP API v2 events into the callback
//! function's router, the RD Station sandbox over loopback, DynamoDB and Secrets
//! Manager on moto.

use connector::domain::{ConnectionStatus, Product};
use connector::ports::ConnectionStore;
use connector::secret::ExposeSecret;
use integration_tests::apigw::{self, EventRequest};
use integration_tests::app::{PUBLIC_BASE_URL, RETURN_ORIGIN, TestApp};
use integration_tests::moto;
use rd_sandbox::SandboxProduct;
use serde_json::json;
use url::Url;

fn sandbox_product(product: Product) -> SandboxProduct {
    match product {
        Product::Marketing => SandboxProduct::Marketing,
        Product::Crm => SandboxProduct::Crm,
    }
}

#[tokio::test]
async fn connects_marketing_and_crm_and_stores_the_issued_pair() {
    let app = TestApp::start().await;
    for (id, product) in [("acme:mkt", Product::Marketing), ("acme:crm", Product::Crm)] {
        let answer = app.connect(id, product.as_str()).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(
            answer.json(),
            json!({"status": "connected", "connection_id": id, "product": product.as_str(), "version": 1})
        );

        let stored = app.stored(id).await.expect("connection stored");
        assert_eq!(stored.product, product);
        assert_eq!(stored.status, ConnectionStatus::Active);
        assert_eq!(stored.version, 1);
        let access = stored.tokens.access_token.expose_secret();
        let refresh = stored.tokens.refresh_token.expose_secret();
        // The stored pair is the one the sandbox issued, and it works for its product only.
        let issued = app.sandbox.sandbox.issued_secrets();
        assert!(issued.iter().any(|s| s == access) && issued.iter().any(|s| s == refresh));
        assert!(
            app.sandbox
                .sandbox
                .access_token_is_valid(sandbox_product(product), access)
        );
        let other = match product {
            Product::Marketing => SandboxProduct::Crm,
            Product::Crm => SandboxProduct::Marketing,
        };
        assert!(!app.sandbox.sandbox.access_token_is_valid(other, access));
        let lifetime = stored.tokens.access_expires_at.0 - stored.connected_at.0;
        let expected = match product {
            Product::Marketing => 86_400,
            Product::Crm => 7_200,
        };
        assert!(
            (expected - 5..=expected + 5).contains(&lifetime),
            "{lifetime}"
        );
        assert!(!answer.text().contains(access) && !answer.text().contains(refresh));
    }
    assert_eq!(app.sandbox.sandbox.stats().codes_exchanged, 2);
    app.assert_no_secret_logged();
}

/// A first deploy has no `PUBLIC_BASE_URL`: connect links, the redirect URI RD is
/// given, the cookie and the code exchange all use the domain API Gateway says the
/// request came in on. The sandbox accepts only that exact redirect URI.
#[tokio::test]
async fn without_a_configured_base_the_api_domain_is_used_throughout() {
    let app = TestApp::start_at(None).await;
    let path = app.connect_path("first-deploy", "crm", None).await;
    let consent = app.consent_url(&path).await;
    let redirect: std::collections::HashMap<_, _> = consent.query_pairs().into_owned().collect();
    assert_eq!(
        redirect["redirect_uri"],
        format!(
            "https://{}/oauth/callback",
            integration_tests::app::API_DOMAIN
        )
    );
    let back = app.decide(&consent, "allow").await;
    let answer = app.callback(&back, false).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(app.stored("first-deploy").await.is_some());
    assert_eq!(app.sandbox.sandbox.stats().codes_exchanged, 1);
}

#[tokio::test]
async fn browsers_get_a_page_and_callers_with_return_url_get_a_redirect() {
    let app = TestApp::start().await;
    let path = app.connect_path("page", "crm", None).await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    let answer = app.callback(&back, true).await;
    // The browser is sent on to a result URL without the code and state, so a
    // reload shows the success instead of replaying the callback.
    assert_eq!(answer.status, 303, "{}", answer.text());
    let location = answer.location();
    assert!(location.ends_with("/done"), "{location}");
    assert!(!location.contains("code") && !location.contains("state"));
    for _reload in 0..2 {
        let page = app.follow_in(&app.person, &answer).await;
        assert_eq!(page.status, 200);
        assert!(
            page.headers["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/html")
        );
        assert!(
            page.text()
                .contains("A conta do RD Station CRM agora está conectada como"),
            "{}",
            page.text()
        );
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert_eq!(page.headers["cache-control"], "no-store");
    }
    // Only the browser that completed the flow sees its result.
    let stranger = app
        .follow_in(&integration_tests::app::Browser::default(), &answer)
        .await;
    assert_eq!(stranger.status, 404);
    assert!(stranger.text().contains("não é mais exibido"));

    let return_url = format!("{RETURN_ORIGIN}/integrations/rd?tenant=7");
    let path = app
        .connect_path("redirected", "marketing", Some(&return_url))
        .await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    let answer = app.callback(&back, true).await;
    assert_eq!(answer.status, 302);
    let location = Url::parse(&answer.location()).expect("url");
    assert_eq!(
        location.origin(),
        Url::parse(RETURN_ORIGIN).expect("url").origin()
    );
    let query: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert!(query.contains(&("tenant".into(), "7".into())));
    assert!(query.contains(&("status".into(), "connected".into())));
    assert!(query.contains(&("connection_id".into(), "redirected".into())));
    assert!(app.stored("redirected").await.is_some());
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn reconnecting_keeps_the_id_and_bumps_the_version() {
    let app = TestApp::start().await;
    assert_eq!(app.connect("again", "crm").await.status, 200);
    let first = app.stored("again").await.expect("stored");
    let answer = app.reconnect("again", "crm").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["version"], 2);
    let second = app.stored("again").await.expect("stored");
    assert_eq!(second.version, 2);
    assert_eq!(second.created_at, first.created_at);
    assert_ne!(second.tokens.refresh_token, first.tokens.refresh_token);
    app.assert_no_secret_logged();
}

/// `POST /connections/{id}/reconnect`: one call opens the link that replaces
/// the grant in place (same id, product and tags); an unknown id, a bad body
/// or an anonymous caller are refused with a clear error and change nothing.
#[tokio::test]
async fn one_call_reconnects_an_existing_connection_in_place() {
    let app = TestApp::start().await;
    let tagged =
        json!({"connection_id": "one-call", "product": "marketing", "tags": {"customer": "42"}});
    assert_eq!(app.connect_with(tagged).await.status, 200);
    let first = app.stored("one-call").await.expect("stored");
    let (opened, done) = app.reconnect_in_one_call("one-call", None).await;
    let session = opened.json();
    assert_eq!(session["product"], "marketing");
    assert_eq!(session["reconnect"], true);
    assert_eq!(session["connection_id"], "one-call");
    assert_eq!(done.status, 200, "{}", done.text());
    let second = app.stored("one-call").await.expect("stored");
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.version, first.version + 1);
    assert_ne!(second.tokens.refresh_token, first.tokens.refresh_token);
    assert!(second.tags.has("customer", "42"), "its tags are kept");
    // An empty JSON object is a body too.
    let (_, done) = app.reconnect_in_one_call("one-call", Some(json!({}))).await;
    assert_eq!(done.status, 200, "{}", done.text());

    fn refused<'a>(path: &'a str, body: Option<&[u8]>, fixture: &'a str) -> EventRequest<'a> {
        let mut request = EventRequest::new(fixture, "POST", path);
        request.body = body.map(<[u8]>::to_vec);
        request
    }
    for (request, status, code) in [
        (
            refused(
                "/connections/never-made/reconnect",
                None,
                apigw::IAM_AUTHORIZED,
            ),
            404,
            "connection_not_found",
        ),
        (
            refused(
                "/connections/one-call/reconnect",
                Some(b"{not json"),
                apigw::IAM_AUTHORIZED,
            ),
            400,
            "invalid_json",
        ),
        (
            refused(
                "/connections/one-call/reconnect",
                Some(br#"{"product": "crm"}"#),
                apigw::IAM_AUTHORIZED,
            ),
            400,
            "invalid_json",
        ),
        (
            refused(
                "/connections/one-call/reconnect",
                Some(br#"{"return_url": "https://elsewhere.example"}"#),
                apigw::IAM_AUTHORIZED,
            ),
            400,
            "return_url_not_allowed",
        ),
        (
            refused("/connections/one-call/reconnect", None, apigw::BROWSER),
            403,
            "forbidden",
        ),
    ] {
        let answer = app.send(&request).await;
        assert_eq!(answer.status, status, "{}", answer.text());
        assert_eq!(answer.error_code(), code, "{}", answer.text());
    }
    let last = app.stored("one-call").await.expect("stored");
    assert_eq!(
        last.version,
        second.version + 1,
        "only the second reconnect wrote"
    );
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn expired_state_is_refused_and_writes_nothing() {
    let app = TestApp::start().await;
    let path = app.connect_path("late", "crm", None).await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    app.clock.advance(601);
    let answer = app.callback(&back, false).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_state");
    assert!(app.stored("late").await.is_none());
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        0,
        "the code was never exchanged"
    );
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn replayed_state_is_refused_and_changes_nothing() {
    let app = TestApp::start().await;
    let path = app.connect_path("once", "marketing", None).await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    assert_eq!(app.callback(&back, false).await.status, 200);
    let stored = app.stored("once").await.expect("stored");

    let replay = app.callback(&back, false).await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.error_code(), "invalid_state");
    assert_eq!(app.stored("once").await.expect("still stored"), stored);
    assert_eq!(app.sandbox.sandbox.stats().token_calls, 1);

    // The connect link itself is spent too.
    let reopen = app
        .send(&EventRequest::new(apigw::BROWSER, "GET", &path))
        .await;
    assert_eq!(reopen.status, 400);
    assert!(reopen.text().contains("já foi usado"), "{}", reopen.text());
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn forged_state_is_refused_and_does_not_burn_the_session() {
    let app = TestApp::start().await;
    let path = app.connect_path("forged", "crm", None).await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    let real: Vec<(String, String)> = back.query_pairs().into_owned().collect();
    let code = &real.iter().find(|(k, _)| k == "code").expect("code").1;
    let state = &real.iter().find(|(k, _)| k == "state").expect("state").1;
    // The state is opaque: it names no session.
    let session_id = path.rsplit('/').next().expect("session id");
    assert!(!state.contains(session_id));

    let mut altered = state.clone();
    altered.replace_range(0..1, if state.starts_with('A') { "B" } else { "A" });
    let forged_states = [
        altered,
        "garbage".to_owned(),
        session_id.to_owned(),
        format!("{session_id}.{state}"),
        String::new(),
    ];
    for forged in &forged_states {
        let mut url = Url::parse(&format!("{PUBLIC_BASE_URL}/oauth/callback")).expect("url");
        url.query_pairs_mut()
            .append_pair("code", code)
            .append_pair("state", forged);
        let answer = app.callback(&url, false).await;
        assert_eq!(answer.status, 400, "{forged:?}");
        assert_eq!(answer.error_code(), "invalid_state");
    }
    let mut no_state = Url::parse(&format!("{PUBLIC_BASE_URL}/oauth/callback")).expect("url");
    no_state.query_pairs_mut().append_pair("code", code);
    assert_eq!(
        app.callback(&no_state, false).await.error_code(),
        "invalid_state"
    );

    assert!(app.stored("forged").await.is_none());
    assert_eq!(app.sandbox.sandbox.stats().token_calls, 0);
    // The genuine redirect still completes.
    assert_eq!(app.callback(&back, false).await.status, 200);
    assert!(app.stored("forged").await.is_some());
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn a_state_from_an_earlier_visit_of_the_link_no_longer_works() {
    let app = TestApp::start().await;
    let path = app.connect_path("twice-opened", "crm", None).await;
    let first_visit = app.decide(&app.consent_url(&path).await, "allow").await;
    let second_visit = app.decide(&app.consent_url(&path).await, "allow").await;
    assert_eq!(
        app.callback(&first_visit, false).await.error_code(),
        "invalid_state"
    );
    assert_eq!(app.callback(&second_visit, false).await.status, 200);
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn expired_code_leaves_the_existing_connection_untouched() {
    let app = TestApp::start().await;
    assert_eq!(app.connect("kept", "marketing").await.status, 200);
    let before = app.stored("kept").await.expect("stored");

    let path = app.reconnect_path("kept", "marketing").await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    // Marketing codes live 60 minutes; the service's own session is still open.
    app.sandbox.sandbox.advance_clock(3_601);
    let answer = app.callback(&back, false).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.error_code(), "expired_code");
    assert_eq!(app.stored("kept").await.expect("still stored"), before);
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn denied_consent_writes_nothing_and_says_so() {
    let app = TestApp::start().await;
    let path = app.connect_path("declined", "crm", None).await;
    let back = app.decide(&app.consent_url(&path).await, "deny").await;
    let answer = app.callback(&back, false).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "access_denied");
    assert!(app.stored("declined").await.is_none());

    let return_url = format!("{RETURN_ORIGIN}/back");
    let path = app.connect_path("declined", "crm", Some(&return_url)).await;
    let back = app.decide(&app.consent_url(&path).await, "deny").await;
    let answer = app.callback(&back, true).await;
    assert_eq!(answer.status, 302);
    let location = answer.location();
    assert!(location.starts_with(&return_url), "{location}");
    assert!(location.contains("status=error") && location.contains("reason=access_denied"));
    assert!(app.stored("declined").await.is_none());
    assert_eq!(app.sandbox.sandbox.stats().token_calls, 0);
}

#[tokio::test]
async fn rd_failure_during_exchange_overwrites_nothing() {
    let app = TestApp::start().await;
    assert_eq!(app.connect("steady", "crm").await.status, 200);
    let before = app.stored("steady").await.expect("stored");
    let path = app.reconnect_path("steady", "crm").await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    app.sandbox
        .sandbox
        .inject_fault(rd_sandbox::Fault::ServerError, 1);
    let answer = app.callback(&back, false).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.error_code(), "rdstation_unavailable");
    assert_eq!(app.stored("steady").await.expect("stored"), before);
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn rotated_client_secret_is_read_again_after_invalid_client() {
    let app = TestApp::start().await;
    // The environment starts with a stale secret in its cache...
    let mut stale = app.sandbox_config.clone();
    stale.crm.client_secret = "an-old-rotated-secret".to_owned();
    let sm = moto::secretsmanager().await;
    sm.put_secret_value()
        .secret_id(&app.secret_name)
        .secret_string(integration_tests::app::credentials_json(&stale))
        .send()
        .await
        .expect("put");
    let path = app.connect_path("rotated", "crm", None).await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    // ...then operators store the current one.
    sm.put_secret_value()
        .secret_id(&app.secret_name)
        .secret_string(integration_tests::app::credentials_json(
            &app.sandbox_config,
        ))
        .send()
        .await
        .expect("put");
    let answer = app.callback(&back, false).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        2,
        "one refused, one retried"
    );
    assert!(app.stored("rotated").await.is_some());
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn a_connection_id_cannot_change_product() {
    let app = TestApp::start().await;
    assert_eq!(app.connect("one-product", "crm").await.status, 200);
    let answer = app
        .open_session(json!({"connection_id": "one-product", "product": "marketing"}))
        .await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.error_code(), "product_mismatch");
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let app = TestApp::start().await;
    let cases = [
        (
            json!({"connection_id": "has space", "product": "crm"}),
            "invalid_connection_id",
        ),
        (
            json!({"connection_id": "", "product": "crm"}),
            "invalid_connection_id",
        ),
        (
            json!({"connection_id": "x".repeat(129), "product": "crm"}),
            "invalid_connection_id",
        ),
        (
            json!({"connection_id": "ok", "product": "crm-v1"}),
            "invalid_product",
        ),
        (json!({"connection_id": "ok"}), "invalid_json"),
        (
            json!({"connection_id": 7, "product": "crm"}),
            "invalid_json",
        ),
        (
            json!({"connection_id": "ok", "product": "crm", "return_url": "https://evil.example.net/x"}),
            "return_url_not_allowed",
        ),
        (
            json!({"connection_id": "ok", "product": "crm", "return_url": "javascript:alert(1)"}),
            "return_url_not_allowed",
        ),
        (
            json!({"connection_id": "ok", "product": "crm", "return_url": "/relative"}),
            "return_url_not_allowed",
        ),
    ];
    for (body, code) in cases {
        let answer = app.open_session(body.clone()).await;
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(answer.error_code(), code, "{body}");
    }

    let mut not_json = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
    not_json.body = Some(b"{\"connection_id\":".to_vec());
    assert_eq!(app.send(&not_json).await.error_code(), "invalid_json");

    let mut wrong_type = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
    wrong_type.headers.push(("content-type", "text/plain"));
    wrong_type.body = Some(b"connection_id=ok".to_vec());
    let answer = app.send(&wrong_type).await;
    assert_eq!(answer.status, 415);
    assert_eq!(answer.error_code(), "unsupported_media_type");

    let mut bad_session = EventRequest::new(apigw::BROWSER, "GET", "/connect/not-a-session");
    bad_session.headers.push(("accept", "application/json"));
    let answer = app.send(&bad_session).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_session");

    let mut repeated = EventRequest::new(apigw::BROWSER, "GET", "/oauth/callback");
    repeated.query = "code=a&state=x.y&state=z.w";
    repeated.headers.push(("accept", "application/json"));
    let answer = app.send(&repeated).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_request");

    let answer = app
        .send(&EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/nowhere"))
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error_code(), "not_found");

    let answer = app
        .send(&EventRequest::new(
            apigw::IAM_AUTHORIZED,
            "DELETE",
            "/connect/sessions",
        ))
        .await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.error_code(), "method_not_allowed");

    assert!(app.stored("ok").await.is_none());
}

/// Header and response splitting through `return_url`: CR/LF (raw or encoded)
/// can neither end the `Location` header nor add one; the URL is refused or
/// carried percent-encoded.
#[tokio::test]
async fn a_return_url_cannot_split_the_redirect() {
    let app = TestApp::start().await;
    for hostile in [
        format!("{RETURN_ORIGIN}/done?x=%0d%0aSet-Cookie:%20stolen=1"),
        format!("{RETURN_ORIGIN}/done%0D%0ALocation:%20https://evil.example/"),
        format!("{RETURN_ORIGIN}/done?x=\r\nSet-Cookie: stolen=1"),
    ] {
        let answer = app
            .open_session(
                json!({"connection_id": "split", "product": "crm", "return_url": hostile}),
            )
            .await;
        if answer.status != 201 {
            assert_eq!(answer.status, 400, "{}", answer.text());
            continue;
        }
        let path = Url::parse(answer.json()["connect_url"].as_str().expect("url"))
            .expect("url")
            .path()
            .to_owned();
        let back = app.decide(&app.consent_url(&path).await, "allow").await;
        let landed = app.callback(&back, false).await;
        assert_eq!(landed.status, 302, "{}", landed.text());
        let location = landed.headers["location"].as_bytes();
        assert!(!location.contains(&b'\r') && !location.contains(&b'\n'));
        assert!(!landed.headers.contains_key("set-cookie"));
        assert_eq!(
            Url::parse(&landed.location()).expect("url").origin(),
            Url::parse(RETURN_ORIGIN).expect("url").origin()
        );
        app.store
            .delete(&connector::domain::ConnectionId::in_default_tenant("split").expect("id"))
            .await
            .expect("delete");
    }
}

/// Found by the route fuzzer: a body over the extractor's limit used to get
/// axum's plain-text refusal instead of our JSON error.
#[tokio::test]
async fn an_oversized_session_request_gets_our_json_error_and_writes_nothing() {
    let app = TestApp::start().await;
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
    let mut body = br#"{"connection_id":"big","product":"crm","pad":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 3 * 1024 * 1024));
    body.extend(br#""}"#);
    request.body = Some(body);
    let answer = app.send(&request).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error_code(), "payload_too_large");
    assert!(app.stored("big").await.is_none());
}

#[tokio::test]
async fn base64_encoded_bodies_are_accepted() {
    let app = TestApp::start().await;
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
    request.body = Some(
        json!({"connection_id": "b64", "product": "crm"})
            .to_string()
            .into_bytes(),
    );
    request.base64 = true;
    let answer = app.send(&request).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["connection_id"], "b64");
    assert!(body["expires_at"].as_str().expect("rfc3339").ends_with('Z'));
}

#[tokio::test]
async fn the_connect_link_binds_the_session_to_the_browser_that_opened_it() {
    let app = TestApp::start().await;
    let path = app.connect_path("bound", "crm", None).await;
    let opened = app.open_link_in(&app.person, &path).await;
    assert_eq!(opened.status, 302);
    let cookie = opened.headers["set-cookie"].to_str().expect("ascii");
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(cookie.starts_with(&format!("{}=", connector::inbound::http::BINDING_COOKIE)));
    // Opening the link again in the same browser works (and issues a fresh state).
    let consent = app.consent_url(&path).await;

    // The same link in another browser is refused, with a page that says why.
    let other = integration_tests::app::Browser::default();
    let refused = app.open_link_in(&other, &path).await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.text().contains("outro navegador"),
        "{}",
        refused.text()
    );
    assert!(refused.headers.get("set-cookie").is_none());
    let mut json = EventRequest::new(apigw::BROWSER, "GET", &path);
    json.headers.push(("accept", "application/json"));
    assert_eq!(
        app.send(&json).await.error_code(),
        "session_in_another_browser"
    );

    // The person who opened it finishes normally.
    let back = app.decide(&consent, "allow").await;
    assert_eq!(app.callback(&back, false).await.status, 200);
    assert!(app.stored("bound").await.is_some());
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn a_forwarded_consent_url_connects_nothing() {
    let app = TestApp::start().await;
    // Someone opens a connect link and forwards RD's consent page to another person.
    let path = app.connect_path("forwarded", "marketing", None).await;
    let consent = app.consent_url(&path).await;
    let victim = integration_tests::app::Browser::default();
    let back = app.decide(&consent, "allow").await;
    let answer = app.callback_in(&victim, &back, true).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.text().contains("outro navegador"),
        "{}",
        answer.text()
    );
    let answer = app.callback_in(&victim, &back, false).await;
    assert_eq!(answer.error_code(), "invalid_state");
    assert!(app.stored("forwarded").await.is_none());
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        0,
        "no code was exchanged"
    );
    // A browser with a binding cookie of its own (from another link) fares no better.
    let other_path = app.connect_path("elsewhere", "crm", None).await;
    app.consent_url_in(&victim, &other_path).await;
    assert_eq!(
        app.callback_in(&victim, &back, false).await.error_code(),
        "invalid_state"
    );
    assert_eq!(app.sandbox.sandbox.stats().token_calls, 0);
    assert!(app.stored("forwarded").await.is_none());
    // The browser that opened the link still can: the refusals burned nothing.
    assert_eq!(app.callback(&back, false).await.status, 200);
    app.assert_no_secret_logged();
}

#[tokio::test]
async fn an_existing_connection_is_replaced_only_on_request() {
    let app = TestApp::start().await;
    assert_eq!(app.connect("taken", "crm").await.status, 200);
    let before = app.stored("taken").await.expect("stored");
    let answer = app
        .open_session(json!({"connection_id": "taken", "product": "crm"}))
        .await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.error_code(), "connection_exists");
    assert_eq!(app.stored("taken").await.expect("stored"), before);

    // A session opened before the connection existed does not replace it either.
    let path = app.connect_path("raced", "crm", None).await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    assert_eq!(app.connect("raced", "crm").await.status, 200);
    let first = app.stored("raced").await.expect("stored");
    let answer = app.callback(&back, false).await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.error_code(), "connection_exists");
    assert_eq!(app.stored("raced").await.expect("stored"), first);
}

#[tokio::test]
async fn opening_a_session_needs_an_iam_caller() {
    let app = TestApp::start().await;
    // The same request without API Gateway's IAM authorizer context.
    let mut request = EventRequest::new(apigw::BROWSER, "POST", "/connect/sessions");
    request.headers.push(("content-type", "application/json"));
    request.body = Some(
        json!({"connection_id": "anon", "product": "crm"})
            .to_string()
            .into_bytes(),
    );
    let answer = app.send(&request).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.error_code(), "forbidden");

    // An allow-list admits matching principals only.
    let mut service = app.service.clone();
    service.tenancy.policy = connector::services::caller_policy::CallerPolicy::Iam {
        allowed_arns: vec!["arn:aws:sts::123456789012:assumed-role/other-role/*".to_owned()],
    };
    let router = connector::inbound::http::oauth_callback_router(
        service.clone(),
        connector::inbound::http::Pages::default(),
    );
    let mut signed = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
    signed.body = Some(
        json!({"connection_id": "listed", "product": "crm"})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(apigw::send(&router, &signed).await.status, 403);
    service.tenancy.policy = connector::services::caller_policy::CallerPolicy::Iam {
        allowed_arns: vec![
            "arn:aws:sts::123456789012:assumed-role/integration-worker/*".to_owned(),
        ],
    };
    let router = connector::inbound::http::oauth_callback_router(
        service,
        connector::inbound::http::Pages::default(),
    );
    assert_eq!(apigw::send(&router, &signed).await.status, 201);
}

#[tokio::test]
async fn every_answer_is_nosniff_and_pages_have_a_strict_policy() {
    let app = TestApp::start().await;
    let path = app.connect_path("headers", "crm", None).await;
    let back = app.decide(&app.consent_url(&path).await, "allow").await;
    let done = app.callback(&back, true).await;
    assert_eq!(done.status, 303);
    let page = app.follow_in(&app.person, &done).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    let policy = page.headers["content-security-policy"]
        .to_str()
        .expect("ascii");
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "style-src 'sha256-",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    let json = app
        .open_session(json!({"connection_id": "", "product": "crm"}))
        .await;
    assert_eq!(json.status, 400);
    assert_eq!(json.headers["x-content-type-options"], "nosniff");
    let unknown = app
        .send(&EventRequest::new(apigw::BROWSER, "GET", "/nowhere"))
        .await;
    assert_eq!(unknown.headers["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn unknown_paths_answer_a_page_to_a_browser_and_json_to_a_client() {
    let app = TestApp::start().await;
    let page = app
        .send(&EventRequest::new(apigw::BROWSER, "GET", "/conect/typo"))
        .await;
    assert_eq!(page.status, 404);
    assert!(
        page.text().contains("Página não encontrada"),
        "{}",
        page.text()
    );
    let mut english = EventRequest::new(apigw::BROWSER, "GET", "/conect/typo");
    english
        .headers
        .push(("accept-language", "en-GB,en;q=0.9,pt;q=0.5"));
    assert!(app.send(&english).await.text().contains("Page not found"));
    let mut client = EventRequest::new(apigw::BROWSER, "GET", "/conect/typo");
    client.headers.push(("accept", "application/json"));
    let json = app.send(&client).await;
    assert_eq!(
        (json.status, json.error_code()),
        (404, "not_found".to_owned())
    );
    // Browsers ask for an icon on every page, with an Accept that names images.
    let mut icon = EventRequest::new(apigw::BROWSER, "GET", "/favicon.ico");
    icon.headers
        .push(("accept", "image/avif,image/webp,*/*;q=0.8"));
    let icon = app.send(&icon).await;
    assert_eq!(icon.status, 204);
    assert!(icon.text().is_empty());
}
