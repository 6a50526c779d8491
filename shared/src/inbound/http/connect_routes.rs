//! Handlers of the connect flow's routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lambda_http::request::RequestContext;
use serde::Deserialize;
use url::Url;

use super::api_doc::ActingTenant;
use super::api_state::{caller_scope, tenant_of_request};
use super::binding_cookie;
use super::error::{ApiError, ErrorBody};
use super::pages::{Notice, Pages, found, private, wants_html};
use super::path_param::PathParam;
use super::views::{Connected, SessionOpened};
use crate::domain::{ConnectSession, Connection, Product, Tags};
use crate::services::connect::{
    BeginConsentError, CallbackQuery, CallbackRejected, ConnectFailure, ConnectService,
    OpenSessionError, SessionRequest, result_url,
};

/// What the connect routes share: the service and the pages.
#[derive(Clone)]
pub struct ConnectState {
    /// The connect flow.
    pub service: ConnectService,
    /// The pages a person sees.
    pub pages: Pages,
}

impl axum::extract::FromRef<ConnectState> for ConnectService {
    fn from_ref(state: &ConnectState) -> Self {
        state.service.clone()
    }
}

impl axum::extract::FromRef<ConnectState> for Pages {
    fn from_ref(state: &ConnectState) -> Self {
        state.pages.clone()
    }
}

/// What `POST /connect/sessions` takes.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct OpenSessionRequest {
    /// The id to store the connection under, unique within the tenant.
    connection_id: String,
    /// The RD Station product.
    #[schema(value_type = Product)]
    product: String,
    /// Where the person's browser goes when the flow ends (`status`, `reason` added).
    #[serde(default)]
    return_url: Option<String>,
    /// Replace the grant of the existing connection of this id.
    #[serde(default)]
    reconnect: bool,
    /// Labels for the connection (at most 50).
    #[serde(default)]
    tags: Option<std::collections::BTreeMap<String, String>>,
}

/// `POST /connect/sessions`: `{"connection_id","product","return_url"?,
/// "reconnect"?}` → 201 `{"connect_url","expires_at",...}`. The caller must
/// carry an IAM identity (in Lambda); replacing an existing connection takes
/// `"reconnect": true`.
#[utoipa::path(
    post,
    operation_id = "open_connect_session",
    path = "/connect/sessions",
    tag = "connect",
    security(("sigv4" = [])),
    params(
        ActingTenant,
    ),
    request_body = OpenSessionRequest,
    responses(
        (status = 201, description = "The session; give `connect_url` to the person who will consent", body = SessionOpened),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn open_session(
    State(service): State<ConnectService>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let tenant = match session_tenant(&service, &extensions, &headers).await {
        Ok(tenant) => tenant,
        Err(refused) => return refused,
    };
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
    let tags = match request.tags.map(Tags::parse).transpose() {
        Ok(tags) => tags,
        Err(e) => return ApiError::bad_request("invalid_tags", e.to_string()).into_response(),
    };
    let base = match public_base(&service, &extensions) {
        Ok(base) => base,
        Err(e) => return e.into_response(),
    };
    match service
        .open_session(
            SessionRequest {
                tenant: &tenant,
                connection_id: &request.connection_id,
                product,
                return_url: request.return_url.as_deref(),
                reconnect: request.reconnect,
                tags,
            },
            &base,
        )
        .await
    {
        Ok((session, connect_url)) => session_opened(&session, &connect_url),
        Err(err) => open_session_error(err).into_response(),
    }
}

/// The tenant a connect session of this request belongs to (the callback
/// stores the connection there), or the refusal of its caller.
async fn session_tenant(
    service: &ConnectService,
    extensions: &Extensions,
    headers: &HeaderMap,
) -> Result<crate::domain::TenantId, Response> {
    caller_scope(&service.tenancy, extensions)
        .await
        .and_then(|scope| tenant_of_request(&scope, headers))
        .map_err(IntoResponse::into_response)
}

/// 201 with what a caller needs of a new connect session.
fn session_opened(session: &ConnectSession, connect_url: &Url) -> Response {
    let body = SessionOpened::new(
        &session.connection_id,
        session.product,
        session.reconnect,
        connect_url,
        session.expires_at.to_rfc3339(),
    );
    private((StatusCode::CREATED, Json(body)).into_response())
}

/// What `POST /connections/{id}/reconnect` may take.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReconnectRequest {
    /// Where the person's browser goes when the flow ends.
    #[serde(default)]
    return_url: Option<String>,
}

/// `POST /connections/{id}/reconnect` (body optional: `{"return_url"?}`) →
/// 201 `{"connect_url","expires_at",...}`: a connect link that replaces the
/// connection's grant in place (same id, product and tags) once a person
/// consents. 404 `connection_not_found` for an id the caller's tenant does not
/// have.
#[utoipa::path(
    post,
    operation_id = "reconnect_connection",
    path = "/connections/{id}/reconnect",
    tag = "connect",
    security(("sigv4" = [])),
    params(
        ("id" = String, Path, description = "The connection whose grant a person replaces"),
        ActingTenant,
    ),
    request_body(content = Option<ReconnectRequest>, description = "Optional"),
    responses(
        (status = 201, description = "A connect link that replaces the grant in place, same id", body = SessionOpened),
        (status = "default", description = "An error; `code` says which", body = ErrorBody),
    ),
)]
pub async fn reconnect(
    State(service): State<ConnectService>,
    PathParam(id): PathParam,
    extensions: Extensions,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let tenant = match session_tenant(&service, &extensions, &headers).await {
        Ok(tenant) => tenant,
        Err(refused) => return refused,
    };
    let Ok(body) = body else {
        return ApiError::bad_request("invalid_request", "the request body could not be read")
            .into_response();
    };
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        ReconnectRequest::default()
    } else {
        match serde_json::from_slice::<ReconnectRequest>(&body) {
            Ok(request) => request,
            Err(e) => {
                return ApiError::bad_request(
                    "invalid_json",
                    format!("the body is not the expected JSON object: {e}"),
                )
                .into_response();
            }
        }
    };
    let base = match public_base(&service, &extensions) {
        Ok(base) => base,
        Err(e) => return e.into_response(),
    };
    match service
        .open_reconnect(&tenant, &id, request.return_url.as_deref(), &base)
        .await
    {
        Ok((session, connect_url)) => session_opened(&session, &connect_url),
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
        OpenSessionError::NothingToReconnect => ApiError::new(
            StatusCode::NOT_FOUND,
            "connection_not_found",
            err.to_string(),
        ),
        OpenSessionError::Store(e) => {
            tracing::error!(error = %e, "could not open a connect session");
            ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
    }
}

/// `GET /connect/{session}`: binds the session to this browser (cookie) and
/// answers 302 to RD's consent page with a fresh, opaque `state`.
#[utoipa::path(
    get,
    operation_id = "redirect_to_consent",
    path = "/connect/{session}",
    tag = "connect",
    params(("session" = String, Path, description = "The session id in `connect_url`")),
    responses(
        (status = 302, description = "To RD Station's consent page; sets the cookie that binds the flow to this browser", headers(("location" = String))),
        (status = "default", description = "An error: JSON (`code` says which) or, to a browser, a page", content(
            (ErrorBody = "application/json"),
            (String = "text/html"),
        )),
    ),
)]
pub async fn redirect_to_consent(
    State(service): State<ConnectService>,
    State(pages): State<Pages>,
    PathParam(session): PathParam,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    let base = match public_base(&service, &extensions) {
        Ok(base) => base,
        Err(e) => return private(pages.error(&headers, e, &Notice::Unavailable)),
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
        Err(BeginConsentError::SessionUnusable) => pages.error(
            &headers,
            ApiError::bad_request(
                "invalid_session",
                "this connect link is unknown, expired or already used; ask for a new one",
            ),
            &Notice::InvalidSession,
        ),
        Err(BeginConsentError::OtherBrowser) => pages.error(
            &headers,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "session_in_another_browser",
                "this connect link was opened in another browser; finish there, or ask for a new link",
            ),
            &Notice::OtherBrowser,
        ),
        Err(BeginConsentError::Credentials(e)) => {
            tracing::error!(error = %e, "no client credentials for the consent redirect");
            pages.error(
                &headers,
                ApiError::internal(StatusCode::INTERNAL_SERVER_ERROR, "credentials_unavailable"),
                &Notice::NotConfigured,
            )
        }
        Err(BeginConsentError::Store(e)) => {
            tracing::error!(error = %e, "could not bind a state to the connect session");
            pages.error(
                &headers,
                ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
                &Notice::Unavailable,
            )
        }
    };
    private(response)
}

/// `GET /oauth/callback?code&state` (or `?error&state`): completes the session.
#[utoipa::path(
    get,
    operation_id = "complete_oauth_callback",
    path = "/oauth/callback",
    tag = "connect",
    params(
        ("code" = Option<String>, Query, description = "RD's authorization code"),
        ("state" = Option<String>, Query, description = "The state sent to RD's consent page"),
        ("error" = Option<String>, Query, description = "RD's refusal, in place of a code"),
    ),
    responses(
        (status = 200, description = "Connected: JSON to a caller that is not a browser", body = Connected),
        (status = 302, description = "To the session's `return_url`, with `status` (and `reason`) in its query", headers(("location" = String))),
        (status = 303, description = "To the result page (`/connect/{session}/done`)", headers(("location" = String))),
        (status = "default", description = "An error: JSON (`code` says which) or, to a browser, a page", content(
            (ErrorBody = "application/json"),
            (String = "text/html"),
        )),
    ),
)]
pub async fn oauth_callback(
    State(service): State<ConnectService>,
    State(pages): State<Pages>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
    extensions: Extensions,
    headers: HeaderMap,
) -> Response {
    let Ok(Query(query)) = query else {
        return private(pages.error(
            &headers,
            ApiError::bad_request("invalid_request", "the callback query is malformed"),
            &Notice::MalformedCallback,
        ));
    };
    let base = match public_base(&service, &extensions) {
        Ok(base) => base,
        Err(e) => return private(pages.error(&headers, e, &Notice::Unavailable)),
    };
    let binding = binding_cookie::from_request(&headers);
    let response = match service.complete_callback(query, binding, &base).await {
        Err(CallbackRejected::InvalidState) => pages.error(
            &headers,
            ApiError::bad_request(
                "invalid_state",
                "the state is unknown, expired, already used or was issued to another browser; start the connection again from its link",
            ),
            &Notice::InvalidState,
        ),
        Err(CallbackRejected::Store(e)) => {
            tracing::error!(error = %e, "could not check the callback state");
            pages.error(
                &headers,
                ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
                &Notice::Unavailable,
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
                connected_response(&headers, &outcome.session, &connection, &base)
            }
            Err(failure) => {
                tracing::warn!(
                    connection_id = %outcome.session.connection_id,
                    product = %outcome.session.product,
                    reason = failure.reason(),
                    error = %failure,
                    "connect flow ended without a connection"
                );
                failed_response(&pages, &headers, &outcome.session, &failure)
            }
        },
    };
    private(response)
}

fn return_to(session: &ConnectSession, pairs: &[(&str, &str)]) -> Option<Response> {
    let mut url: Url = session.return_url.clone()?;
    url.query_pairs_mut()
        .extend_pairs(pairs)
        .append_pair("connection_id", session.connection_id.name());
    Some(found(url.as_str()))
}

/// `GET /connect/{session}/done`: the result of a completed connect flow, for
/// the browser that completed it (its binding cookie), so reloading the page
/// after a success shows the success again.
#[utoipa::path(
    get,
    operation_id = "get_connect_result",
    path = "/connect/{session}/done",
    tag = "connect",
    params(("session" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The completed connection: a page to a browser, JSON to anything else", content(
            (Connected = "application/json"),
            (String = "text/html"),
        )),
        (status = "default", description = "An error: JSON (`code` says which) or, to a browser, a page", content(
            (ErrorBody = "application/json"),
            (String = "text/html"),
        )),
    ),
)]
pub async fn connection_result(
    State(service): State<ConnectService>,
    State(pages): State<Pages>,
    PathParam(session): PathParam,
    headers: HeaderMap,
) -> Response {
    let binding = binding_cookie::from_request(&headers);
    let response = match service.completed_connection(&session, binding).await {
        Ok(Some(connection)) if wants_html(&headers) => pages.notice(
            &headers,
            StatusCode::OK,
            &Notice::Connected {
                product: connection.product,
                connection_id: connection.id,
            },
        ),
        Ok(Some(connection)) => connected_json(&connection),
        Ok(None) => pages.error(
            &headers,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "result_not_shown",
                "a connect flow's result is shown only to the browser that completed it, while its session lasts",
            ),
            &Notice::ResultGone,
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not read a connect flow's result");
            pages.error(
                &headers,
                ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
                &Notice::Unavailable,
            )
        }
    };
    private(response)
}

/// A success sends the person to the operator's app when the session names one;
/// a browser otherwise goes once more to the result page (a URL without the code
/// and state, so a reload shows the success instead of replaying the callback);
/// an API client gets JSON.
fn connected_response(
    headers: &HeaderMap,
    session: &ConnectSession,
    c: &Connection,
    base: &Url,
) -> Response {
    if let Some(redirect) = return_to(session, &[("status", "connected")]) {
        return redirect;
    }
    if wants_html(headers) {
        let mut response = found(result_url(base, &session.id).as_str());
        *response.status_mut() = StatusCode::SEE_OTHER;
        return response;
    }
    connected_json(c)
}

fn connected_json(c: &Connection) -> Response {
    let mut response = Json(Connected::of(c)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn failed_response(
    pages: &Pages,
    headers: &HeaderMap,
    session: &ConnectSession,
    failure: &ConnectFailure,
) -> Response {
    let reason = failure.reason();
    if let Some(redirect) = return_to(session, &[("status", "error"), ("reason", reason)]) {
        return redirect;
    }
    let (status, message, notice) = match failure {
        ConnectFailure::ConsentDenied(_) => (
            StatusCode::BAD_REQUEST,
            "access was not granted on RD Station, so nothing was connected",
            Notice::ConsentDenied,
        ),
        ConnectFailure::MissingCode => (
            StatusCode::BAD_REQUEST,
            "RD Station sent no authorization code; start the connection again",
            Notice::MissingCode,
        ),
        ConnectFailure::CodeRejected(_) => (
            StatusCode::BAD_REQUEST,
            "RD Station says the authorization expired or was already used; start the connection again",
            Notice::CodeRejected,
        ),
        ConnectFailure::ProductMismatch { .. } => (
            StatusCode::CONFLICT,
            "this connection id already belongs to the other RD Station product",
            Notice::ProductMismatch,
        ),
        ConnectFailure::ConnectionExists(_) => (
            StatusCode::CONFLICT,
            "this connection already exists and the session was not opened to replace it",
            Notice::ConnectionExists,
        ),
        ConnectFailure::ClientRejected(_) | ConnectFailure::RdUnavailable(_) => (
            StatusCode::BAD_GATEWAY,
            "RD Station could not complete the connection; try again in a few minutes",
            Notice::RdUnavailable,
        ),
        ConnectFailure::Credentials(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the service is not configured for this RD Station product",
            Notice::NotConfigured,
        ),
        ConnectFailure::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the connection could not be saved; try again in a few minutes",
            Notice::NotSaved,
        ),
    };
    pages.error(headers, ApiError::new(status, reason, message), &notice)
}
