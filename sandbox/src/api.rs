//! A few protected RD API routes, to exercise bearer tokens of each product.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::json;

use crate::model::AccessRefusal;
use crate::{Sandbox, SandboxProduct};

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/platform/contacts", get(marketing_contacts))
        .route("/platform/contacts/{identifier}", get(marketing_contact))
        .route("/marketing/account_info", get(marketing_account_info))
        .route("/crm/v2/contacts", get(crm_contacts))
        .route("/platform/echo", any(marketing_echo))
        .route("/crm/v2/echo", any(crm_echo))
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

/// RD's 401 for each refusal (expiry is told only by `WWW-Authenticate`), or an
/// injected fault's answer.
fn unauthorized(product: SandboxProduct, refusal: AccessRefusal) -> Response {
    if let AccessRefusal::Fault(status, retry_after) = refusal {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut response = (
            status,
            axum::Json(json!({"errors": {"error_type": "FAULT", "error_message": "injected"}})),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return response;
    }
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

/// Counts an API call and checks its bearer token.
fn admit(
    sandbox: &Sandbox,
    product: SandboxProduct,
    headers: &HeaderMap,
) -> Result<(), AccessRefusal> {
    let mut state = sandbox.lock();
    state.stats.api_calls += 1;
    state.last_api_bearer = Some(bearer(headers));
    if let Some((status, retry_after)) = state.api_faults.pop_front() {
        return Err(AccessRefusal::Fault(status, retry_after));
    }
    let checked = state.check_access(product, &bearer(headers));
    if checked.is_err() {
        state.stats.api_unauthorized += 1;
    }
    checked
}

fn guarded(
    sandbox: &Sandbox,
    product: SandboxProduct,
    headers: &HeaderMap,
    ok: serde_json::Value,
) -> Response {
    match admit(sandbox, product, headers) {
        Ok(()) => axum::Json(ok).into_response(),
        Err(refusal) => unauthorized(product, refusal),
    }
}

/// Echoes a request back (for proxies' round-trip tests): the body as it came,
/// with its content type; the method, query and a few request headers in `x-echo-*`
/// headers; `?status=N` picks the status and `?retry_after=S` adds `Retry-After`.
fn echo(
    sandbox: &Sandbox,
    product: SandboxProduct,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = admit(sandbox, product, &headers) {
        return unauthorized(product, refusal);
    }
    let query = uri.query().unwrap_or_default().to_owned();
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let status = param("status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        out.insert(header::CONTENT_TYPE, ct.clone());
    }
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.insert(name, v);
        }
    };
    put("x-echo-method", method.as_str());
    put("x-echo-query", &query);
    for (name, echoed) in [
        ("x-custom", "x-echo-custom"),
        ("cookie", "x-echo-cookie"),
        ("x-forwarded-for", "x-echo-forwarded-for"),
        ("idempotency-key", "x-echo-idempotency-key"),
        ("proxy-connection", "x-echo-proxy-connection"),
    ] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            put(echoed, v);
        }
    }
    put("x-rd-request-id", "sandbox-request");
    put("set-cookie", "rd_session=should-not-pass; Path=/");
    if let Some(seconds) = param("retry_after") {
        put("retry-after", &seconds);
    }
    response
}

async fn marketing_echo(
    State(s): State<Sandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    echo(&s, SandboxProduct::Marketing, method, uri, headers, body)
}

async fn crm_echo(
    State(s): State<Sandbox>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    echo(&s, SandboxProduct::Crm, method, uri, headers, body)
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
