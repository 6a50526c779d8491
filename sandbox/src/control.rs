//! `/_sandbox/*`: the control API tests and people use to steer the sandbox.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::model::Fault;
use crate::{Sandbox, SandboxProduct};

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/clock", post(advance_clock))
        .route("/_sandbox/faults", post(inject_fault))
        .route("/_sandbox/access-token-ttl", post(set_access_ttl))
        .route("/_sandbox/marketing-rolling", post(set_marketing_rolling))
        .route("/_sandbox/grants", post(issue_grant))
}

#[derive(Deserialize)]
struct GrantFor {
    product: SandboxProduct,
}

/// A grant issued directly, as if a person had connected an account in
/// another system moments ago: what an import takes over.
async fn issue_grant(State(sandbox): State<Sandbox>, Json(body): Json<GrantFor>) -> Response {
    let (access_token, refresh_token, expires_in) = sandbox.issue_pair(body.product);
    Json(json!({
        "access_token": access_token,
        "refresh_token": refresh_token,
        "expires_in": expires_in,
    }))
    .into_response()
}

async fn stats(State(sandbox): State<Sandbox>) -> Response {
    let now = sandbox.lock().now();
    Json(json!({ "now": now, "stats": sandbox.stats() })).into_response()
}

#[derive(Deserialize)]
struct Advance {
    advance_seconds: i64,
}

async fn advance_clock(State(sandbox): State<Sandbox>, Json(body): Json<Advance>) -> Response {
    sandbox.advance_clock(body.advance_seconds);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct InjectFault {
    #[serde(flatten)]
    fault: Fault,
    #[serde(default = "one")]
    count: usize,
}

fn one() -> usize {
    1
}

async fn inject_fault(State(sandbox): State<Sandbox>, Json(body): Json<InjectFault>) -> Response {
    sandbox.inject_fault(body.fault, body.count);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct AccessTtl {
    product: SandboxProduct,
    seconds: i64,
}

async fn set_access_ttl(State(sandbox): State<Sandbox>, Json(body): Json<AccessTtl>) -> Response {
    sandbox.set_access_ttl(body.product, body.seconds);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct Rolling {
    rolling: bool,
}

async fn set_marketing_rolling(
    State(sandbox): State<Sandbox>,
    Json(body): Json<Rolling>,
) -> Response {
    sandbox.set_marketing_rolling(body.rolling);
    StatusCode::NO_CONTENT.into_response()
}
