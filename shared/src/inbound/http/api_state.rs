//! What the API function's routes share: the proxy (with the refresh protocol
//! and the store behind it), RD's token endpoint (for revokes), and who may call.

use std::sync::Arc;

use axum::http::{Extensions, StatusCode};
use lambda_http::request::RequestContext;

use super::error::ApiError;
use crate::ports::TokenEndpoint;
use crate::services::caller_policy::CallerPolicy;
use crate::services::proxy::ProxyService;

/// The API function's state.
#[derive(Clone)]
pub struct ApiState {
    /// The proxy.
    pub proxy: ProxyService,
    /// RD's OAuth endpoints (revoke on delete).
    pub token_endpoint: Arc<dyn TokenEndpoint>,
    /// Who may call.
    pub caller_policy: CallerPolicy,
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

impl ApiState {
    /// Refuses a caller the policy refuses.
    ///
    /// # Errors
    /// The 403 to answer with.
    pub fn check_caller(&self, request: &Extensions) -> Result<(), ApiError> {
        let caller = iam_caller(request.get::<RequestContext>());
        self.caller_policy
            .check(caller.as_deref())
            .map_err(|refused| {
                tracing::warn!(reason = %refused, "caller refused");
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", refused.to_string())
            })
    }
}

// Only IAM-signed callers reach the API routes, so their pages carry no brand.
impl axum::extract::FromRef<ApiState> for super::pages::Pages {
    fn from_ref(_: &ApiState) -> Self {
        Self::default()
    }
}
