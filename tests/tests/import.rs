//! Import as deployed: API Gateway v2 events into the API router, connections
//! on DynamoDB (moto), RD's sandbox on loopback holding the grants a previous
//! system made. A CRM token is spent exactly once and only the service holds
//! the new pair; a Marketing token is validated; the same token again costs
//! nothing; a dead token leaves nothing; bad bodies change nothing; a tenant
//! reaches only its own connections; two instances importing at once spend
//! the token once.

use std::time::Duration;

use axum::Router;
use connector::assembly::{Assembly, Settings, TenancySettings};
use connector::domain::{ConnectionId, PrincipalPattern, Product, TenantId, TokenCallError};
use connector::inbound::http::api_proxy_router;
use connector::ports::{ConnectionStore, CredentialSource};
use connector::secret::{ExposeSecret, RefreshToken};
use integration_tests::apigw::{self, Answer, EventRequest};
use integration_tests::refresh_app::{RefreshApp, sandbox_product};
use rd_sandbox::Fault;
use serde_json::{Value, json};

fn api(app: &RefreshApp) -> Router {
    api_proxy_router(app.assembly.api_state().expect("state"))
}

async fn import_as(router: &Router, caller: Option<&str>, body: &[u8]) -> Answer {
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connections/import");
    if let Some(caller) = caller {
        request = request.by(caller);
    }
    request.headers.push(("content-type", "application/json"));
    request.body = Some(body.to_vec());
    apigw::send(router, &request).await
}

async fn import(router: &Router, body: Value) -> Answer {
    import_as(router, None, body.to_string().as_bytes()).await
}

async fn get(router: &Router, path: &str) -> Answer {
    apigw::send(
        router,
        &EventRequest::new(apigw::IAM_AUTHORIZED, "GET", path),
    )
    .await
}

/// A grant a previous system holds: `(access_token, refresh_token)`.
fn held_grant(app: &RefreshApp, product: Product) -> (String, String) {
    let (access, refresh, _) = app.sandbox.sandbox.issue_pair(sandbox_product(product));
    (access, refresh)
}

/// Whether RD still takes `refresh_token` (a refresh with it would rotate).
async fn rd_refuses(app: &RefreshApp, product: Product, refresh_token: &str) -> bool {
    let credentials = app.credentials.credentials(product).await.expect("read");
    match app
        .engine
        .token_endpoint
        .refresh(product, &credentials, &RefreshToken::new(refresh_token))
        .await
    {
        Err(TokenCallError::InvalidGrant { .. }) => true,
        Ok(_) => false,
        Err(other) => panic!("RD answered neither way: {other}"),
    }
}

fn assert_no_token_in(answer: &Answer, tokens: &[&str]) {
    let text = answer.text();
    for token in tokens {
        assert!(!text.contains(token), "a token in the answer: {text}");
    }
}

#[tokio::test]
async fn a_crm_import_spends_the_held_token_once_and_only_the_service_holds_the_new_pair() {
    let app = RefreshApp::start().await;
    let router = api(&app);
    let (held_access, held_refresh) = held_grant(&app, Product::Crm);
    let calls = app.sandbox.sandbox.stats().token_calls;

    let answer = import(
        &router,
        json!({
            "connection_id": "acme-crm",
            "product": "crm",
            "refresh_token": held_refresh,
            "access_token": held_access,
            "access_token_expires_at": "2030-01-01T00:00:00Z",
            "tags": {"customer": "acme"},
        }),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["outcome"], "imported");
    assert!(
        body["message"].as_str().expect("message").contains("spent"),
        "the handover is said: {body}"
    );
    assert_eq!(body["connection"]["status"], "active");
    assert_eq!(body["connection"]["tags"]["customer"], "acme");
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls + 1);
    assert_eq!(app.sandbox.sandbox.refresh_calls_for(&held_refresh), 1);

    // Only the service holds a working pair: the stored one is new and works
    // through the proxy.
    let stored = app.stored("acme-crm").await;
    assert_ne!(stored.tokens.refresh_token.expose_secret(), held_refresh);
    assert_eq!(
        stored.imported_from,
        Some(RefreshToken::new(&held_refresh).fingerprint())
    );
    let proxied = get(&router, "/proxy/acme-crm/crm/v2/echo").await;
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    assert_eq!(
        app.sandbox.sandbox.last_api_bearer().as_deref(),
        Some(stored.tokens.access_token.expose_secret())
    );
    assert_no_token_in(
        &answer,
        &[
            &held_access,
            &held_refresh,
            stored.tokens.access_token.expose_secret(),
            stored.tokens.refresh_token.expose_secret(),
        ],
    );

    // The same token again: the same connection, RD not called.
    let calls = app.sandbox.sandbox.stats().token_calls;
    let again = import(
        &router,
        json!({"connection_id": "acme-crm", "product": "crm", "refresh_token": held_refresh}),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["outcome"], "already_present");
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls);
    assert_eq!(app.stored("acme-crm").await.tokens, stored.tokens);

    // Another token onto that id, or the other product: refused, untouched.
    let (_, other_refresh) = held_grant(&app, Product::Crm);
    let other = import(
        &router,
        json!({"connection_id": "acme-crm", "product": "crm", "refresh_token": other_refresh}),
    )
    .await;
    assert_eq!(other.status, 409, "{}", other.text());
    assert_eq!(other.json()["code"], "connection_exists");
    let mismatch = import(
        &router,
        json!({"connection_id": "acme-crm", "product": "marketing", "refresh_token": held_refresh}),
    )
    .await;
    assert_eq!(mismatch.status, 409, "{}", mismatch.text());
    assert_eq!(mismatch.json()["code"], "product_mismatch");
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls);
    assert_eq!(app.stored("acme-crm").await.tokens, stored.tokens);

    // The previous system's copy is dead at RD (checked last: it is a call).
    assert!(rd_refuses(&app, Product::Crm, &held_refresh).await);
}

#[tokio::test]
async fn a_marketing_import_is_validated_by_one_refresh_and_a_second_costs_nothing() {
    let app = RefreshApp::start().await;
    let router = api(&app);
    let (held_access, held_refresh) = held_grant(&app, Product::Marketing);
    let calls = app.sandbox.sandbox.stats().token_calls;
    let body = json!({
        "connection_id": "acme-mkt",
        "product": "marketing",
        "refresh_token": held_refresh,
        "access_token": held_access,
        "access_token_expires_at": "2030-01-01T00:00:00Z",
    });
    let answer = import(&router, body.clone()).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(answer.json()["outcome"], "imported");
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls + 1);
    assert_no_token_in(&answer, &[&held_access, &held_refresh]);
    let proxied = get(&router, "/proxy/acme-mkt/platform/contacts/email:a@b.c").await;
    assert_ne!(proxied.status, 401, "{}", proxied.text());

    let again = import(&router, body).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["outcome"], "already_present");
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls + 1);
}

#[tokio::test]
async fn a_dead_token_answers_needs_reauth_and_leaves_nothing() {
    let app = RefreshApp::start().await;
    let router = api(&app);
    let (_, revoked) = held_grant(&app, Product::Crm);
    assert!(app.sandbox.sandbox.revoke(&revoked));
    for (name, token, product) in [
        ("revoked", revoked.as_str(), "crm"),
        ("made-up", "never-issued-by-rd", "marketing"),
    ] {
        let answer = import(
            &router,
            json!({"connection_id": name, "product": product, "refresh_token": token}),
        )
        .await;
        assert_eq!(answer.status, 422, "{}", answer.text());
        assert_eq!(answer.json()["code"], "needs_reauth");
        assert!(
            answer.json()["message"]
                .as_str()
                .expect("message")
                .contains("nothing was stored")
        );
        assert_no_token_in(&answer, &[token]);
        let id = ConnectionId::in_default_tenant(name).expect("valid");
        assert!(
            app.store.get(&id).await.expect("read").is_none(),
            "{name} stored"
        );
        assert_eq!(
            get(&router, &format!("/connections/{name}")).await.status,
            404
        );
    }
}

#[tokio::test]
async fn a_takeover_rd_did_not_process_is_finished_by_importing_again() {
    let app = RefreshApp::start().await;
    let router = api(&app);
    let (_, held_refresh) = held_grant(&app, Product::Crm);
    let body = json!({"connection_id": "later", "product": "crm", "refresh_token": held_refresh});
    app.sandbox.sandbox.inject_fault(Fault::ServerError, 1);
    let pending = import(&router, body.clone()).await;
    assert_eq!(pending.status, 202, "{}", pending.text());
    assert_eq!(pending.json()["outcome"], "refresh_pending");
    let stored = app.stored("later").await;
    assert_eq!(stored.tokens.refresh_token.expose_secret(), held_refresh);
    let retry_at = stored.backoff.next_attempt_at.expect("backing off");
    app.advance(retry_at.0 - stored.updated_at.0 + 1);

    let finished = import(&router, body).await;
    assert_eq!(finished.status, 200, "{}", finished.text());
    assert_eq!(finished.json()["outcome"], "already_present");
    let taken_over = app.stored("later").await;
    assert_ne!(
        taken_over.tokens.refresh_token.expose_secret(),
        held_refresh
    );
    assert!(rd_refuses(&app, Product::Crm, &held_refresh).await);
}

#[tokio::test]
async fn two_instances_importing_the_same_token_at_once_spend_it_once() {
    let app = RefreshApp::start().await;
    // Two Lambda environments: SDK clients, credential caches and engines of
    // their own, over one table.
    let dynamodb =
        || async { aws_sdk_dynamodb::Client::new(integration_tests::moto::sdk_config().await) };
    let first = api_proxy_router(
        app.instance_on(dynamodb().await)
            .await
            .api_state()
            .expect("state"),
    );
    let second = api_proxy_router(
        app.instance_on(dynamodb().await)
            .await
            .api_state()
            .expect("state"),
    );
    let (_, held_refresh) = held_grant(&app, Product::Crm);
    let calls = app.sandbox.sandbox.stats().token_calls;
    // RD answers slowly, so the second import arrives while the first spends.
    app.sandbox
        .sandbox
        .set_token_latency(Duration::from_millis(300));
    let body = json!({"connection_id": "raced", "product": "crm", "refresh_token": held_refresh});
    let (a, b) = tokio::join!(import(&first, body.clone()), import(&second, body));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 201], "{} / {}", a.text(), b.text());
    assert_eq!(app.sandbox.sandbox.refresh_calls_for(&held_refresh), 1);
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        calls + 1,
        "one call in all"
    );
    let stored = app.stored("raced").await;
    assert_ne!(stored.tokens.refresh_token.expose_secret(), held_refresh);
    for answer in [&a, &b] {
        assert_eq!(
            answer.json()["connection"]["version"],
            stored.version,
            "both answer the stored connection"
        );
    }
}

#[tokio::test]
async fn a_malformed_import_is_a_clear_error_and_changes_nothing() {
    let app = RefreshApp::start().await;
    let router = api(&app);
    let calls = app.sandbox.sandbox.stats().token_calls;
    let secret = "rt-that-must-not-echo";
    let cases: [(&[u8], &str); 9] = [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_import"),
        (br#"{"product": "crm", "refresh_token": "r"}"#, "invalid_import"),
        (br#"{"connection_id": "a", "refresh_token": "r"}"#, "invalid_import"),
        (br#"{"connection_id": "a", "product": "erp", "refresh_token": "r"}"#, "invalid_product"),
        (br#"{"connection_id": "a b", "product": "crm", "refresh_token": "r"}"#, "invalid_connection_id"),
        (br#"{"connection_id": "a", "product": "crm", "refresh_token": ""}"#, "invalid_import"),
        (
            br#"{"connection_id": "a", "product": "crm", "refresh_token": "r", "access_token": "rt-that-must-not-echo"}"#,
            "invalid_import",
        ),
        (
            br#"{"connection_id": "a", "product": "crm", "refresh_token": "r", "tags": {"k": 1}}"#,
            "invalid_tags",
        ),
    ];
    for (body, code) in cases {
        let answer = import_as(&router, None, body).await;
        assert_eq!(
            answer.status,
            400,
            "{}: {}",
            String::from_utf8_lossy(body),
            answer.text()
        );
        assert_eq!(answer.json()["code"], code, "{}", answer.text());
        assert!(answer.json()["message"].is_string());
        assert_no_token_in(&answer, &[secret]);
    }
    let too_large = vec![b' '; 64 * 1024];
    assert_eq!(import_as(&router, None, &too_large).await.status, 413);
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls);
    let listed = get(&router, "/connections").await;
    assert_eq!(listed.json()["connections"], json!([]), "nothing stored");
}

const OPERATOR: &str = "arn:aws:iam::123456789012:role/ops";
const ACME: &str = "arn:aws:sts::123456789012:assumed-role/acme-worker/s1";
const BETA: &str = "arn:aws:sts::123456789012:assumed-role/beta-worker/s1";

#[tokio::test]
async fn a_tenant_imports_into_its_own_tenant_only() {
    let app = RefreshApp::start().await;
    let settings = Settings {
        tenancy: TenancySettings {
            operators: vec![PrincipalPattern::parse(OPERATOR).expect("valid")],
            cache_seconds: 0,
        },
        ..app.assembly.settings().clone()
    };
    let assembly = Assembly::new(app.assembly.parts().clone(), settings).expect("client");
    let router = api_proxy_router(assembly.api_state().expect("state"));
    for (tenant, principal) in [("acme", ACME), ("beta", BETA)] {
        let mut put = EventRequest::new(
            apigw::IAM_AUTHORIZED,
            "PUT",
            if tenant == "acme" {
                "/tenants/acme"
            } else {
                "/tenants/beta"
            },
        )
        .by(OPERATOR);
        put.body = Some(json!({"principals": [principal]}).to_string().into_bytes());
        assert_eq!(apigw::send(&router, &put).await.status, 200);
    }
    let (_, acme_token) = held_grant(&app, Product::Crm);
    let (_, beta_token) = held_grant(&app, Product::Crm);
    let body = |token: &str| {
        json!({"connection_id": "shop", "product": "crm", "refresh_token": token}).to_string()
    };
    let acme = import_as(&router, Some(ACME), body(&acme_token).as_bytes()).await;
    assert_eq!(acme.status, 201, "{}", acme.text());
    assert_eq!(acme.json()["connection"]["tenant"], "acme");
    let acme_id =
        ConnectionId::parse_in(&TenantId::parse("acme").expect("valid"), "shop").expect("valid");
    let acme_stored = app
        .store
        .get(&acme_id)
        .await
        .expect("read")
        .expect("present");

    // Beta's "shop" is beta's own: acme's is neither refused to it nor touched.
    let beta = import_as(&router, Some(BETA), body(&beta_token).as_bytes()).await;
    assert_eq!(beta.status, 201, "{}", beta.text());
    assert_eq!(beta.json()["connection"]["tenant"], "beta");
    // Naming acme's tenant is for operators only.
    let mut into_acme =
        EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connections/import").by(BETA);
    into_acme.headers.push(("x-rdconn-tenant", "acme"));
    into_acme.body = Some(body(&beta_token).into_bytes());
    let refused = apigw::send(&router, &into_acme).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(
        app.store
            .get(&acme_id)
            .await
            .expect("read")
            .expect("present"),
        acme_stored,
        "acme's connection untouched"
    );
}

#[tokio::test]
async fn a_connection_named_import_keeps_its_routes() {
    let app = RefreshApp::start().await;
    let router = api(&app);
    app.connect("import", Product::Crm).await;
    let shown = get(&router, "/connections/import").await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert_eq!(shown.json()["connection_id"], "import");
    let deleted = apigw::send(
        &router,
        &EventRequest::new(apigw::IAM_AUTHORIZED, "DELETE", "/connections/import"),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
}
