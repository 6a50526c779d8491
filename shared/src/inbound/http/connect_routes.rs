//! Handlers of the connect flow's routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::api_state::iam_caller;
use super::binding_cookie;
use super::error::ApiError;
use super::pages::{error_response, found, page, private, wants_html};
use super::path_param::PathParam;
use crate::domain::{ConnectSession, Connection, Product};
use crate::services::connect::{
    BeginConsentError, CallbackQuery, CallbackRejected, ConnectFailure, ConnectService,
    OpenSessionError,
};

#[derive(Deserialize)]
struct OpenSessionRequest {
    connection_id: String,
    product: String,
    #[serde(default)]
    return_url: Option<String>,
    #[serde(default)]
    reconnect: bool,
}

/// `POST /connect/sessions`: `{"connection_id","product","return_url"?,
/// "reconnect"?}` → 201 `{"connect_url","expires_at",...}`. The caller must
/// carry an IAM identity (in Lambda); replacing an existing connection takes
/// `"reconnect": true`.
pub async fn open_session(
    State(service): State<ConnectService>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let caller = iam_caller(extensions.get::<RequestContext>());
    if let Err(refused) = service.caller_policy.check(caller.as_deref()) {
        tracing::warn!(reason = %refused, "connect session refused to the caller");
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", refused.to_string())
            .into_response();
    }
    // The body extractor's own refusal is plain text: answer our JSON instead.
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "a connect session request is a small JSON object",
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::bad_request("invalid_request", "the request body could not be read")
                .into_response();
        }
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !is_json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the request body as application/json",
        )
        .into_response();
    }
    let request: OpenSessionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(
                "invalid_json",
                format!("the body is not the expected JSON object: {e}"),
            )
            .into_response();
        }
    };
    let product: Product = match request.product.parse() {
        Ok(p) => p,
        Err(e) => return ApiError::bad_request("invalid_product", e.to_string()).into_response(),
    };
    let base = match public_base(&service, &extensions) {
        Ok(base) => base,
        Err(e) => return e.into_response(),
    };
    match service
        .open_session(
            &request.connection_id,
            product,
            request.return_url.as_deref(),
            request.reconnect,
            &base,
        )
        .await
    {
        Ok((session, connect_url)) => {
            let body = json!({
                "connect_url": connect_url.as_str(),
                "expires_at": session.expires_at.to_rfc3339(),
                "connection_id": session.connection_id,
                "product": session.product,
            });
            private((StatusCode::CREATED, Json(body)).into_response())
        }
        Err(err) => open_session_error(err).into_response(),
    }
}

/// Where this request's browser and RD come back to: the configured base, or
/// the domain API Gateway says the request arrived on.
fn public_base(service: &ConnectService, extensions: &Extensions) -> Result<Url, ApiError> {
    let domain = match extensions.get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(context)) => context.domain_name.as_deref(),
        _ => None,
    };
    service.public_base.resolve(domain).ok_or_else(|| {
        tracing::error!(
            "PUBLIC_BASE_URL is unset and the request carries no API Gateway domain name"
        );
        ApiError::internal(StatusCode::INTERNAL_SERVER_ERROR, "public_base_unknown")
    })
}

fn open_session_error(err: OpenSessionError) -> ApiError {
    match err {
        OpenSessionError::InvalidConnectionId(e) => {
            ApiError::bad_request("invalid_connection_id", e.to_string())
        }
        OpenSessionError::ReturnUrlNotAllowed => ApiError::bad_request(
            "return_url_not_allowed",
            "return_url must be an absolute http(s) URL on an origin listed in ALLOWED_RETURN_ORIGINS",
        ),
        OpenSessionError::ProductMismatch { .. } => {
            ApiError::new(StatusCode::CONFLICT, "product_mismatch", err.to_string())
        }
        OpenSessionError::ConnectionExists(_) => {
            ApiError::new(StatusCode::CONFLICT, "connection_exists", err.to_string())
        }
        OpenSessionError::Store(e) => {
            tracing::error!(error = %e, "could not open a connect session");
            ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
    }
}

/// `GET /connect/{session}`: binds the session to this browser (cookie) and
/// answers 302 to RD's consent page with a fresh, opaque `state`.
pub async fn redirect_to_consent(
    State(service): State<ConnectService>,
    PathParam(session): PathParam,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    let base = match public_base(&service, &extensions) {
        Ok(base) => base,
        Err(e) => return private(error_response(&headers, e)),
    };
    let binding = binding_cookie::from_request(&headers);
    let response = match service.begin_consent(&session, binding, &base).await {
        Ok((consent_url, binding)) => {
            let mut response = found(consent_url.as_str());
            if let Some(cookie) = binding_cookie::set_cookie(&binding, &base) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            response
        }
        Err(BeginConsentError::SessionUnusable) => error_response(
            &headers,
            ApiError::bad_request(
                "invalid_session",
                "this connect link is unknown, expired or already used; ask for a new one",
            ),
        ),
        Err(BeginConsentError::OtherBrowser) => error_response(
            &headers,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "session_in_another_browser",
                "this connect link was opened in another browser; finish there, or ask for a new link",
            ),
        ),
        Err(BeginConsentError::Credentials(e)) => {
            tracing::error!(error = %e, "no client credentials for the consent redirect");
            error_response(
                &headers,
                ApiError::internal(StatusCode::INTERNAL_SERVER_ERROR, "credentials_unavailable"),
            )
        }
        Err(BeginConsentError::Store(e)) => {
            tracing::error!(error = %e, "could not bind a state to the connect session");
            error_response(
                &headers,
                ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            )
        }
    };
    private(response)
}

/// `GET /oauth/callback?code&state` (or `?error&state`): completes the session.
pub async fn oauth_callback(
    State(service): State<ConnectService>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    let Ok(Query(query)) = query else {
        return private(error_response(
            &headers,
            ApiError::bad_request("invalid_request", "the callback query is malformed"),
        ));
    };
    let base = match public_base(&service, &extensions) {
        Ok(base) => base,
        Err(e) => return private(error_response(&headers, e)),
    };
    let binding = binding_cookie::from_request(&headers);
    let response = match service.complete_callback(query, binding, &base).await {
        Err(CallbackRejected::InvalidState) => error_response(
            &headers,
            ApiError::bad_request(
                "invalid_state",
                "this sign-in is unknown, expired, already used or was started in another browser; start the connection again from its link",
            ),
        ),
        Err(CallbackRejected::Store(e)) => {
            tracing::error!(error = %e, "could not check the callback state");
            error_response(
                &headers,
                ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            )
        }
        Ok(outcome) => match outcome.result {
            Ok(connection) => {
                tracing::info!(
                    connection_id = %connection.id,
                    product = %connection.product,
                    version = connection.version,
                    "connection stored"
                );
                connected_response(&headers, &outcome.session, &connection)
            }
            Err(failure) => {
                tracing::warn!(
                    connection_id = %outcome.session.connection_id,
                    product = %outcome.session.product,
                    reason = failure.reason(),
                    error = %failure,
                    "connect flow ended without a connection"
                );
                failed_response(&headers, &outcome.session, &failure)
            }
        },
    };
    private(response)
}

fn return_to(session: &ConnectSession, pairs: &[(&str, &str)]) -> Option<Response> {
    let mut url: Url = session.return_url.clone()?;
    url.query_pairs_mut()
        .extend_pairs(pairs)
        .append_pair("connection_id", session.connection_id.as_str());
    Some(found(url.as_str()))
}

fn connected_response(headers: &HeaderMap, session: &ConnectSession, c: &Connection) -> Response {
    if let Some(redirect) = return_to(session, &[("status", "connected")]) {
        return redirect;
    }
    if wants_html(headers) {
        return page(
            StatusCode::OK,
            "RD Station connected",
            &format!(
                "The RD Station {} account is connected as \"{}\". You can close this page.",
                product_name(c.product),
                c.id
            ),
        );
    }
    let mut response = Json(json!({
        "status": "connected",
        "connection_id": c.id,
        "product": c.product,
        "version": c.version,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn failed_response(
    headers: &HeaderMap,
    session: &ConnectSession,
    failure: &ConnectFailure,
) -> Response {
    let reason = failure.reason();
    if let Some(redirect) = return_to(session, &[("status", "error"), ("reason", reason)]) {
        return redirect;
    }
    let (status, message) = match failure {
        ConnectFailure::ConsentDenied(_) => (
            StatusCode::BAD_REQUEST,
            "Access was not granted on RD Station, so nothing was connected.",
        ),
        ConnectFailure::MissingCode => (
            StatusCode::BAD_REQUEST,
            "RD Station sent no authorization code; start the connection again.",
        ),
        ConnectFailure::CodeRejected(_) => (
            StatusCode::BAD_REQUEST,
            "RD Station says the authorization expired or was already used; start the connection again.",
        ),
        ConnectFailure::ProductMismatch { .. } => (
            StatusCode::CONFLICT,
            "This connection id already belongs to the other RD Station product.",
        ),
        ConnectFailure::ConnectionExists(_) => (
            StatusCode::CONFLICT,
            "This connection already exists and the link was not made to replace it.",
        ),
        ConnectFailure::ClientRejected(_) | ConnectFailure::RdUnavailable(_) => (
            StatusCode::BAD_GATEWAY,
            "RD Station could not complete the connection; try again in a few minutes.",
        ),
        ConnectFailure::Credentials(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "The service is not configured for this RD Station product.",
        ),
        ConnectFailure::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The connection could not be saved; try again in a few minutes.",
        ),
    };
    error_response(headers, ApiError::new(status, reason, message))
}

fn product_name(product: Product) -> &'static str {
    match product {
        Product::Marketing => "Marketing",
        Product::Crm => "CRM",
    }
}
