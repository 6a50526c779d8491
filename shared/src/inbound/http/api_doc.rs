//! The API description: an OpenAPI 3.1 document generated from the handlers'
//! `#[utoipa::path]` attributes and the types they answer with (`views`), served
//! at `GET /openapi.json`. `make test` holds it against the template's routes
//! and every answer the suite receives against its schema.

use std::borrow::Cow;
use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{RefOr, Server};
use utoipa::{IntoParams, Modify, OpenApi, PartialSchema, ToSchema};

use super::{connect_routes, connections_routes, import_routes, proxy_routes};
use super::{tenants_routes, webhooks_routes};
use crate::domain::{ConnectionStatus, Product};

/// The name of the SigV4 security scheme the IAM-authorized routes carry.
pub(crate) const SIGV4: &str = "sigv4";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RD Station connections",
        description = "Connect RD Station Marketing and CRM accounts once, then call RD Station's API through this service without holding a token. Routes marked sigv4 take AWS Signature Version 4 (service `execute-api`) from an IAM principal of the caller's tenant.",
    ),
    paths(
        connect_routes::open_session,
        connect_routes::reconnect,
        connect_routes::redirect_to_consent,
        connect_routes::connection_result,
        connect_routes::oauth_callback,
        connections_routes::list,
        connections_routes::show,
        connections_routes::update,
        connections_routes::refresh,
        connections_routes::delete,
        import_routes::import,
        proxy_routes::proxy,
        webhooks_routes::list,
        webhooks_routes::register,
        webhooks_routes::remove,
        webhooks_routes::rotate_secret,
        tenants_routes::list,
        tenants_routes::put,
        tenants_routes::delete,
        openapi_json,
    ),
    modifiers(&Sigv4),
    tags(
        (name = "connect", description = "A person connects an RD Station account"),
        (name = "connections", description = "The connections of the caller's tenant"),
        (name = "proxy", description = "RD Station's API with the connection's token"),
        (name = "webhooks", description = "Where connection events are delivered"),
        (name = "tenants", description = "Who acts in which tenant (operators only)"),
        (name = "meta", description = "This description"),
    ),
)]
struct ApiDoc;

/// The header an operator names the tenant to act in with.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Read by the API description only.
pub(super) struct ActingTenant {
    /// Operators: the tenant to act in (without it, the default tenant; for
    /// `GET /connections`, every tenant). Other callers act in their own.
    #[param(rename = "x-rdconn-tenant")]
    tenant: Option<String>,
}

/// A connection named in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the API description only.
pub(super) struct ConnectionPath {
    /// The connection id, unique within its tenant.
    id: String,
}

/// Adds the SigV4 scheme the `security` of each IAM route names.
struct Sigv4;

impl Modify for Sigv4 {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut key = ApiKeyValue::new("Authorization");
        key.description = Some(
            "AWS Signature Version 4 for `execute-api` (with `X-Amz-Date`, and \
             `X-Amz-Security-Token` for temporary credentials); API Gateway checks it"
                .to_owned(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(SIGV4, SecurityScheme::ApiKey(ApiKey::Header(key)));
    }
}

/// The API description, with `server` as its one server when given.
pub fn openapi(server: Option<&str>) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    name_each_method(&mut doc);
    if let Some(server) = server {
        doc.servers = Some(vec![Server::new(server)]);
    }
    doc
}

/// Gives each method of an operation served on several (the proxy) an
/// operation id of its own, as OpenAPI requires: `proxy` becomes `proxy_get`,
/// `proxy_post`, ...
fn name_each_method(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let mut operations = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("options", &mut item.options),
            ("head", &mut item.head),
            ("patch", &mut item.patch),
            ("trace", &mut item.trace),
        ];
        let ids: Vec<Option<String>> = operations
            .iter()
            .map(|(_, op)| op.as_ref().and_then(|op| op.operation_id.clone()))
            .collect();
        for (method, operation) in &mut operations {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            if ids
                .iter()
                .filter(|other| other.as_deref() == Some(&id))
                .count()
                > 1
            {
                operation.operation_id = Some(format!("{id}_{method}"));
            }
        }
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    openapi(None)
        .to_json()
        .unwrap_or_else(|_| r#"{"openapi":"3.1.0"}"#.to_owned())
});

/// `GET /openapi.json`: this API's description.
#[utoipa::path(
    get,
    operation_id = "get_api_description",
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
pub(crate) async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// A string schema with exactly `values`, described by `description`.
fn string_enum(values: impl IntoIterator<Item = &'static str>, description: &str) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values))
            .description(Some(description))
            .build(),
    )
}

impl PartialSchema for Product {
    fn schema() -> RefOr<Schema> {
        RefOr::T(string_enum(
            Product::ALL.map(Product::as_str),
            "The RD Station product",
        ))
    }
}

impl ToSchema for Product {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Product")
    }
}

impl PartialSchema for ConnectionStatus {
    fn schema() -> RefOr<Schema> {
        RefOr::T(string_enum(
            ConnectionStatus::ALL.map(ConnectionStatus::as_str),
            "active; needs_reauth (a person must connect again); possibly_lost (RD may have rotated the token without it being kept)",
        ))
    }
}

impl ToSchema for ConnectionStatus {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ConnectionStatus")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_sigv4_scheme() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["components"]["securitySchemes"][SIGV4]["in"], "header");
        let parameters: Vec<(&str, &str)> = doc["paths"]["/connections/{id}"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or(""),
                    p["in"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(parameters, [("id", "path"), ("x-rdconn-tenant", "header")]);
    }
}
