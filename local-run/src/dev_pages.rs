//! Pages that exist only in the local run, so a person can click through a connect
//! flow in a browser and see what was stored (never the tokens themselves).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use connector::domain::{ConnectionId, Product};
use connector::services::connect::ConnectService;
use serde::Deserialize;
use serde_json::json;

pub fn routes(service: ConnectService) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dev/connect", get(start))
        .route("/dev/connections/{id}", get(show))
        .with_state(service)
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>RD Station connections (local)</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\">\
         <h1>RD Station connections: local run</h1>\
         <p>Connect an account on the RD Station sandbox; the connection is kept in memory.</p>\
         <form action=\"/dev/connect\"><label>Connection id <input name=\"connection_id\" value=\"demo-crm\"></label> \
         <select name=\"product\"><option value=\"crm\">CRM</option><option value=\"marketing\">Marketing</option></select> \
         <button>Connect</button></form>\
         <p>Then see it at <code>/dev/connections/&lt;id&gt;</code>.</p></body></html>",
    )
}

#[derive(Deserialize)]
struct StartQuery {
    connection_id: String,
    product: String,
}

async fn start(State(service): State<ConnectService>, Query(q): Query<StartQuery>) -> Response {
    let Ok(product) = q.product.parse::<Product>() else {
        return (StatusCode::BAD_REQUEST, "product must be crm or marketing").into_response();
    };
    // The local page connects or replaces: reconnecting is what a developer clicking
    // "Connect" twice means.
    // The local run always has a fixed base.
    let Some(base) = service.public_base.resolve(None) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no public base URL").into_response();
    };
    match service
        .open_session(&q.connection_id, product, None, true, &base)
        .await
    {
        Ok((_, connect_url)) => Redirect::to(connect_url.as_str()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn show(State(service): State<ConnectService>, Path(id): Path<String>) -> Response {
    let Ok(id) = ConnectionId::parse(&id) else {
        return (StatusCode::BAD_REQUEST, "invalid connection id").into_response();
    };
    match service.connections.get(&id).await {
        Ok(Some(c)) => axum::Json(json!({
            "connection_id": c.id,
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
