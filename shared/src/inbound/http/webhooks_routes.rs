//! `/webhooks`: the endpoints connection events are delivered to. A caller
//! manages its tenant's; an operator names another tenant with the tenant
//! header, or the deployment's endpoints (every tenant's events and the
//! deployment's own) with `?scope=deployment`. A secret is answered once,
//! when it is made; never listed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api_state::{ApiState, tenant_of_request};
use super::error::ApiError;
use super::path_param::PathParam;
use crate::domain::{Webhook, WebhookScope};
use crate::secret::ExposeSecret;
use crate::services::webhooks::WebhookError;

/// The scope a `/webhooks` request acts on (extractor): the caller's tenant,
/// the tenant an operator names, or with `?scope=deployment` (operators only)
/// the deployment's. The caller is checked before anything else is read.
pub struct ActingScope(WebhookScope);

impl FromRequestParts<ApiState> for ActingScope {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        scope_of(state, parts)
            .await
            .map(Self)
            .map_err(IntoResponse::into_response)
    }
}

async fn scope_of(state: &ApiState, parts: &Parts) -> Result<WebhookScope, ApiError> {
    let caller = state.scope(&parts.extensions).await?;
    let mut deployment = false;
    let query = parts.uri.query().unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match (name.as_ref(), value.as_ref()) {
            ("scope", "deployment") => deployment = true,
            ("scope", "tenant") => {}
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "the one parameter is scope=tenant|deployment",
                ));
            }
        }
    }
    if deployment {
        return if caller.is_operator() {
            Ok(WebhookScope::Deployment)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator_only",
                "only operators manage the deployment's webhooks",
            ))
        };
    }
    tenant_of_request(&caller, &parts.headers).map(WebhookScope::Tenant)
}

/// An endpoint as answered (never its secret).
fn view(scope: &WebhookScope, w: &Webhook) -> Value {
    let mut body = json!({
        "webhook_id": w.id,
        "url": w.url.as_str(),
        "created_at": w.created_at.to_rfc3339(),
        "previous_secret_valid_until": w.previous_secret.as_ref().map(|(_, until)| until.to_rfc3339()),
    });
    if let Some(object) = body.as_object_mut() {
        match scope {
            WebhookScope::Deployment => {
                object.insert("scope".to_owned(), "deployment".into());
            }
            WebhookScope::Tenant(tenant) if !tenant.is_default() => {
                object.insert("tenant".to_owned(), tenant.as_str().into());
            }
            WebhookScope::Tenant(_) => {}
        }
    }
    body
}

/// `view` with the secret: only in the answer that made it.
fn view_with_secret(scope: &WebhookScope, w: &Webhook) -> Value {
    let mut body = view(scope, w);
    body["secret"] = w.secret.expose_secret().into();
    body
}

fn refusal(e: &WebhookError) -> ApiError {
    match e {
        WebhookError::Refused(refused) => ApiError::bad_request("invalid_url", refused.to_string()),
        WebhookError::TooMany => {
            ApiError::new(StatusCode::CONFLICT, "too_many_webhooks", e.to_string())
        }
        WebhookError::NotFound => {
            ApiError::new(StatusCode::NOT_FOUND, "webhook_not_found", e.to_string())
        }
        WebhookError::Busy => ApiError::new(StatusCode::CONFLICT, "busy", e.to_string()),
        WebhookError::Store(store) => {
            tracing::error!(error = %store, "the webhook endpoints could not be read or written");
            ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
    }
}

/// `POST /webhooks` `{"url": "https://…"}` → 201 with the endpoint and its
/// `secret` (shown this once).
pub async fn register(
    State(state): State<ApiState>,
    ActingScope(scope): ActingScope,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let url = body
        .ok()
        .filter(|b| b.len() <= 4_096)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("url").and_then(Value::as_str).map(str::to_owned));
    let Some(url) = url else {
        return ApiError::bad_request("invalid_json", "expected {\"url\": \"https://…\"}")
            .into_response();
    };
    match state.webhooks.register(&scope, &url).await {
        Ok(added) => (StatusCode::CREATED, Json(view_with_secret(&scope, &added))).into_response(),
        Err(e) => refusal(&e).into_response(),
    }
}

/// `GET /webhooks` → `{"webhooks": [...]}` (no secrets).
pub async fn list(State(state): State<ApiState>, ActingScope(scope): ActingScope) -> Response {
    match state.webhooks.list(&scope).await {
        Ok(endpoints) => Json(json!({
            "webhooks": endpoints.iter().map(|w| view(&scope, w)).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => refusal(&e).into_response(),
    }
}

/// `DELETE /webhooks/{id}`: nothing more is delivered to it.
pub async fn remove(
    State(state): State<ApiState>,
    ActingScope(scope): ActingScope,
    PathParam(id): PathParam,
) -> Response {
    match state.webhooks.remove(&scope, &id).await {
        Ok(()) => Json(json!({"webhook_id": id, "deleted": true})).into_response(),
        Err(e) => refusal(&e).into_response(),
    }
}

/// `POST /webhooks/{id}/rotate-secret` → the endpoint with its new `secret`
/// (shown this once); the old one signs beside it for a day.
pub async fn rotate_secret(
    State(state): State<ApiState>,
    ActingScope(scope): ActingScope,
    PathParam(id): PathParam,
) -> Response {
    match state.webhooks.rotate(&scope, &id).await {
        Ok(rotated) => Json(view_with_secret(&scope, &rotated)).into_response(),
        Err(e) => refusal(&e).into_response(),
    }
}
