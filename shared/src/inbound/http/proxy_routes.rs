//! `ANY /proxy/{connection_id}/{path+}`: a caller's request to RD Station's API,
//! sent on with the connection's token.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::api_doc::ActingTenant;
use super::api_state::ApiState;
use super::error::ApiError;
use super::invocation::InvocationDeadline;
use crate::domain::{ConnectionId, PathRefused, PathTemplate, RdPath};
use crate::ports::UpstreamError;
use crate::services::proxy::{ProxyFailure, ProxyRequest};

/// API Gateway's payload limit: larger requests are refused here with JSON.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

fn with_retry_after(error: ApiError, retry_after: Duration) -> Response {
    let mut response = error.into_response();
    if let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Splits `/proxy/{id}/{rest}` as the caller sent it (still percent-encoded).
fn split(raw_path: &str) -> Option<(&str, &str)> {
    raw_path.strip_prefix("/proxy/")?.split_once('/')
}

#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    operation_id = "proxy",
    path = "/proxy/{connection_id}/{path}",
    tag = "proxy",
    security(("sigv4" = [])),
    params(
        ("connection_id" = String, Path, description = "The connection whose token is used"),
        ("path" = String, Path, description = "RD Station's API path (it may hold `/`), with the query passed on"),
        ActingTenant,
    ),
    responses(
        (status = "default", description = "RD Station's answer as RD sent it, or this service's refusal: a JSON error whose `code` says which (429 with `Retry-After` when the account's budget is spent)", content(
            (serde_json::Value = "*/*"),
        )),
    ),
)]
/// The handler, measured: one EMF document per request (see
/// [`crate::metrics::ProxiedRequest`]).
pub async fn proxy(state: State<ApiState>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let response = forward(state, request).await;
    let status = response.status();
    let rd_answered = response.extensions().get::<RdAnswered>().map(|a| a.0);
    let ours = rd_answered.is_none();
    crate::metrics::emit(
        crate::metrics::PROXY_NAMESPACE,
        &crate::metrics::ProxiedRequest {
            latency: started.elapsed(),
            rd_latency: rd_answered,
            throttled_by_us: ours && status == StatusCode::TOO_MANY_REQUESTS,
            throttled_by_rd: !ours && status == StatusCode::TOO_MANY_REQUESTS,
            failed: ours && status.is_server_error(),
        }
        .metrics(),
    );
    response
}

/// On a response (never sent): RD answered it, after this long.
#[derive(Clone, Copy)]
struct RdAnswered(std::time::Duration);

/// The request forwarded to RD (RD's answer, marked [`RdAnswered`]), or our
/// refusal.
async fn forward(State(state): State<ApiState>, request: Request) -> Response {
    let tenant = match state
        .acting_tenant(request.extensions(), request.headers())
        .await
    {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    if matches!(*request.method(), Method::TRACE | Method::CONNECT) {
        // An upstream that reflects a TRACE would hand back the bearer token.
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "TRACE and CONNECT are not sent to RD Station",
        )
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let Some((raw_id, raw_rest)) = split(parts.uri.path()) else {
        return ApiError::bad_request(
            "invalid_path",
            "use /proxy/{connection_id}/{path on RD's API}",
        )
        .into_response();
    };
    let id = match ConnectionId::parse_in(&tenant, raw_id) {
        Ok(id) => id,
        Err(e) => {
            return ApiError::bad_request("invalid_connection_id", e.to_string()).into_response();
        }
    };
    let path = match RdPath::parse(raw_rest, parts.uri.query()) {
        Ok(path) => path,
        Err(PathRefused::OAuthEndpoint) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "oauth_endpoint_refused",
                PathRefused::OAuthEndpoint.to_string(),
            )
            .into_response();
        }
        Err(e @ PathRefused::Unsafe) => {
            return ApiError::bad_request("invalid_path", e.to_string()).into_response();
        }
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request bodies are limited to 10 MB",
        )
        .into_response()
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return too_large();
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return too_large();
    };
    // What the log lines show of the path (formatted only if a line is recorded).
    let template = PathTemplate::of_checked(raw_rest);
    let method = parts.method.clone();
    let outcome = state
        .proxy
        .forward(
            &id,
            ProxyRequest {
                method: parts.method,
                path,
                headers: parts.headers,
                body,
                finish_by_ms: parts
                    .extensions
                    .get::<InvocationDeadline>()
                    .map(|d| d.finish_by_ms()),
            },
        )
        .await;
    let response = match outcome {
        Ok(proxied) => {
            tracing::info!(
                connection_id = %id,
                method = %method,
                path = %template,
                status = proxied.response.status.as_u16(),
                upstream_ms = proxied.upstream.as_millis() as u64,
                retries = proxied.retries,
                refreshed = proxied.refreshed,
                "proxied"
            );
            let mut response = Response::new(Body::from(proxied.response.body));
            *response.status_mut() = proxied.response.status;
            *response.headers_mut() = proxied.response.headers;
            response
                .extensions_mut()
                .insert(RdAnswered(proxied.upstream));
            return response;
        }
        Err(failure) => failure_response(failure),
    };
    tracing::info!(
        connection_id = %id,
        method = %method,
        path = %template,
        status = response.status().as_u16(),
        "proxied request not forwarded"
    );
    response
}

fn failure_response(failure: ProxyFailure) -> Response {
    match failure {
        ProxyFailure::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "connection_not_found",
            "no such connection",
        )
        .into_response(),
        ProxyFailure::NeedsReauth { reason } => ApiError::new(
            StatusCode::CONFLICT,
            "needs_reauth",
            format!("the connection must be connected again by a person ({reason})"),
        )
        .into_response(),
        ProxyFailure::PossiblyLost { reason } => ApiError::new(
            StatusCode::CONFLICT,
            "possibly_lost",
            format!("the connection's refresh token may have been lost ({reason})"),
        )
        .into_response(),
        ProxyFailure::Unavailable { retry_after } => with_retry_after(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                "no usable token for this connection right now; try again later",
            ),
            retry_after,
        ),
        ProxyFailure::RateLimited { retry_after } => with_retry_after(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_budget_exhausted",
                "this connection's requests to RD Station this minute are spent",
            ),
            retry_after,
        ),
        ProxyFailure::Upstream(UpstreamError::AnswerTooLarge { limit_bytes }) => {
            tracing::warn!(limit_bytes, "RD Station's answer is too large to pass back");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "rdstation_answer_too_large",
                format!(
                    "RD Station's answer is larger than the {limit_bytes} bytes the proxy can pass back (a Lambda answer carries at most 6 MB); ask for a smaller page"
                ),
            )
            .into_response()
        }
        ProxyFailure::Upstream(e) => {
            tracing::warn!(error = %e, "RD Station gave no answer");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "rdstation_unavailable",
                "RD Station gave no answer",
            )
            .into_response()
        }
        ProxyFailure::WrongProduct { product } => {
            let (mine, other) = match product {
                crate::domain::Product::Marketing => ("Marketing", "CRM (crm/…)"),
                crate::domain::Product::Crm => ("CRM", "Marketing (platform/…)"),
            };
            ApiError::bad_request(
                "wrong_product",
                format!("this is a {mine} connection; RD Station's {other} API needs a connection of that product"),
            )
            .into_response()
        }
        ProxyFailure::OutOfTime => {
            tracing::warn!("a proxied request ran out of its invocation's time");
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                "the request could not be completed in the time this invocation had left; no token was left half-renewed, try again",
            )
            .into_response()
        }
        ProxyFailure::Store(e) => {
            tracing::error!(error = %e, "store failed for a proxied request");
            ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable").into_response()
        }
    }
}
