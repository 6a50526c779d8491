//! Pages that exist only in the local run, so a person can click through a connect
//! flow in a browser and see what was stored (never the tokens themselves).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use connector::domain::{ConnectionId, Product, TenantId};
use connector::inbound::http::{Language, Pages, escape};
use connector::services::connect::{ConnectService, SessionRequest};
use serde::Deserialize;
use serde_json::json;

/// What the local pages need.
#[derive(Clone)]
struct Local {
    service: ConnectService,
    pages: Pages,
    /// Origins the start page's form may lead to: the run's own, then RD's
    /// consent pages (the policy's `form-action` covers the redirects too).
    consent_origins: Vec<String>,
}

/// The local run's own routes: `/` (a start page), `/dev/connect` (what its form
/// sends) and `/dev/connections/{id}` (what was stored).
pub fn routes(service: ConnectService, pages: Pages, consent_origins: Vec<String>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dev/connect", get(start))
        .route("/dev/connections/{id}", get(show))
        .with_state(Local {
            service,
            pages,
            consent_origins,
        })
}

async fn index(State(local): State<Local>, headers: HeaderMap) -> Response {
    let language = Language::of(&headers);
    let (title, intro, id_label, product_label, connect, then) = match language {
        Language::Portuguese => (
            "Conexões do RD Station: execução local",
            "Conecte uma conta no sandbox do RD Station. A conexão fica guardada em memória.",
            "Id da conexão",
            "Produto",
            "Conectar",
            "Depois, veja o que foi guardado em",
        ),
        Language::English => (
            "RD Station connections: local run",
            "Connect an account on the RD Station sandbox. The connection is kept in memory.",
            "Connection id",
            "Product",
            "Connect",
            "Then see what was stored at",
        ),
    };
    let body = format!(
        "<p>{intro}</p>\
         <form action=\"/dev/connect\" method=\"get\">\
         <label>{id_label} <input name=\"connection_id\" value=\"demo-crm\" required></label>\
         <label>{product_label} <select name=\"product\">\
         <option value=\"crm\">RD Station CRM</option>\
         <option value=\"marketing\">RD Station Marketing</option></select></label>\
         <button type=\"submit\">{connect}</button></form>\
         <p>{then} <code>/dev/connections/&lt;id&gt;</code>.</p>",
        intro = escape(intro),
        then = escape(then),
    );
    local.pages.document(
        language,
        StatusCode::OK,
        title,
        &body,
        &local.consent_origins,
    )
}

#[derive(Deserialize)]
struct StartQuery {
    connection_id: String,
    product: String,
}

async fn start(State(local): State<Local>, Query(q): Query<StartQuery>) -> Response {
    let Ok(product) = q.product.parse::<Product>() else {
        return (StatusCode::BAD_REQUEST, "product must be crm or marketing").into_response();
    };
    // The local page connects or replaces: reconnecting is what a developer clicking
    // "Connect" twice means.
    // The local run always has a fixed base.
    let Some(base) = local.service.public_base.resolve(None) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no public base URL").into_response();
    };
    let tenant = TenantId::default_tenant();
    let exists = match ConnectionId::parse_in(&tenant, &q.connection_id) {
        Ok(id) => matches!(local.service.connections.get(&id).await, Ok(Some(_))),
        Err(_) => false,
    };
    match local
        .service
        .open_session(
            SessionRequest {
                tenant: &tenant,
                connection_id: &q.connection_id,
                product,
                return_url: None,
                reconnect: exists,
                tags: None,
            },
            &base,
        )
        .await
    {
        Ok((_, connect_url)) => Redirect::to(connect_url.as_str()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn show(State(local): State<Local>, Path(id): Path<String>) -> Response {
    let Ok(id) = ConnectionId::in_default_tenant(&id) else {
        return (StatusCode::BAD_REQUEST, "invalid connection id").into_response();
    };
    match local.service.connections.get(&id).await {
        Ok(Some(c)) => axum::Json(json!({
            "connection_id": c.id.name(),
            "product": c.product,
            "status": c.status,
            "status_reason": c.status_reason,
            "version": c.version,
            "refresh_failures": c.backoff.failures,
            "access_token_expires_at": c.tokens.access_expires_at.to_rfc3339(),
            "access_token_fingerprint": c.tokens.access_token.fingerprint(),
            "refresh_token_fingerprint": c.tokens.refresh_token.fingerprint(),
            "connected_at": c.connected_at.to_rfc3339(),
        }))
        .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such connection").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
