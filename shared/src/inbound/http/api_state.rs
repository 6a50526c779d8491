//! What the API function's routes share: the proxy (with the refresh protocol
//! and the store behind it), RD's token endpoint (for revokes), and who may call
//! in which tenant.

use std::sync::Arc;

use axum::http::{Extensions, HeaderMap, StatusCode};
use lambda_http::request::RequestContext;

use super::error::ApiError;
use crate::domain::TenantId;
use crate::ports::TokenEndpoint;
use crate::services::caller_policy::CallerRefused;
use crate::services::import::Importer;
use crate::services::proxy::ProxyService;
use crate::services::tenancy::{CallerScope, ScopeRefused, TENANT_HEADER, Tenancy};
use crate::services::webhooks::WebhookService;

/// The API function's state.
#[derive(Clone)]
pub struct ApiState {
    /// The proxy.
    pub proxy: ProxyService,
    /// RD's OAuth endpoints (revoke on delete).
    pub token_endpoint: Arc<dyn TokenEndpoint>,
    /// Who may call, in which tenant.
    pub tenancy: Tenancy,
    /// Webhook endpoints.
    pub webhooks: WebhookService,
}

/// The IAM principal ARN API Gateway's authorizer put in the request context.
pub fn iam_caller(context: Option<&RequestContext>) -> Option<String> {
    match context? {
        RequestContext::ApiGatewayV2(ctx) => {
            ctx.authorizer.as_ref()?.iam.as_ref()?.user_arn.clone()
        }
        _ => None,
    }
}

/// The answer to a caller [`Tenancy::scope`] refused: 503 when the registry
/// could not be read, 403 otherwise.
pub fn refusal(refused: &CallerRefused) -> ApiError {
    tracing::warn!(reason = %refused, "caller refused");
    match refused {
        CallerRefused::RegistryUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tenants_unavailable",
            refused.to_string(),
        ),
        _ => ApiError::new(StatusCode::FORBIDDEN, "forbidden", refused.to_string()),
    }
}

/// The scope of the caller of a request, by the identity in its context.
///
/// # Errors
/// The answer to a refused caller.
pub async fn caller_scope(
    tenancy: &Tenancy,
    request: &Extensions,
) -> Result<CallerScope, ApiError> {
    let caller = iam_caller(request.get::<RequestContext>());
    tenancy
        .scope(caller.as_deref())
        .await
        .map_err(|r| refusal(&r))
}

/// The tenant a request acts in: the caller's own, or the one an operator
/// names in [`TENANT_HEADER`].
///
/// # Errors
/// 403 when a tenant caller names another tenant, 400 for an invalid name.
pub fn tenant_of_request(scope: &CallerScope, headers: &HeaderMap) -> Result<TenantId, ApiError> {
    let named = match headers.get(TENANT_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                "invalid_tenant",
                "the tenant header is not text",
            ));
        }
    };
    scope.acting_in(named).map_err(|refused| match refused {
        ScopeRefused::NotAnOperator => {
            ApiError::new(StatusCode::FORBIDDEN, "operator_only", refused.to_string())
        }
        ScopeRefused::InvalidTenant(e) => ApiError::bad_request("invalid_tenant", e.to_string()),
    })
}

impl ApiState {
    /// The import service, over the proxy's store and refresh protocol.
    pub fn importer(&self) -> Importer {
        Importer {
            connections: self.proxy.connections.clone(),
            engine: self.proxy.engine.clone(),
            clock: self.proxy.engine.clock.clone(),
        }
    }

    /// The scope of a request's caller.
    ///
    /// # Errors
    /// The answer to a refused caller.
    pub async fn scope(&self, request: &Extensions) -> Result<CallerScope, ApiError> {
        caller_scope(&self.tenancy, request).await
    }

    /// The tenant a request acts in (its caller checked first).
    ///
    /// # Errors
    /// The answer to a refused caller or a tenant it may not name.
    pub async fn acting_tenant(
        &self,
        request: &Extensions,
        headers: &HeaderMap,
    ) -> Result<TenantId, ApiError> {
        let scope = self.scope(request).await?;
        tenant_of_request(&scope, headers)
    }
}

// Only IAM-signed callers reach the API routes, so their pages carry no brand.
impl axum::extract::FromRef<ApiState> for super::pages::Pages {
    fn from_ref(_: &ApiState) -> Self {
        Self::default()
    }
}
