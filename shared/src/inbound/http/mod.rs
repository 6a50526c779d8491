//! HTTP routers. Each Lambda serves one with `lambda_http::run`; `make run` serves
//! them with `axum::serve`. Handlers only translate HTTP to the services and back.

mod api_state;
mod binding_cookie;
mod connect_routes;
mod connections_routes;
pub mod error;
mod import_routes;
mod invocation;
mod pages;
mod path_param;
mod proxy_routes;
mod tenants_routes;
mod webhooks_routes;

pub use api_state::ApiState;
pub use binding_cookie::COOKIE_NAME as BINDING_COOKIE;
pub use connect_routes::ConnectState;
pub use connections_routes::view as connection_view;
pub use invocation::{ANSWER_MARGIN_MS, FinishBy, InvocationDeadline};
pub use pages::{Brand, BrandError, Language, Notice, Pages, SupportContact, escape};
pub use proxy_routes::MAX_BODY_BYTES;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::domain::ConnectionId;
use crate::services::connect::ConnectService;
use error::ApiError;

/// The callback function's routes:
///
/// | method | path | what |
/// |---|---|---|
/// | POST | `/connect/sessions` | open a connect session |
/// | GET | `/connect/{session}` | redirect a person to RD's consent page |
/// | GET | `/oauth/callback` | RD's redirect back: exchange the code, store the connection |
/// | GET | `/connect/{session}/done` | the result, for the browser that completed the flow |
/// | POST | `/connections/{id}/reconnect` | a connect session that replaces the connection's grant |
pub fn connect_routes(service: ConnectService, pages: Pages) -> Router {
    Router::new()
        .route("/connect/sessions", post(connect_routes::open_session))
        .route(
            "/connections/{id}/reconnect",
            post(connect_routes::reconnect),
        )
        .route(
            "/connect/{session}",
            get(connect_routes::redirect_to_consent),
        )
        .route(
            "/connect/{session}/done",
            get(connect_routes::connection_result),
        )
        .route("/oauth/callback", get(connect_routes::oauth_callback))
        .with_state(ConnectState { service, pages })
}

/// The API function's routes (IAM in the template; the handlers check the caller
/// too):
///
/// | method | path | what |
/// |---|---|---|
/// | any | `/proxy/{connection_id}/{path+}` | call RD Station's API with the connection's token |
/// | GET | `/connections` | a page of connections (filters `status`, `product`) |
/// | POST | `/connections/import` | a connection from a refresh token another system held |
/// | GET | `/connections/{id}` | the connection's state (never a token) |
/// | PATCH | `/connections/{id}` | the account's request budget a minute |
/// | POST | `/connections/{id}/refresh` | a forced refresh through the protocol |
/// | DELETE | `/connections/{id}` | revoke at RD (Marketing) and delete |
/// | GET | `/webhooks` | the endpoints connection events are delivered to (`?scope=deployment`: the deployment's) |
/// | POST | `/webhooks` | register an endpoint; its secret is answered this once |
/// | DELETE | `/webhooks/{id}` | remove an endpoint |
/// | POST | `/webhooks/{id}/rotate-secret` | a new secret (the old one signs beside it for a day) |
/// | GET | `/tenants` | the tenants and their principals (operators only) |
/// | PUT | `/tenants/{tenant}` | add a tenant or replace its principals (operators only) |
/// | DELETE | `/tenants/{tenant}` | remove a tenant (operators only) |
///
/// Every connection route acts in the caller's tenant; an operator names
/// another with the `x-rdconn-tenant` header.
pub fn api_routes(state: ApiState) -> Router {
    Router::new()
        .route("/proxy/{connection_id}/{*path}", any(proxy_routes::proxy))
        .route("/connections", get(connections_routes::list))
        // A connection named `import` keeps its routes: the literal path
        // would otherwise answer 405 to them.
        .route(
            "/connections/import",
            post(import_routes::import)
                .get(connections_routes::show)
                .patch(connections_routes::update)
                .delete(connections_routes::delete),
        )
        .route(
            "/connections/{id}",
            get(connections_routes::show)
                .patch(connections_routes::update)
                .delete(connections_routes::delete),
        )
        .route(
            "/connections/{id}/refresh",
            post(connections_routes::refresh),
        )
        .route(
            "/webhooks",
            get(webhooks_routes::list).post(webhooks_routes::register),
        )
        .route(
            "/webhooks/{id}",
            axum::routing::delete(webhooks_routes::remove),
        )
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks_routes::rotate_secret),
        )
        .route("/tenants", get(tenants_routes::list))
        .route(
            "/tenants/{tenant}",
            axum::routing::put(tenants_routes::put).delete(tenants_routes::delete),
        )
        .with_state(state)
}

/// Routes made into a service's whole router: for every other path a page to a
/// browser and JSON 404 to anything else, 204 for `/favicon.ico` (browsers ask for
/// it on every page, and do not say they want a page), JSON 405 for a known path
/// with another method, `nosniff` on every answer and a strict policy on pages.
/// Merge routes first (a router with a fallback cannot be merged), then finish
/// once.
pub fn finish(routes: Router, pages: Pages) -> Router {
    routes
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(move |headers: HeaderMap| async move { not_found(&pages, &headers) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(pages::protective_headers))
}

/// `body` (a JSON object about the connection `id`) with `"tenant"` when the
/// connection is not the default tenant's (see [`ConnectionId::named_tenant`]).
pub(crate) fn with_tenant(mut body: serde_json::Value, id: &ConnectionId) -> serde_json::Value {
    if let (Some(object), Some(tenant)) = (body.as_object_mut(), id.named_tenant()) {
        object.insert("tenant".to_owned(), tenant.as_str().into());
    }
    body
}

fn not_found(pages: &Pages, headers: &HeaderMap) -> Response {
    if pages::wants_html(headers) {
        pages.notice(headers, StatusCode::NOT_FOUND, &Notice::NotFound)
    } else {
        ApiError::not_found().into_response()
    }
}

/// The callback function's whole router. Its API routes also take every path no
/// other route serves (a person's mistyped link), so its pages answer them.
pub fn oauth_callback_router(service: ConnectService, pages: Pages) -> Router {
    finish(connect_routes(service, pages.clone()), pages)
}

/// The API function's whole router. Only IAM-signed callers reach it, so its
/// pages (for a path no route serves) carry no brand.
pub fn api_proxy_router(state: ApiState) -> Router {
    finish(api_routes(state), Pages::default())
}
