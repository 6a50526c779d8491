//! Tenants as deployed: API Gateway v2 events signed by different IAM
//! principals into the API and callback routers, the tenant registry and the
//! connections on DynamoDB (moto), RD's sandbox on loopback. A caller sees and
//! touches only its tenant's connections; another tenant's id answers exactly
//! as an unknown one; an operator sees all; connections stored before tenants
//! existed stay usable once tenants are configured.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::Router;
use connector::assembly::{Assembly, Settings, TenancySettings};
use connector::domain::{PrincipalPattern, Product, TenantId};
use connector::inbound::http::{Pages, api_proxy_router, oauth_callback_router};
use connector::ports::ConnectionStore;
use connector::secret::ExposeSecret;
use integration_tests::apigw::{self, Answer, EventRequest};
use integration_tests::refresh_app::RefreshApp;
use serde_json::{Value, json};

const OPERATOR: &str = "arn:aws:iam::123456789012:role/ops";
const ACME: &str = "arn:aws:sts::123456789012:assumed-role/acme-worker/s1";
const BETA: &str = "arn:aws:sts::123456789012:assumed-role/beta-worker/s1";
/// The principal of the signed fixture: the caller from before tenants.
const LEGACY: &str = "arn:aws:sts::123456789012:assumed-role/integration-worker/session";

/// One instance of the service over the app's table and sandbox, with an
/// operator principal and the tenants read on every request.
fn instance(app: &RefreshApp) -> Assembly {
    let settings = Settings {
        tenancy: TenancySettings {
            operators: vec![PrincipalPattern::parse(OPERATOR).expect("valid")],
            cache_seconds: 0,
        },
        ..app.assembly.settings().clone()
    };
    Assembly::new(app.assembly.parts().clone(), settings).expect("client")
}

fn api(assembly: &Assembly) -> Router {
    api_proxy_router(assembly.api_state().expect("client"))
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("valid")
}

async fn send(
    router: &Router,
    caller: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, method, path).by(caller);
    request.body = body.map(|b| b.to_string().into_bytes());
    apigw::send(router, &request).await
}

async fn set_tenant(router: &Router, name: &str, principals: &[&str]) {
    let answer = send(
        router,
        OPERATOR,
        "PUT",
        &format!("/tenants/{name}"),
        Some(json!({ "principals": principals })),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// The names (and tenants) a caller's `GET /connections` pages show, page by page.
async fn listed(router: &Router, caller: &str, limit: u32) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let query = match &cursor {
            Some(c) => format!("limit={limit}&cursor={c}"),
            None => format!("limit={limit}"),
        };
        let mut request =
            EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/connections").by(caller);
        request.query = &query;
        let answer = apigw::send(router, &request).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let page = answer.json();
        for c in page["connections"].as_array().expect("list") {
            let tenant = c["tenant"].as_str().unwrap_or("default").to_owned();
            seen.push((tenant, c["connection_id"].as_str().expect("id").to_owned()));
        }
        cursor = page["next_cursor"]
            .as_str()
            .map(|c| url::form_urlencoded::byte_serialize(c.as_bytes()).collect());
        if cursor.is_none() {
            return seen;
        }
    }
    panic!("the pages did not end");
}

#[tokio::test]
async fn a_tenant_sees_and_touches_only_its_own_connections() {
    let app = RefreshApp::start().await;
    let ops = instance(&app);
    let router = api(&ops);
    set_tenant(&router, "acme", &[ACME]).await;
    set_tenant(
        &router,
        "beta",
        &["arn:aws:sts::123456789012:assumed-role/beta-worker/*"],
    )
    .await;
    // A tenant's caller manages no tenants.
    let refused = send(
        &router,
        ACME,
        "PUT",
        "/tenants/acme",
        Some(json!({"principals": []})),
    )
    .await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (403, "operator_only")
    );

    let acme_private = app
        .connect_in(&tenant("acme"), "only-acme", Product::Crm)
        .await;
    let acme_shared = app
        .connect_in(&tenant("acme"), "shared", Product::Crm)
        .await;
    let beta_shared = app
        .connect_in(&tenant("beta"), "shared", Product::Crm)
        .await;

    // Another instance (its own caches and clients) answers beta's caller.
    let other = api(&instance(&app));
    let stats = app.sandbox.sandbox.stats();
    let attempts: [(&str, &str, Option<Value>); 5] = [
        ("GET", "/connections/{}", None),
        (
            "PATCH",
            "/connections/{}",
            Some(json!({"rate_limit_per_minute": 1})),
        ),
        ("POST", "/connections/{}/refresh", None),
        ("DELETE", "/connections/{}", None),
        ("GET", "/proxy/{}/crm/v2/echo", None),
    ];
    for (method, template, body) in attempts {
        let theirs = send(
            &other,
            BETA,
            method,
            &template.replace("{}", "only-acme"),
            body.clone(),
        )
        .await;
        let unknown = send(
            &other,
            BETA,
            method,
            &template.replace("{}", "never-made"),
            body,
        )
        .await;
        assert_eq!(theirs.status, 404, "{method} {template}: {}", theirs.text());
        assert_eq!(
            (theirs.status, theirs.json()),
            (unknown.status, unknown.json()),
            "{method} {template}: another tenant's id answers as an unknown one"
        );
    }
    assert_eq!(
        app.sandbox.sandbox.stats().api_calls,
        stats.api_calls,
        "nothing reached RD"
    );
    assert_eq!(app.sandbox.sandbox.stats().token_calls, stats.token_calls);
    let still = app
        .store
        .get(&acme_private.id)
        .await
        .expect("read")
        .expect("acme's connection is still there");
    assert_eq!(
        (still.version, still.rate_limit_per_minute),
        (acme_private.version, None)
    );

    // The same name in two tenants: each caller reaches its own.
    for (caller, connection) in [(ACME, &acme_shared), (BETA, &beta_shared)] {
        let shown = send(&other, caller, "GET", "/connections/shared", None).await;
        assert_eq!(shown.status, 200);
        assert_eq!(shown.json()["tenant"], connection.id.tenant().as_str());
        assert_eq!(shown.json()["version"], connection.version);
        let proxied = send(&other, caller, "GET", "/proxy/shared/crm/v2/echo", None).await;
        assert_eq!(proxied.status, 200, "{}", proxied.text());
    }
    let beta_pair = app
        .store
        .get(&beta_shared.id)
        .await
        .expect("read")
        .expect("there");
    assert_ne!(
        beta_pair.tokens.access_token.expose_secret(),
        acme_shared.tokens.access_token.expose_secret()
    );

    // Listing: a tenant its own, an operator every tenant's (across pages).
    let mine = |tenant: &str, names: &[&str]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|n| (tenant.to_owned(), (*n).to_owned()))
            .collect()
    };
    assert_eq!(listed(&other, BETA, 50).await, mine("beta", &["shared"]));
    assert_eq!(
        listed(&other, ACME, 1).await,
        mine("acme", &["only-acme", "shared"])
    );
    let mut everything = mine("acme", &["only-acme", "shared"]);
    everything.extend(mine("beta", &["shared"]));
    assert_eq!(listed(&other, OPERATOR, 1).await, everything);

    // Naming a tenant: an operator may, a tenant's caller only its own.
    let mut named =
        EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/connections/only-acme").by(OPERATOR);
    named.headers.push(("x-rdconn-tenant", "acme"));
    assert_eq!(apigw::send(&other, &named).await.status, 200);
    named.caller = Some(BETA);
    let refused = apigw::send(&other, &named).await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (403, "operator_only")
    );

    // A tenant with connections is not removed; the default tenant's entry is.
    let kept = send(&other, OPERATOR, "DELETE", "/tenants/beta", None).await;
    assert_eq!(
        (kept.status, kept.error_code().as_str()),
        (409, "tenant_has_connections")
    );
    assert_eq!(
        send(&other, BETA, "DELETE", "/connections/shared", None)
            .await
            .status,
        200
    );
    let removed = send(&other, OPERATOR, "DELETE", "/tenants/beta", None).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    let beta_caller = send(&other, BETA, "GET", "/connections", None).await;
    assert_eq!(
        (beta_caller.status, beta_caller.error_code().as_str()),
        (403, "forbidden")
    );

    // With tenants configured, a principal mapped to none is refused.
    let stranger = send(&other, LEGACY, "GET", "/connections", None).await;
    assert_eq!(
        (stranger.status, stranger.error_code().as_str()),
        (403, "forbidden")
    );
}

#[tokio::test]
async fn a_connect_session_cannot_reach_another_tenants_connection() {
    let app = RefreshApp::start().await;
    let ops = instance(&app);
    set_tenant(&api(&ops), "acme", &[ACME]).await;
    set_tenant(&api(&ops), "beta", &[BETA]).await;
    let acme_private = app
        .connect_in(&tenant("acme"), "only-acme", Product::Crm)
        .await;
    let callback = oauth_callback_router(ops.connect_service(), Pages::default());

    let open = |id: &str, reconnect: bool| json!({"connection_id": id, "product": "crm", "reconnect": reconnect});
    let theirs = send(
        &callback,
        BETA,
        "POST",
        "/connect/sessions",
        Some(open("only-acme", true)),
    )
    .await;
    let unknown = send(
        &callback,
        BETA,
        "POST",
        "/connect/sessions",
        Some(open("never-made", true)),
    )
    .await;
    assert_eq!(theirs.status, 404, "{}", theirs.text());
    assert_eq!(
        (theirs.status, theirs.json()),
        (unknown.status, unknown.json())
    );
    // Without reconnect the name is free in beta: the session is beta's own.
    let own = send(
        &callback,
        BETA,
        "POST",
        "/connect/sessions",
        Some(open("only-acme", false)),
    )
    .await;
    assert_eq!(own.status, 201, "{}", own.text());
    assert_eq!(own.json()["tenant"], "beta");
    // Acme's own caller still reconnects it.
    let acme = send(
        &callback,
        ACME,
        "POST",
        "/connect/sessions",
        Some(open("only-acme", true)),
    )
    .await;
    assert_eq!(acme.status, 201, "{}", acme.text());
    // The one-call reconnect likewise: another tenant's id is unknown.
    let theirs = send(
        &callback,
        BETA,
        "POST",
        "/connections/only-acme/reconnect",
        None,
    )
    .await;
    let unknown = send(
        &callback,
        BETA,
        "POST",
        "/connections/never-made/reconnect",
        None,
    )
    .await;
    assert_eq!(theirs.status, 404, "{}", theirs.text());
    assert_eq!(
        (theirs.status, theirs.json()),
        (unknown.status, unknown.json())
    );
    let acme = send(
        &callback,
        ACME,
        "POST",
        "/connections/only-acme/reconnect",
        None,
    )
    .await;
    assert_eq!(acme.status, 201, "{}", acme.text());
    assert_eq!(acme.json()["tenant"], "acme");
    let still = app
        .store
        .get(&acme_private.id)
        .await
        .expect("read")
        .expect("there");
    assert_eq!(still.version, acme_private.version);
}

/// A connection item exactly as the versions before tenants wrote it.
fn pre_tenant_item(connection: &connector::domain::Connection) -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: i64| AttributeValue::N(v.to_string());
    HashMap::from([
        (
            "pk".to_owned(),
            s(&format!("CONN#{}", connection.id.name())),
        ),
        ("sk".to_owned(), s("CONN")),
        ("kind".to_owned(), s("connection")),
        ("connection_id".to_owned(), s(connection.id.name())),
        ("product".to_owned(), s(connection.product.as_str())),
        ("status".to_owned(), s("active")),
        (
            "access_token".to_owned(),
            s(connection.tokens.access_token.expose_secret()),
        ),
        (
            "refresh_token".to_owned(),
            s(connection.tokens.refresh_token.expose_secret()),
        ),
        (
            "access_expires_at".to_owned(),
            n(connection.tokens.access_expires_at.0),
        ),
        (
            "refresh_token_issued_at".to_owned(),
            n(connection.refresh_token_issued_at.0),
        ),
        ("version".to_owned(), n(1)),
        ("created_at".to_owned(), n(connection.created_at.0)),
        ("connected_at".to_owned(), n(connection.connected_at.0)),
        ("updated_at".to_owned(), n(connection.updated_at.0)),
        ("refresh_failures".to_owned(), n(0)),
        ("due_shard".to_owned(), s("DUE#0")),
        (
            "due_at".to_owned(),
            n(connection.tokens.access_expires_at.0 - 600),
        ),
    ])
}

#[tokio::test]
async fn connections_stored_before_tenants_stay_usable_in_the_default_tenant() {
    let app = RefreshApp::start().await;
    // A grant at the sandbox, stored as the previous version stored it.
    let made = app.connect("legacy-1", Product::Crm).await;
    let dynamodb = integration_tests::moto::dynamodb().await;
    dynamodb
        .put_item()
        .table_name(&app.table_name)
        .set_item(Some(pre_tenant_item(&made)))
        .send()
        .await
        .expect("the old item");

    let ops = instance(&app);
    let router = api(&ops);
    // Before any tenant: today's caller reaches it as before.
    let before = send(&router, LEGACY, "GET", "/connections/legacy-1", None).await;
    assert_eq!(before.status, 200, "{}", before.text());
    assert!(
        before.json().get("tenant").is_none(),
        "answers as before tenants"
    );

    // The operator introduces tenants, keeping today's caller in the default one.
    set_tenant(&router, "default", &[LEGACY]).await;
    set_tenant(&router, "acme", &[ACME]).await;
    let other = api(&instance(&app));
    let shown = send(&other, LEGACY, "GET", "/connections/legacy-1", None).await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    let proxied = send(&other, LEGACY, "GET", "/proxy/legacy-1/crm/v2/echo", None).await;
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    assert_eq!(
        listed(&other, LEGACY, 50).await,
        [("default".to_owned(), "legacy-1".to_owned())]
    );
    assert_eq!(
        send(&other, ACME, "GET", "/connections/legacy-1", None)
            .await
            .status,
        404,
        "another tenant does not see it"
    );
    // The refresher still finds it on the due index and refreshes it in place.
    app.advance(86_400);
    let summary = app.run().await;
    assert_eq!(summary.refreshed, 1, "{summary:?}");
    let refreshed = app.stored("legacy-1").await;
    assert!(refreshed.version > 1);
    assert!(app.usable("legacy-1").await);
}
