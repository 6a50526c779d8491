//! HTTP routers. Each Lambda serves one with `lambda_http::run`; `make run` serves
//! them with `axum::serve`. Handlers only translate HTTP to the services and back.

mod api_doc;
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
mod views;
mod webhooks_routes;

pub use api_doc::openapi;
pub use api_state::ApiState;
pub use binding_cookie::COOKIE_NAME as BINDING_COOKIE;
pub use connect_routes::ConnectState;
pub use invocation::{ANSWER_MARGIN_MS, FinishBy, InvocationDeadline};
pub use pages::{Brand, BrandError, Language, Notice, Pages, SupportContact, escape};
pub use proxy_routes::MAX_BODY_BYTES;

use axum::Router;
use axum::handler::Handler;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get};

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
/// | GET | `/openapi.json` | the API description (every function's routes) |
pub fn connect_routes(service: ConnectService, pages: Pages) -> Router {
    let routes = Router::new();
    let routes = described::<connect_routes::__path_open_session, _, _, _>(
        routes,
        connect_routes::open_session,
    );
    let routes =
        described::<connect_routes::__path_reconnect, _, _, _>(routes, connect_routes::reconnect);
    let routes = described::<connect_routes::__path_redirect_to_consent, _, _, _>(
        routes,
        connect_routes::redirect_to_consent,
    );
    let routes = described::<connect_routes::__path_connection_result, _, _, _>(
        routes,
        connect_routes::connection_result,
    );
    let routes = described::<connect_routes::__path_oauth_callback, _, _, _>(
        routes,
        connect_routes::oauth_callback,
    );
    let routes = described::<api_doc::__path_openapi_json, _, _, _>(routes, api_doc::openapi_json);
    routes.with_state(ConnectState { service, pages })
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
    use connections_routes as connections;
    use tenants_routes as tenants;
    use webhooks_routes as webhooks;
    let routes = Router::new();
    let routes = described::<proxy_routes::__path_proxy, _, _, _>(routes, proxy_routes::proxy);
    let routes = described::<connections::__path_list, _, _, _>(routes, connections::list);
    let routes = described::<import_routes::__path_import, _, _, _>(routes, import_routes::import);
    // A connection named `import` keeps its routes: the literal path would
    // otherwise answer 405 to them. They are `/connections/{id}`'s, described there.
    let routes = routes.route(
        "/connections/import",
        get(connections::show)
            .patch(connections::update)
            .delete(connections::delete),
    );
    let routes = described::<connections::__path_show, _, _, _>(routes, connections::show);
    let routes = described::<connections::__path_update, _, _, _>(routes, connections::update);
    let routes = described::<connections::__path_delete, _, _, _>(routes, connections::delete);
    let routes = described::<connections::__path_refresh, _, _, _>(routes, connections::refresh);
    let routes = described::<webhooks::__path_list, _, _, _>(routes, webhooks::list);
    let routes = described::<webhooks::__path_register, _, _, _>(routes, webhooks::register);
    let routes = described::<webhooks::__path_remove, _, _, _>(routes, webhooks::remove);
    let routes =
        described::<webhooks::__path_rotate_secret, _, _, _>(routes, webhooks::rotate_secret);
    let routes = described::<tenants::__path_list, _, _, _>(routes, tenants::list);
    let routes = described::<tenants::__path_put, _, _, _>(routes, tenants::put);
    let routes = described::<tenants::__path_delete, _, _, _>(routes, tenants::delete);
    routes.with_state(state)
}

/// `routes` with `handler` at the path and methods its `#[utoipa::path]`
/// attribute (`P`) gives: what a router serves and what the API description
/// says are one list. A path parameter named `path` takes the rest of the path
/// (`{*path}`), as the proxy's does.
fn described<P, H, T, S>(routes: Router<S>, handler: H) -> Router<S>
where
    P: utoipa::Path,
    H: Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    let mut methods = MethodRouter::new();
    for method in P::methods() {
        methods = methods.on(method_filter(&method), handler.clone());
    }
    routes.route(&P::path().replace("{path}", "{*path}"), methods)
}

fn method_filter(method: &utoipa::openapi::HttpMethod) -> MethodFilter {
    use utoipa::openapi::HttpMethod;
    match method {
        HttpMethod::Get => MethodFilter::GET,
        HttpMethod::Post => MethodFilter::POST,
        HttpMethod::Put => MethodFilter::PUT,
        HttpMethod::Delete => MethodFilter::DELETE,
        HttpMethod::Options => MethodFilter::OPTIONS,
        HttpMethod::Head => MethodFilter::HEAD,
        HttpMethod::Patch => MethodFilter::PATCH,
        HttpMethod::Trace => MethodFilter::TRACE,
    }
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
