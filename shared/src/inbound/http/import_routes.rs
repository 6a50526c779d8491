//! `POST /connections/import`: a connection made from a refresh token another
//! system held. The body is read field by field, so that an error names the
//! field and never quotes a value (a misplaced token must not come back in an
//! error).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::api_doc::ActingTenant;
use super::api_state::ApiState;
use super::error::{ApiError, ErrorBody};
use super::invocation::FinishBy;
use super::views::{ConnectionView, ImportAnswer, ImportOutcome};
use crate::clock::Timestamp;
use crate::domain::{Product, Tags, TenantId};
use crate::secret::{AccessToken, RefreshToken};
use crate::services::import::{ImportError, ImportRequest, Imported};

/// What `POST /connections/import` takes. The system that held the token must
/// stop refreshing it first.
// The handler reads the body field by field (so that no error quotes a value);
// this type only describes it, and a test holds its fields to `FIELDS`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Read by the API description only.
pub(super) struct ImportBody {
    /// The id to store the connection under, unique within the tenant.
    connection_id: String,
    /// The RD Station product.
    product: Product,
    /// The refresh token the previous system held.
    refresh_token: String,
    /// The access token it holds now, if any (with its expiry).
    access_token: Option<String>,
    /// When `access_token` expires (RFC 3339).
    #[schema(format = DateTime)]
    access_token_expires_at: Option<String>,
    /// Labels for the connection.
    tags: Option<std::collections::BTreeMap<String, String>>,
}

/// The largest import body accepted: one connection's fields and tags.
const MAX_IMPORT_BYTES: usize = 16 * 1024;

/// The fields an import body may have.
const FIELDS: [&str; 6] = [
    "connection_id",
    "product",
    "refresh_token",
    "access_token",
    "access_token_expires_at",
    "tags",
];

/// What the answer says about the previous holder of a CRM token.
const CRM_HANDOVER: &str = "the refresh token sent has been spent: only this service holds the connection's working tokens now, and the previous system's copy no longer works";

/// `POST /connections/import` `{"connection_id", "product", "refresh_token",
/// "access_token"?, "access_token_expires_at"?, "tags"?}` → 201 imported, 200
/// already imported with this token, 202 stored with its first refresh to come;
/// 422 `needs_reauth` when RD refuses the token (nothing stored).
#[utoipa::path(
    post,
    operation_id = "import_connection",
    path = "/connections/import",
    tag = "connections",
    security(("sigv4" = [])),
    params(
        ActingTenant,
    ),
    request_body = ImportBody,
    responses(
        (status = 201, description = "Imported: the token works and is now held only here (CRM: spent once, the new pair stored)", body = ImportAnswer),
        (status = 200, description = "This token was imported to this connection before; RD was not called again", body = ImportAnswer),
        (status = 202, description = "Stored; RD could not be reached for its first refresh, which the schedule retries", body = ImportAnswer),
        (status = "default", description = "An error; `code` says which (`needs_reauth`: 422, RD refused the token and nothing was stored)", body = ErrorBody),
    ),
)]
pub async fn import(
    State(state): State<ApiState>,
    extensions: Extensions,
    headers: HeaderMap,
    FinishBy(finish_by_ms): FinishBy,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let tenant = match state.acting_tenant(&extensions, &headers).await {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    let body = match body {
        Ok(body) if body.len() <= MAX_IMPORT_BYTES => body,
        _ => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "an import request is one connection: a small JSON object",
            )
            .into_response();
        }
    };
    let request = match parse(&body, tenant, finish_by_ms) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let product = request.product;
    match state.importer().import(request).await {
        Ok(imported) => answer(&state, imported, product),
        Err(e) => refusal(&e).into_response(),
    }
}

fn answer(state: &ApiState, imported: Imported, product: Product) -> Response {
    let now = state.proxy.engine.clock.now();
    state.proxy.tokens.put(imported.connection(), now);
    let (status, outcome, message) = match &imported {
        Imported::Created(_) => (
            StatusCode::CREATED,
            ImportOutcome::Imported,
            match product {
                Product::Crm => CRM_HANDOVER,
                Product::Marketing => "the refresh token works; the connection is stored",
            },
        ),
        Imported::AlreadyPresent(_) => (
            StatusCode::OK,
            ImportOutcome::AlreadyPresent,
            "this refresh token was imported to this connection before; RD Station was not called again",
        ),
        Imported::RefreshPending(_) => (
            StatusCode::ACCEPTED,
            ImportOutcome::RefreshPending,
            "the connection is stored but RD Station could not be reached to refresh it; the refresh schedule retries, and so does importing the same token again",
        ),
    };
    (
        status,
        Json(ImportAnswer {
            outcome,
            message,
            connection: ConnectionView::of(imported.connection()),
        }),
    )
        .into_response()
}

fn refusal(e: &ImportError) -> ApiError {
    match e {
        ImportError::InvalidConnectionId(e) => {
            ApiError::bad_request("invalid_connection_id", e.to_string())
        }
        ImportError::ConnectionExists(_) => {
            ApiError::new(StatusCode::CONFLICT, "connection_exists", e.to_string())
        }
        ImportError::ProductMismatch { .. } => {
            ApiError::new(StatusCode::CONFLICT, "product_mismatch", e.to_string())
        }
        ImportError::DeletedMeanwhile => {
            ApiError::new(StatusCode::CONFLICT, "deleted_meanwhile", e.to_string())
        }
        ImportError::TokenRefused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "needs_reauth",
            e.to_string(),
        ),
        ImportError::DeploymentCredentialsRejected => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "deployment_credentials_rejected",
            e.to_string(),
        ),
        ImportError::Store(_) | ImportError::RefreshUnavailable(_) => {
            tracing::error!(error = %e, "an import could not be completed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "import_unavailable",
                "the service could not complete the import; send the same request again to finish it",
            )
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_import", message)
}

/// The import request in `body`, or what is wrong with it (never quoting a
/// value).
fn parse(
    body: &[u8],
    tenant: TenantId,
    finish_by_ms: Option<i64>,
) -> Result<ImportRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "the body is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(invalid("the body is a JSON object"));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field {:?}; the fields are {}",
            unknown.chars().take(64).collect::<String>(),
            FIELDS.join(", ")
        )));
    }
    let connection_id = text(&fields, "connection_id")?
        .ok_or_else(|| invalid("connection_id is required"))?
        .to_owned();
    let product = text(&fields, "product")?
        .ok_or_else(|| invalid("product is required"))?
        .parse::<Product>()
        .map_err(|_| ApiError::bad_request("invalid_product", "product is marketing or crm"))?;
    let refresh_token =
        text(&fields, "refresh_token")?.ok_or_else(|| invalid("refresh_token is required"))?;
    let access_token = text(&fields, "access_token")?;
    let expires_at = text(&fields, "access_token_expires_at")?;
    let access = match (access_token, expires_at) {
        (Some(token), Some(at)) => Some((AccessToken::new(token), rfc3339(at)?)),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "access_token and access_token_expires_at come together, or not at all",
            ));
        }
    };
    let tags = match fields.get("tags") {
        None | Some(Value::Null) => Tags::default(),
        Some(Value::Object(map)) => {
            let mut pairs = std::collections::BTreeMap::new();
            for (key, value) in map {
                let Value::String(value) = value else {
                    return Err(ApiError::bad_request(
                        "invalid_tags",
                        "tags is an object of text values",
                    ));
                };
                pairs.insert(key.clone(), value.clone());
            }
            Tags::parse(pairs).map_err(|e| ApiError::bad_request("invalid_tags", e.to_string()))?
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_tags",
                "tags is an object of text values",
            ));
        }
    };
    Ok(ImportRequest {
        tenant,
        connection_id,
        product,
        refresh_token: RefreshToken::new(refresh_token),
        access,
        tags,
        finish_by_ms,
    })
}

/// The non-empty text in field `name`, if present.
fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 8 * 1024 => Ok(Some(s)),
        Some(_) => Err(invalid(format!(
            "{name} is non-empty text of at most 8 KiB"
        ))),
    }
}

fn rfc3339(raw: &str) -> Result<Timestamp, ApiError> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map(|t| Timestamp(t.unix_timestamp()))
        .map_err(|_| {
            invalid("access_token_expires_at is an RFC 3339 time, e.g. 2026-12-04T12:00:00Z")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_described_fields_are_the_accepted_ones() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(ImportBody::schema()).expect("JSON");
        let mut described: Vec<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        described.sort_unstable();
        let mut accepted = FIELDS.to_vec();
        accepted.sort_unstable();
        assert_eq!(described, accepted);
    }

    fn refused(body: &str) -> ApiError {
        match parse(body.as_bytes(), TenantId::default_tenant(), None) {
            Ok(request) => panic!("accepted: {request:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_the_field_and_never_quote_a_value() {
        let secret = "rt-very-secret-value";
        for body in [
            format!(r#"{{"connection_id":"a","product":"crm","refresh_token":7,"x":"{secret}"}}"#),
            format!(
                r#"{{"connection_id":"a","product":"crm","access_token_expires_at":"{secret}","access_token":"{secret}","refresh_token":"{secret}"}}"#
            ),
            format!(r#"{{"connection_id":"a","product":"crm","refresh_token":["{secret}"]}}"#),
            format!(r#"{{"connection_id":"a","product":"{secret}","refresh_token":"{secret}"}}"#),
            format!(
                r#"{{"connection_id":"a","product":"crm","refresh_token":"{secret}","tags":{{"k":["{secret}"]}}}}"#
            ),
            format!(r#"{{"connection_id":"a","product":"crm","refresh_token":"{secret}"#),
            format!(r#"["{secret}"]"#),
        ] {
            let e = refused(&body);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(!e.message.contains(secret), "{}", e.message);
        }
    }

    #[test]
    fn an_access_token_comes_with_its_expiry() {
        let e = refused(
            r#"{"connection_id":"a","product":"crm","refresh_token":"r","access_token":"a"}"#,
        );
        assert_eq!(e.code, "invalid_import");
        assert!(
            e.message.contains("access_token_expires_at"),
            "{}",
            e.message
        );
        let ok = parse(
            br#"{"connection_id":"a","product":"marketing","refresh_token":"r","access_token":"a","access_token_expires_at":"2026-12-04T12:00:00Z","tags":{"plan":"pro"}}"#,
            TenantId::default_tenant(),
            None,
        )
        .expect("valid");
        assert_eq!(ok.access.expect("access").1, Timestamp(1_796_385_600));
        assert_eq!(ok.tags.iter().count(), 1);
    }
}
