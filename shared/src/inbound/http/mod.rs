//! HTTP routers. Each Lambda serves one with `lambda_http::run`; `make run` serves
//! them with `axum::serve`. Handlers only translate HTTP to the services and back.

mod binding_cookie;
mod connect_routes;
pub mod error;
mod pages;

pub use binding_cookie::COOKIE_NAME as BINDING_COOKIE;

use axum::Router;
use axum::routing::{get, post};

use crate::services::connect::ConnectService;
use error::ApiError;

/// The callback function's routes:
///
/// | method | path | what |
/// |---|---|---|
/// | POST | `/connect/sessions` | open a connect session |
/// | GET | `/connect/{session}` | redirect a person to RD's consent page |
/// | GET | `/oauth/callback` | RD's redirect back: exchange the code, store the connection |
pub fn oauth_callback_router(service: ConnectService) -> Router {
    Router::new()
        .route("/connect/sessions", post(connect_routes::open_session))
        .route(
            "/connect/{session}",
            get(connect_routes::redirect_to_consent),
        )
        .route("/oauth/callback", get(connect_routes::oauth_callback))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(pages::protective_headers))
        .with_state(service)
}
