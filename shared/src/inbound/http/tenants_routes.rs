//! The tenants API, for operator principals only: which tenants exist and
//! which IAM principals act in each. A change applies on every instance within
//! `TENANT_CACHE_SECONDS`, without a redeploy.

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::api_state::ApiState;
use super::error::{ApiError, ErrorBody};
use super::path_param::PathParam;
use super::views::{RemovedTenant, TenantList, TenantView};
use crate::domain::{PrincipalPattern, TenantId, TenantsError};
use crate::ports::ListQuery;
use crate::services::tenancy::TenancyError;

/// A request from an operator principal: anyone else is refused before
/// anything is read.
pub struct Operator;

impl FromRequestParts<ApiState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let scope = state
            .scope(&parts.extensions)
            .await
            .map_err(IntoResponse::into_response)?;
        if scope.is_operator() {
            Ok(Self)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "operator_only",
                "only an operator principal (OPERATOR_ARNS) manages tenants",
            )
            .into_response())
        }
    }
}

/// The `{tenant}` of a `/tenants/{tenant}` route.
pub struct TenantParam(TenantId);

impl FromRequestParts<ApiState> for TenantParam {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let PathParam(raw) = PathParam::from_request_parts(parts, state).await?;
        TenantId::parse(&raw)
            .map(Self)
            .map_err(|e| ApiError::bad_request("invalid_tenant", e.to_string()).into_response())
    }
}

fn tenant_view(tenant: &TenantId, principals: &[PrincipalPattern]) -> TenantView {
    TenantView {
        tenant: tenant.clone(),
        principals: principals.to_vec(),
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "the tenant registry failed");
    ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").into_response()
}

/// `GET /tenants`: every configured tenant and its principals.
#[utoipa::path(
    get,
    operation_id = "list_tenants",
    path = "/tenants",
    tag = "tenants",
    security(("sigv4" = [])),
    responses(
        (status = 200, description = "Every tenant and its principals", body = TenantList),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn list(State(state): State<ApiState>, _: Operator) -> Response {
    match state.tenancy.tenants().await {
        Ok(tenants) => Json(TenantList {
            tenants: tenants
                .iter()
                .map(|(tenant, principals)| tenant_view(tenant, principals))
                .collect(),
        })
        .into_response(),
        Err(e) => unavailable(&e),
    }
}

/// What `PUT /tenants/{tenant}` takes.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantBody {
    /// IAM principal ARNs (a trailing `*` matches a prefix) that act in it.
    principals: Vec<String>,
}

/// `PUT /tenants/{tenant}` `{"principals": [ARN, ...]}`: adds the tenant or
/// replaces its principals.
#[utoipa::path(
    put,
    operation_id = "put_tenant",
    path = "/tenants/{tenant}",
    tag = "tenants",
    security(("sigv4" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    request_body = TenantBody,
    responses(
        (status = 200, description = "The tenant as stored", body = TenantView),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn put(
    State(state): State<ApiState>,
    _: Operator,
    TenantParam(tenant): TenantParam,
    request: Request,
) -> Response {
    let Ok(body) = axum::body::to_bytes(request.into_body(), 64 * 1024).await else {
        return ApiError::bad_request("invalid_json", "the body is too large").into_response();
    };
    let body: TenantBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return ApiError::bad_request(
                "invalid_json",
                format!("expected {{\"principals\": [\"arn:...\", ...]}}: {e}"),
            )
            .into_response();
        }
    };
    let mut principals = Vec::with_capacity(body.principals.len());
    for raw in &body.principals {
        match PrincipalPattern::parse(raw) {
            Ok(p) => principals.push(p),
            Err(e) => {
                return ApiError::bad_request("invalid_principal", e.to_string()).into_response();
            }
        }
    }
    match state.tenancy.set_tenant(tenant.clone(), principals).await {
        Ok(tenants) => {
            tracing::info!(tenant = %tenant, "tenant set");
            let principals = tenants.principals(&tenant).unwrap_or_default();
            Json(tenant_view(&tenant, principals)).into_response()
        }
        Err(TenancyError::Refused(e @ TenantsError::PrincipalTaken { .. })) => {
            ApiError::new(StatusCode::CONFLICT, "principal_taken", e.to_string()).into_response()
        }
        Err(TenancyError::Refused(e @ TenantsError::TooManyPrincipals)) => {
            ApiError::bad_request("too_many_principals", e.to_string()).into_response()
        }
        Err(e @ TenancyError::Contended) => {
            ApiError::new(StatusCode::CONFLICT, "registry_contended", e.to_string()).into_response()
        }
        Err(TenancyError::Store(e)) => unavailable(&e),
    }
}

/// `DELETE /tenants/{tenant}`: its principals act in no tenant any more. Only
/// a tenant without connections is removed (409 otherwise): every connection
/// stays in a tenant an operator's list and the refresher's counts cover. The
/// default tenant always exists; removing it removes its principals. To
/// stop a tenant's callers and keep its connections, set its principals to none.
#[utoipa::path(
    delete,
    operation_id = "delete_tenant",
    path = "/tenants/{tenant}",
    tag = "tenants",
    security(("sigv4" = [])),
    params(("tenant" = String, Path, description = "The tenant's name")),
    responses(
        (status = 200, description = "Removed", body = RemovedTenant),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<ApiState>,
    _: Operator,
    TenantParam(tenant): TenantParam,
) -> Response {
    let first = ListQuery {
        tenant: tenant.clone(),
        limit: 1,
        ..ListQuery::default()
    };
    // The default tenant always exists: removing it removes its principals only.
    match state.proxy.connections.list(&first).await {
        _ if tenant.is_default() => {}
        Ok(page) if page.connections.is_empty() && page.next_cursor.is_none() => {}
        Ok(_) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "tenant_has_connections",
                "delete the tenant's connections first, or set its principals to none to stop its callers",
            )
            .into_response();
        }
        Err(e) => return unavailable(&e),
    }
    match state.tenancy.remove_tenant(&tenant).await {
        Ok(true) => {
            tracing::info!(tenant = %tenant, "tenant removed");
            Json(RemovedTenant {
                tenant,
                removed: true,
            })
            .into_response()
        }
        Ok(false) => ApiError::new(
            StatusCode::NOT_FOUND,
            "tenant_not_found",
            "no such tenant is configured",
        )
        .into_response(),
        Err(e) => unavailable(&e),
    }
}
