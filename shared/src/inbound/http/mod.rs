//! HTTP routers. Each Lambda serves one with `lambda_http::run`; `make run` serves
//! them with `axum::serve`. Handlers only translate HTTP to the services and back.

mod api_state;
mod binding_cookie;
mod connect_routes;
mod connections_routes;
pub mod error;
mod invocation;
mod pages;
mod path_param;
mod proxy_routes;

pub use api_state::ApiState;
pub use binding_cookie::COOKIE_NAME as BINDING_COOKIE;
pub use connections_routes::view as connection_view;
pub use invocation::{ANSWER_MARGIN_MS, FinishBy, InvocationDeadline};
pub use proxy_routes::MAX_BODY_BYTES;

use axum::Router;
use axum::routing::{any, get, post};

use crate::services::connect::ConnectService;
use error::ApiError;

/// The callback function's routes:
///
/// | method | path | what |
/// |---|---|---|
/// | POST | `/connect/sessions` | open a connect session |
/// | GET | `/connect/{session}` | redirect a person to RD's consent page |
/// | GET | `/oauth/callback` | RD's redirect back: exchange the code, store the connection |
pub fn connect_routes(service: ConnectService) -> Router {
    Router::new()
        .route("/connect/sessions", post(connect_routes::open_session))
        .route(
            "/connect/{session}",
            get(connect_routes::redirect_to_consent),
        )
        .route("/oauth/callback", get(connect_routes::oauth_callback))
        .with_state(service)
}

/// The API function's routes (IAM in the template; the handlers check the caller
/// too):
///
/// | method | path | what |
/// |---|---|---|
/// | any | `/proxy/{connection_id}/{path+}` | call RD Station's API with the connection's token |
/// | GET | `/connections` | a page of connections (filters `status`, `product`) |
/// | GET | `/connections/{id}` | the connection's state (never a token) |
/// | PATCH | `/connections/{id}` | the account's request budget a minute |
/// | POST | `/connections/{id}/refresh` | a forced refresh through the protocol |
/// | DELETE | `/connections/{id}` | revoke at RD (Marketing) and delete |
pub fn api_routes(state: ApiState) -> Router {
    Router::new()
        .route("/proxy/{connection_id}/{*path}", any(proxy_routes::proxy))
        .route("/connections", get(connections_routes::list))
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
        .with_state(state)
}

/// Routes made into a service's whole router: JSON 404 and 405 for everything
/// else, `nosniff` on every answer and the strict policy on pages. Merge routes
/// first (a router with a fallback cannot be merged), then finish once.
pub fn finish(routes: Router) -> Router {
    routes
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(pages::protective_headers))
}

/// The callback function's whole router.
pub fn oauth_callback_router(service: ConnectService) -> Router {
    finish(connect_routes(service))
}

/// The API function's whole router.
pub fn api_proxy_router(state: ApiState) -> Router {
    finish(api_routes(state))
}
