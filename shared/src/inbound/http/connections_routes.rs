//! The connections API: what a connection's state is, a forced refresh, and
//! delete. Never a token, nor a fingerprint of one.

use axum::Json;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::api_doc::{ActingTenant, ConnectionPath};
use super::api_state::{ApiState, tenant_of_request};
use super::error::{ApiError, ErrorBody};
use super::invocation::FinishBy;
use super::path_param::PathParam;
use super::views::{
    ConnectionPage, ConnectionView, DeletedConnection, RefreshAnswer, RefreshOutcome, RevokedAtRd,
};
use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, Product, TagFilter, Tags, TokenCallError,
};
use crate::ports::{EventKind, ListQuery, ServiceEvent, StoreError};
use crate::services::listing::list_across;
use crate::services::refresh_protocol::{RefreshFailure, RefreshRequest, Refreshed};
use crate::services::tenancy::TENANT_HEADER;

/// The id of a `/connections/{id}` route in the tenant the request acts in,
/// asked about by a caller the policy admits: the caller is checked first, so a
/// refused one learns nothing of ids. Another tenant's connection of the same
/// name is another id: asked for, it is as unknown as any other.
pub struct AdmittedId(ConnectionId);

impl FromRequestParts<ApiState> for AdmittedId {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let tenant = state
            .acting_tenant(&parts.extensions, &parts.headers)
            .await
            .map_err(IntoResponse::into_response)?;
        // `/connections/import` is a literal route that also serves the
        // connection named `import` (see `api_routes`).
        let literal_import = parts
            .extensions
            .get::<MatchedPath>()
            .is_some_and(|m| m.as_str() == "/connections/import");
        let raw = if literal_import {
            "import".to_owned()
        } else {
            PathParam::from_request_parts(parts, state).await?.0
        };
        ConnectionId::parse_in(&tenant, &raw)
            .map(Self)
            .map_err(|e| {
                ApiError::bad_request("invalid_connection_id", e.to_string()).into_response()
            })
    }
}

fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "connection_not_found",
        "no such connection",
    )
    .into_response()
}

fn store_unavailable(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "store failed for a connections request");
    ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").into_response()
}

/// `GET /connections?status&product&cursor&limit`: a page of the connections
/// of the tenant the request acts in, newest cursor in `next_cursor`; an
/// operator naming no tenant pages through every tenant's.
/// `status=needs_reauth|possibly_lost` is a Query on a sparse index (the
/// operators' "which connections need a person?").
#[utoipa::path(
    get,
    operation_id = "list_connections",
    path = "/connections",
    tag = "connections",
    security(("sigv4" = [])),
    params(
        ("status" = Option<ConnectionStatus>, Query, description = "Only connections in this status"),
        ("product" = Option<Product>, Query, description = "Only this product's connections"),
        ("tag" = Option<String>, Query, description = "`key=value`: only connections carrying this tag (repeatable; all must match)"),
        ("dies_within_hours" = Option<u32>, Query, minimum = 1, maximum = 336, description = "Only connections whose refresh token dies within this many hours"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the page before"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Connections a page (50 unless given)"),
        ActingTenant,
    ),
    responses(
        (status = 200, description = "A page of connections", body = ConnectionPage),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn list(State(state): State<ApiState>, request: Request) -> Response {
    let scope = match state.scope(request.extensions()).await {
        Ok(scope) => scope,
        Err(refused) => return refused.into_response(),
    };
    let every_tenant = scope.is_operator() && !request.headers().contains_key(TENANT_HEADER);
    let tenant = match tenant_of_request(&scope, request.headers()) {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    let mut query = ListQuery {
        tenant,
        limit: 50,
        ..ListQuery::default()
    };
    let raw = request.uri().query().unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let bad = |code: &'static str, message: &str| {
            ApiError::bad_request(code, message.to_owned()).into_response()
        };
        match name.as_ref() {
            "status" => match value.parse::<ConnectionStatus>() {
                Ok(status) => query.status = Some(status),
                Err(_) => {
                    return bad(
                        "invalid_status",
                        "status is one of active, needs_reauth, possibly_lost",
                    );
                }
            },
            "product" => match value.parse::<Product>() {
                Ok(product) => query.product = Some(product),
                Err(_) => return bad("invalid_product", "product is marketing or crm"),
            },
            "tag" => match TagFilter::parse(&value) {
                Ok(filter) => query.tags.push(filter),
                Err(e) => {
                    return bad("invalid_tag", &format!("tag is key=value: {e}"));
                }
            },
            "dies_within_hours" => match value.parse::<i64>() {
                Ok(hours @ 1..=336) => {
                    query.dies_by =
                        Some(state.proxy.engine.clock.now().plus_seconds(hours * 3_600));
                }
                _ => {
                    return bad(
                        "invalid_dies_within_hours",
                        "dies_within_hours is a whole number of hours from 1 to 336",
                    );
                }
            },
            "cursor" => query.cursor = Some(value.into_owned()),
            "limit" => match value.parse::<u32>() {
                Ok(n @ 1..=100) => query.limit = n,
                _ => return bad("invalid_limit", "limit is a whole number from 1 to 100"),
            },
            _ => {
                return bad(
                    "invalid_query",
                    "known parameters: status, product, tag, dies_within_hours, cursor, limit",
                );
            }
        }
    }
    let page = if every_tenant {
        match state.tenancy.tenants().await {
            Ok(tenants) => {
                let names = tenants.all_with_default();
                list_across(state.proxy.connections.as_ref(), &names, &query).await
            }
            Err(e) => Err(e),
        }
    } else {
        state.proxy.connections.list(&query).await
    };
    match page {
        Ok(page) => Json(ConnectionPage {
            connections: page.connections.iter().map(ConnectionView::of).collect(),
            next_cursor: page.next_cursor,
        })
        .into_response(),
        Err(StoreError::InvalidCursor) => {
            ApiError::bad_request("invalid_cursor", StoreError::InvalidCursor.to_string())
                .into_response()
        }
        Err(e) => store_unavailable(&e),
    }
}

/// `GET /connections/{id}`.
#[utoipa::path(
    get,
    operation_id = "get_connection",
    path = "/connections/{id}",
    tag = "connections",
    security(("sigv4" = [])),
    params(
        ConnectionPath,
        ActingTenant,
    ),
    responses(
        (status = 200, description = "The connection (never a token)", body = ConnectionView),
        (status = "default", description = "An error; `code` says which (`connection_not_found`: 404)", body = ErrorBody),
    ),
)]
pub async fn show(State(state): State<ApiState>, AdmittedId(id): AdmittedId) -> Response {
    match state.proxy.connections.get(&id).await {
        Ok(Some(c)) => Json(ConnectionView::of(&c)).into_response(),
        Ok(None) => not_found(),
        Err(e) => store_unavailable(&e),
    }
}

/// The settings a caller may change on a connection; a field left out is left
/// as it is.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Changes {
    /// The account's RD request budget a minute (`null`: the deployment's default).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10_000)]
    rate_limit_per_minute: Option<Option<u32>>,
    /// The connection's tags, all of them (`{}` removes them).
    #[serde(default)]
    tags: Option<std::collections::BTreeMap<String, String>>,
}

/// A field that is present, `null` or not: `Some(None)` for `null`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// The highest per-connection budget accepted (RD's Advanced plans allow 500).
const MAX_RATE_LIMIT: u32 = 10_000;

/// `PATCH /connections/{id}` `{"rate_limit_per_minute": N | null}`: the account's
/// request budget (RD allows 120 a minute, 500 on Advanced plans). Each proxy
/// instance applies it when it next reads the connection.
#[utoipa::path(
    patch,
    operation_id = "update_connection",
    path = "/connections/{id}",
    tag = "connections",
    security(("sigv4" = [])),
    params(
        ConnectionPath,
        ActingTenant,
    ),
    request_body = Changes,
    responses(
        (status = 200, description = "The connection with the change", body = ConnectionView),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn update(
    State(state): State<ApiState>,
    AdmittedId(id): AdmittedId,
    request: Request,
) -> Response {
    let Ok(body) = axum::body::to_bytes(request.into_body(), 4_096).await else {
        return ApiError::bad_request("invalid_json", "the body is too large").into_response();
    };
    let changes: Changes = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return ApiError::bad_request(
                "invalid_json",
                format!(
                    "expected {{\"rate_limit_per_minute\": N or null, \"tags\": {{\"key\": \"value\"}}}}: {e}"
                ),
            )
            .into_response();
        }
    };
    if changes.rate_limit_per_minute.is_none() && changes.tags.is_none() {
        return ApiError::bad_request("invalid_json", "send rate_limit_per_minute, tags, or both")
            .into_response();
    }
    let tags = match changes.tags.map(Tags::parse).transpose() {
        Ok(tags) => tags,
        Err(e) => return ApiError::bad_request("invalid_tags", e.to_string()).into_response(),
    };
    if changes
        .rate_limit_per_minute
        .flatten()
        .is_some_and(|n| n == 0 || n > MAX_RATE_LIMIT)
    {
        return ApiError::bad_request(
            "invalid_rate_limit",
            format!("rate_limit_per_minute is from 1 to {MAX_RATE_LIMIT}, or null"),
        )
        .into_response();
    }
    // Each setting alone, without moving the version: a refresh in flight still
    // commits (a whole-item write here used to fence it out).
    let connections = &state.proxy.connections;
    let mut written = Ok(None);
    if let Some(limit) = changes.rate_limit_per_minute {
        written = connections.set_rate_limit(&id, limit).await;
    }
    let limit_written = changes.rate_limit_per_minute.is_none() || matches!(written, Ok(Some(_)));
    if let (Some(tags), true) = (&tags, limit_written) {
        written = connections.set_tags(&id, tags).await;
    }
    match written {
        Ok(Some(stored)) => {
            state
                .proxy
                .tokens
                .put(&stored, state.proxy.engine.clock.now());
            Json(ConnectionView::of(&stored)).into_response()
        }
        Ok(None) => not_found(),
        Err(e) => store_unavailable(&e),
    }
}

/// `POST /connections/{id}/refresh`: a forced refresh through the protocol.
#[utoipa::path(
    post,
    operation_id = "refresh_connection",
    path = "/connections/{id}/refresh",
    tag = "connections",
    security(("sigv4" = [])),
    params(
        ConnectionPath,
        ActingTenant,
    ),
    responses(
        (status = 200, description = "Refreshed (`outcome` says by whom)", body = RefreshAnswer),
        (status = 409, description = "The connection needs a person (`needs_reauth`, `possibly_lost`)", body = RefreshAnswer),
        (status = 502, description = "RD refused the deployment's client credentials", body = RefreshAnswer),
        (status = 503, description = "Not refreshed now; the refresher retries", body = RefreshAnswer),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn refresh(
    State(state): State<ApiState>,
    AdmittedId(id): AdmittedId,
    FinishBy(finish_by_ms): FinishBy,
) -> Response {
    let request = RefreshRequest {
        finish_by_ms,
        ..RefreshRequest::forced()
    };
    let outcome = state.proxy.engine.refresh(&id, request).await;
    let (status, what, connection) = match outcome {
        Ok(r) => {
            let what = match &r {
                Refreshed::Rotated(_) => RefreshOutcome::Refreshed,
                Refreshed::ByOtherWorker(_) | Refreshed::AlreadyFresh(_) => {
                    RefreshOutcome::RefreshedByAnotherWorker
                }
                Refreshed::Restored(_) => RefreshOutcome::RestoredFromRescue,
            };
            state
                .proxy
                .tokens
                .put(r.connection(), state.proxy.engine.clock.now());
            (StatusCode::OK, what, Some(r.connection().clone()))
        }
        Err(RefreshFailure::NotFound) => return not_found(),
        Err(RefreshFailure::NeedsReauth(c)) => {
            (StatusCode::CONFLICT, RefreshOutcome::NeedsReauth, Some(*c))
        }
        Err(RefreshFailure::PossiblyLost(c)) => {
            (StatusCode::CONFLICT, RefreshOutcome::PossiblyLost, Some(*c))
        }
        Err(
            RefreshFailure::BackingOff { .. }
            | RefreshFailure::NotProcessed { .. }
            | RefreshFailure::Ambiguous { .. }
            | RefreshFailure::OutOfTime
            | RefreshFailure::Capped { .. }
            | RefreshFailure::HolderFailed,
        ) => (
            StatusCode::SERVICE_UNAVAILABLE,
            RefreshOutcome::NotRefreshedTryLater,
            None,
        ),
        Err(RefreshFailure::DeploymentCredentialsRejected) => (
            StatusCode::BAD_GATEWAY,
            RefreshOutcome::DeploymentCredentialsRejected,
            None,
        ),
        Err(e @ (RefreshFailure::Credentials(_) | RefreshFailure::Store(_))) => {
            return store_unavailable(&e);
        }
    };
    let connection = match connection {
        Some(c) => Some(c),
        None => state.proxy.connections.get(&id).await.ok().flatten(),
    };
    (
        status,
        Json(RefreshAnswer {
            outcome: what,
            connection: connection.as_ref().map(ConnectionView::of),
        }),
    )
        .into_response()
}

/// `DELETE /connections/{id}`: revoke at RD where RD documents how (Marketing),
/// then delete.
#[utoipa::path(
    delete,
    operation_id = "delete_connection",
    path = "/connections/{id}",
    tag = "connections",
    security(("sigv4" = [])),
    params(
        ConnectionPath,
        ActingTenant,
    ),
    responses(
        (status = 200, description = "Deleted; `revoked_at_rd` says what became of the grant", body = DeletedConnection),
        (status = "default", description = "An error; `code` says which (`revoke_failed`: 502, nothing deleted)", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<ApiState>,
    AdmittedId(id): AdmittedId,
    FinishBy(finish_by_ms): FinishBy,
) -> Response {
    let connection = match state.proxy.connections.get(&id).await {
        Ok(Some(c)) => c,
        Ok(None) => return not_found(),
        Err(e) => return store_unavailable(&e),
    };
    // RD's revoke takes the access token as bearer: an expired one is renewed
    // first (a dead grant needs no revoke).
    let now = state.proxy.engine.clock.now();
    let mut connection = connection;
    let mut dead = connection.status != crate::domain::ConnectionStatus::Active;
    if connection.product == Product::Marketing
        && !dead
        && connection.tokens.access_expires_at <= now
    {
        let request = RefreshRequest {
            finish_by_ms,
            ..RefreshRequest::default()
        };
        match state.proxy.engine.refresh(&id, request).await {
            Ok(r) => connection = r.connection().clone(),
            Err(RefreshFailure::NeedsReauth(_) | RefreshFailure::PossiblyLost(_)) => dead = true,
            Err(_) => {}
        }
    }
    let revoked = match connection.product {
        // CRM v2 documents no revoke endpoint.
        Product::Crm => RevokedAtRd::NotSupported,
        Product::Marketing if dead => RevokedAtRd::AlreadyInvalid,
        Product::Marketing => match state.token_endpoint.revoke(&connection.tokens).await {
            Ok(()) => RevokedAtRd::Revoked,
            // Dead already: nothing left to revoke.
            Err(TokenCallError::InvalidGrant { .. } | TokenCallError::ExpiredCode { .. }) => {
                RevokedAtRd::AlreadyInvalid
            }
            Err(TokenCallError::Other { status: 401, .. }) => RevokedAtRd::AlreadyInvalid,
            Err(e) => {
                tracing::warn!(connection_id = %id, error = %e, "RD did not confirm the revoke");
                return ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "revoke_failed",
                    "RD Station did not confirm the revoke; nothing was deleted, try again",
                )
                .into_response();
            }
        },
    };
    match state.proxy.connections.delete(&id).await {
        Ok(deleted) => {
            state.proxy.tokens.forget(&id);
            if deleted {
                announce_deleted(&state, &connection).await;
            }
            tracing::info!(connection_id = %id, revoked_at_rd = ?revoked, "connection deleted");
            Json(DeletedConnection::of(&id, revoked)).into_response()
        }
        Err(e) => store_unavailable(&e),
    }
}

/// `ConnectionDeleted`, for the integrators' systems (webhooks); a failure to
/// publish is logged, the delete stands.
async fn announce_deleted(state: &ApiState, connection: &Connection) {
    let event = ServiceEvent {
        kind: EventKind::ConnectionDeleted,
        connection_id: Some(connection.id.clone()),
        product: Some(connection.product),
        reason: "deleted".to_owned(),
        tags: connection.tags.clone(),
        dies_at: None,
    };
    if let Err(e) = state.proxy.engine.events.publish(&event).await {
        tracing::warn!(connection_id = %connection.id, error = %e, "ConnectionDeleted was not published");
    }
}
