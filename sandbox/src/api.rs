//! A few protected RD API routes, to exercise bearer tokens of each product.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::model::AccessRefusal;
use crate::{Sandbox, SandboxProduct};

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/platform/contacts", get(marketing_contacts))
        .route("/platform/contacts/{identifier}", get(marketing_contact))
        .route("/marketing/account_info", get(marketing_account_info))
        .route("/crm/v2/contacts", get(crm_contacts))
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// RD's 401 for each refusal; expiry is told only by `WWW-Authenticate`.
fn unauthorized(product: SandboxProduct, refusal: AccessRefusal) -> Response {
    if refusal == AccessRefusal::Missing {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_request", "error_description": "The access token is missing"})),
        )
            .into_response();
    }
    let error = json!({"error_type": "UNAUTHORIZED", "error_message": "Invalid token."});
    let body = match product {
        SandboxProduct::Marketing => json!({ "errors": error }),
        SandboxProduct::Crm => json!({ "errors": [error] }),
    };
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    let challenge = if refusal == AccessRefusal::Expired {
        "Bearer realm=\"https://api.rd.services/\", error=\"expired_token\", error_description=\"The access token expired\""
    } else {
        "Bearer realm=\"https://api.rd.services/\", error=\"invalid_token\", error_description=\"The access token is invalid\""
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

fn guarded(
    sandbox: &Sandbox,
    product: SandboxProduct,
    headers: &HeaderMap,
    ok: serde_json::Value,
) -> Response {
    match sandbox.lock().check_access(product, &bearer(headers)) {
        Ok(()) => axum::Json(ok).into_response(),
        Err(refusal) => unauthorized(product, refusal),
    }
}

async fn marketing_contacts(State(s): State<Sandbox>, headers: HeaderMap) -> Response {
    guarded(
        &s,
        SandboxProduct::Marketing,
        &headers,
        json!({"contacts": [{"uuid": "c0ffee", "name": "Ana", "email": "ana@example.com"}]}),
    )
}

async fn marketing_contact(
    State(s): State<Sandbox>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Response {
    guarded(
        &s,
        SandboxProduct::Marketing,
        &headers,
        json!({"uuid": "c0ffee", "identifier": identifier, "name": "Ana"}),
    )
}

async fn marketing_account_info(State(s): State<Sandbox>, headers: HeaderMap) -> Response {
    guarded(
        &s,
        SandboxProduct::Marketing,
        &headers,
        json!({"name": "Sandbox account"}),
    )
}

async fn crm_contacts(State(s): State<Sandbox>, headers: HeaderMap) -> Response {
    guarded(
        &s,
        SandboxProduct::Crm,
        &headers,
        json!({"data": [{"id": "6512f0", "name": "Ana"}], "links": {"self": "/crm/v2/contacts?page[number]=1"}}),
    )
}
