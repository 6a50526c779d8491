//! RD's consent pages and token endpoints, for both products.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::model::{ExchangeRefusal, Fault, Issued, RefreshRefusal};
use crate::{Presenting, Sandbox, SandboxProduct};

pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/auth/dialog", get(marketing_consent))
        .route("/oauth/authorize", get(crm_consent))
        .route("/consent/decision", post(consent_decision))
        .route("/auth/token", post(marketing_token))
        .route("/oauth2/token", post(crm_token))
        .route("/auth/revoke", post(revoke))
}

#[derive(Deserialize)]
struct ConsentQuery {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    response_type: Option<String>,
}

async fn marketing_consent(
    State(sandbox): State<Sandbox>,
    Query(q): Query<ConsentQuery>,
) -> Response {
    consent_page(&sandbox, SandboxProduct::Marketing, q)
}

async fn crm_consent(State(sandbox): State<Sandbox>, Query(q): Query<ConsentQuery>) -> Response {
    if q.response_type.as_deref() != Some("code") {
        return (StatusCode::BAD_REQUEST, Html("response_type must be code")).into_response();
    }
    consent_page(&sandbox, SandboxProduct::Crm, q)
}

fn consent_page(sandbox: &Sandbox, product: SandboxProduct, q: ConsentQuery) -> Response {
    let (Some(client_id), Some(redirect_uri)) = (q.client_id, q.redirect_uri) else {
        return (
            StatusCode::BAD_REQUEST,
            Html("client_id and redirect_uri are required"),
        )
            .into_response();
    };
    if Url::parse(&redirect_uri).is_err()
        || !sandbox
            .lock()
            .consent_ok(product, &client_id, &redirect_uri)
    {
        return (
            StatusCode::BAD_REQUEST,
            Html("O parâmetro redirect_uri não contém um valor válido (unknown client or redirect_uri)."),
        )
            .into_response();
    }
    let product_name = match product {
        SandboxProduct::Marketing => "marketing",
        SandboxProduct::Crm => "crm",
    };
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>RD Station sandbox: consent</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:4em auto\">\
         <h1>RD Station sandbox</h1><p>The app <b>{client}</b> asks for access to your RD Station {product_name} account.</p>\
         <form method=\"post\" action=\"/consent/decision\">{fields}\
         <button name=\"decision\" value=\"allow\">Allow</button> \
         <button name=\"decision\" value=\"deny\">Deny</button></form></body></html>",
        client = escape(&client_id),
        fields = [
            hidden("product", product_name),
            hidden("client_id", &client_id),
            hidden("redirect_uri", &redirect_uri),
            hidden("state", q.state.as_deref().unwrap_or_default()),
        ]
        .concat(),
    );
    Html(html).into_response()
}

#[derive(Deserialize)]
struct Decision {
    product: SandboxProduct,
    client_id: String,
    redirect_uri: String,
    #[serde(default)]
    state: String,
    decision: String,
}

async fn consent_decision(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let Ok(d) = serde_json::from_value::<Decision>(form_to_json(&body)) else {
        return (StatusCode::BAD_REQUEST, Html("malformed consent form")).into_response();
    };
    let Ok(mut target) = Url::parse(&d.redirect_uri) else {
        return (StatusCode::BAD_REQUEST, Html("malformed redirect_uri")).into_response();
    };
    let mut state = sandbox.lock();
    if !state.consent_ok(d.product, &d.client_id, &d.redirect_uri) {
        return (
            StatusCode::BAD_REQUEST,
            Html("unknown client or redirect_uri"),
        )
            .into_response();
    }
    {
        let mut query = target.query_pairs_mut();
        if d.decision == "allow" {
            query.append_pair(
                "code",
                &state.issue_code(d.product, &d.client_id, &d.redirect_uri),
            );
        } else {
            query
                .append_pair("error", "access_denied")
                .append_pair("error_description", "The user denied access");
        }
        if !d.state.is_empty() {
            query.append_pair("state", &d.state);
        }
    }
    Redirect::to(target.as_str()).into_response()
}

fn form_to_json(body: &[u8]) -> Value {
    let map: serde_json::Map<String, Value> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    Value::Object(map)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Marketing's JSON error: `{"errors":{"error_type","error_message"}}`.
fn marketing_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errors": {"error_type": error_type, "error_message": message}})),
    )
        .into_response()
}

/// RFC 6749's error: `{"error","error_description"}`.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn token_response(issued: Issued) -> Response {
    axum::Json(json!({
        "access_token": issued.access_token,
        "expires_in": issued.expires_in,
        "refresh_token": issued.refresh_token,
    }))
    .into_response()
}

/// A fault that stops the call before processing, as its answer; `None` when the
/// call should go on (no fault, or one that plays after processing).
async fn play_fault_before(
    sandbox: &Sandbox,
    fault: Option<Fault>,
    presenting: &mut Option<Presenting>,
) -> Option<Response> {
    sandbox.note_token_call_received();
    let latency = sandbox.lock().token_latency;
    if !latency.is_zero() {
        // Held (and counted by `wait_until_idle`) while it waits; a client that
        // gives up meanwhile drops this handler with the wait. The presentation
        // guard carries the hold, so that it records the abandoned call before the
        // hold ends.
        let held = sandbox.hold_token_call();
        let _held = match presenting.as_mut() {
            Some(presenting) => {
                presenting.hold(held);
                None
            }
            None => Some(held),
        };
        tokio::time::sleep(latency).await;
        if let Some(presenting) = presenting.as_mut() {
            presenting.release_hold();
        }
    }
    match fault? {
        Fault::ServerError => Some(marketing_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVICE_UNAVAILABLE",
            "Internal server error",
        )),
        Fault::Hang { millis } => {
            // RD keeps holding the request even after the client gave up, so the
            // hold lives in its own task, counted until it ends.
            let held = sandbox.hold_token_call();
            // The token counts as presented for as long as RD holds the call.
            let mut presenting = presenting.take();
            let hold = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                // The hang is the injected fault that explains this call, whether
                // or not the client waited for its end.
                if let Some(presenting) = presenting.as_mut() {
                    presenting.answered();
                }
                drop(held);
                drop(presenting);
            });
            let _ = hold.await;
            Some((StatusCode::GATEWAY_TIMEOUT, "gateway timeout").into_response())
        }
        Fault::RateLimited {
            retry_after_seconds,
        } => {
            let mut response = marketing_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEDDED",
                "API usage limit exceeded",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_seconds.into());
            Some(response)
        }
        Fault::DropAfterProcessing => None,
    }
}

/// Sends the status line and headers, then breaks the connection instead of a body.
fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("sandbox dropped the connection"))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(Deserialize)]
struct MarketingTokenRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    refresh_token: Option<String>,
}

async fn marketing_token(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return marketing_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json",
        );
    }
    let Ok(request) = serde_json::from_slice::<MarketingTokenRequest>(&body) else {
        return marketing_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "Malformed JSON body",
        );
    };
    let (Some(client_id), Some(client_secret)) = (request.client_id, request.client_secret) else {
        return marketing_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "client_id and client_secret are required",
        );
    };
    let fault = sandbox
        .lock()
        .record_token_call(request.refresh_token.as_deref());
    let mut presenting = request.refresh_token.as_deref().map(|t| sandbox.present(t));
    let before = play_fault_before(&sandbox, fault, &mut presenting).await;
    // Past the waits: from here the handler runs to its answer without yielding.
    if let Some(presenting) = presenting.as_mut() {
        presenting.answered();
    }
    if let Some(response) = before {
        return response;
    }
    let product = SandboxProduct::Marketing;
    let mut state = sandbox.lock();
    let response = match (request.code, request.refresh_token) {
        (Some(code), None) => {
            match state.exchange_code(product, &client_id, &client_secret, &code, None) {
                Ok(issued) => token_response(issued),
                Err(ExchangeRefusal::WrongClient) => wrong_marketing_credentials(),
                Err(ExchangeRefusal::ExpiredOrUsed) => marketing_error(
                    StatusCode::UNAUTHORIZED,
                    "EXPIRED_CODE_GRANT",
                    "The authorization code grant has expired.",
                ),
            }
        }
        (None, Some(refresh_token)) => {
            match state.refresh(product, &client_id, &client_secret, &refresh_token) {
                Ok(issued) => token_response(issued),
                Err(RefreshRefusal::WrongClient) => wrong_marketing_credentials(),
                Err(RefreshRefusal::DeadToken) => marketing_error(
                    StatusCode::UNAUTHORIZED,
                    "INVALID_REFRESH_TOKEN",
                    "The provided refresh token is invalid or was revoked.",
                ),
            }
        }
        _ => marketing_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "send exactly one of code or refresh_token",
        ),
    };
    finish(fault, response)
}

fn wrong_marketing_credentials() -> Response {
    marketing_error(
        StatusCode::UNAUTHORIZED,
        "ACCESS_DENIED",
        "Wrong credentials provided.",
    )
}

/// The answer, unless the fault says to drop the connection after processing.
fn finish(fault: Option<Fault>, response: Response) -> Response {
    if fault == Some(Fault::DropAfterProcessing) {
        dropped_connection()
    } else {
        response
    }
}

async fn crm_token(State(sandbox): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str);
    let (Some(client_id), Some(client_secret)) = (field("client_id"), field("client_secret"))
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        );
    };
    let refresh_token = (field("grant_type") == Some("refresh_token"))
        .then(|| field("refresh_token"))
        .flatten();
    let fault = sandbox.lock().record_token_call(refresh_token);
    let mut presenting = refresh_token.map(|t| sandbox.present(t));
    let before = play_fault_before(&sandbox, fault, &mut presenting).await;
    // Past the waits: from here the handler runs to its answer without yielding.
    if let Some(presenting) = presenting.as_mut() {
        presenting.answered();
    }
    if let Some(response) = before {
        return response;
    }
    let product = SandboxProduct::Crm;
    let mut state = sandbox.lock();
    let response = match field("grant_type") {
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri)) = (field("code"), field("redirect_uri")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "code and redirect_uri are required",
                );
            };
            match state.exchange_code(product, client_id, client_secret, code, Some(redirect_uri)) {
                Ok(issued) => token_response(issued),
                Err(ExchangeRefusal::WrongClient) => crm_invalid_client(),
                Err(ExchangeRefusal::ExpiredOrUsed) => (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"errors": [{
                        "error_type": "EXPIRED_CODE_GRANT",
                        "error_message": "The authorization code grant has expired."
                    }]})),
                )
                    .into_response(),
            }
        }
        Some("refresh_token") => {
            let Some(refresh_token) = refresh_token else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            match state.refresh(product, client_id, client_secret, refresh_token) {
                Ok(issued) => token_response(issued),
                Err(RefreshRefusal::WrongClient) => crm_invalid_client(),
                Err(RefreshRefusal::DeadToken) => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "The refresh token is invalid, expired or revoked.",
                ),
            }
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type is not supported",
        ),
    };
    finish(fault, response)
}

fn crm_invalid_client() -> Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Client authentication failed.",
    )
}

async fn revoke(State(sandbox): State<Sandbox>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let Some(token) = form.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    // RFC 7009: unknown tokens are answered like revoked ones.
    sandbox.lock().revoke(token);
    axum::Json(json!({})).into_response()
}
