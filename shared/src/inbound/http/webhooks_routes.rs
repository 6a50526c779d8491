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

use super::api_doc::ActingTenant;
use super::api_state::{ApiState, tenant_of_request};
use super::error::{ApiError, ErrorBody};
use super::path_param::PathParam;
use super::views::{DeletedWebhook, RegisteredWebhook, WebhookList, WebhookView};
use crate::domain::WebhookScope;
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

/// What `POST /webhooks` takes.
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub(super) struct RegisterWebhook {
    /// An https URL whose host is not a private, loopback or link-local address.
    url: String,
}

/// `POST /webhooks` `{"url": "https://…"}` → 201 with the endpoint and its
/// `secret` (shown this once).
#[utoipa::path(
    post,
    operation_id = "register_webhook",
    path = "/webhooks",
    tag = "webhooks",
    security(("sigv4" = [])),
    params(
        ("scope" = Option<String>, Query, description = "`deployment`: the deployment's endpoints (operators only)"),
        ActingTenant,
    ),
    request_body = RegisterWebhook,
    responses(
        (status = 201, description = "Registered; `secret` is shown this once", body = RegisteredWebhook),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<ApiState>,
    ActingScope(scope): ActingScope,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = body
        .ok()
        .filter(|b| b.len() <= 4_096)
        .and_then(|b| serde_json::from_slice::<RegisterWebhook>(&b).ok());
    let Some(RegisterWebhook { url }) = request else {
        return ApiError::bad_request("invalid_json", "expected {\"url\": \"https://…\"}")
            .into_response();
    };
    match state.webhooks.register(&scope, &url).await {
        Ok(added) => (
            StatusCode::CREATED,
            Json(RegisteredWebhook::of(&scope, &added)),
        )
            .into_response(),
        Err(e) => refusal(&e).into_response(),
    }
}

/// `GET /webhooks` → `{"webhooks": [...]}` (no secrets).
#[utoipa::path(
    get,
    operation_id = "list_webhooks",
    path = "/webhooks",
    tag = "webhooks",
    security(("sigv4" = [])),
    params(
        ("scope" = Option<String>, Query, description = "`deployment`: the deployment's endpoints (operators only)"),
        ActingTenant,
    ),
    responses(
        (status = 200, description = "The endpoints (no secrets)", body = WebhookList),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn list(State(state): State<ApiState>, ActingScope(scope): ActingScope) -> Response {
    match state.webhooks.list(&scope).await {
        Ok(endpoints) => Json(WebhookList {
            webhooks: endpoints
                .iter()
                .map(|w| WebhookView::of(&scope, w))
                .collect(),
        })
        .into_response(),
        Err(e) => refusal(&e).into_response(),
    }
}

/// `DELETE /webhooks/{id}`: nothing more is delivered to it.
#[utoipa::path(
    delete,
    operation_id = "delete_webhook",
    path = "/webhooks/{id}",
    tag = "webhooks",
    security(("sigv4" = [])),
    params(
        ("id" = String, Path, description = "The webhook id"),
        ("scope" = Option<String>, Query, description = "`deployment`: one of the deployment's endpoints (operators only)"),
        ActingTenant,
    ),
    responses(
        (status = 200, description = "Removed: nothing more is delivered to it", body = DeletedWebhook),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn remove(
    State(state): State<ApiState>,
    ActingScope(scope): ActingScope,
    PathParam(id): PathParam,
) -> Response {
    match state.webhooks.remove(&scope, &id).await {
        Ok(()) => Json(DeletedWebhook {
            webhook_id: id,
            deleted: true,
        })
        .into_response(),
        Err(e) => refusal(&e).into_response(),
    }
}

/// `POST /webhooks/{id}/rotate-secret` → the endpoint with its new `secret`
/// (shown this once); the old one signs beside it for a day.
#[utoipa::path(
    post,
    operation_id = "rotate_webhook_secret",
    path = "/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    security(("sigv4" = [])),
    params(
        ("id" = String, Path, description = "The webhook id"),
        ("scope" = Option<String>, Query, description = "`deployment`: one of the deployment's endpoints (operators only)"),
        ActingTenant,
    ),
    responses(
        (status = 200, description = "The new secret, shown this once; the old one signs beside it for a day", body = RegisteredWebhook),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    ActingScope(scope): ActingScope,
    PathParam(id): PathParam,
) -> Response {
    match state.webhooks.rotate(&scope, &id).await {
        Ok(rotated) => Json(RegisteredWebhook::of(&scope, &rotated)).into_response(),
        Err(e) => refusal(&e).into_response(),
    }
}
