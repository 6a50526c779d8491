//! The JSON bodies the API answers, as types. The handlers serialize these, and
//! the API description (`api_doc`) takes its schemas from the same types, so an
//! answer and its description cannot drift apart. None carries a token; the one
//! field that carries a secret, a webhook's, is answered once (see
//! [`RegisteredWebhook`]).

use serde::Serialize;
use utoipa::ToSchema;

use crate::secret::ExposeSecret;

use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, Product, TenantId, Webhook, WebhookScope,
};

/// A connection as callers may see it: never a token, nor a fingerprint of one.
#[derive(Serialize, ToSchema)]
pub struct ConnectionView {
    /// The id the caller chose, unique within its tenant.
    pub connection_id: String,
    /// The RD Station product.
    pub product: Product,
    /// Whether the connection can be used.
    pub status: ConnectionStatus,
    /// Why the status is what it is, when it is not `active`.
    pub status_reason: Option<String>,
    /// When the account was connected (RFC 3339).
    #[schema(format = DateTime)]
    pub connected_at: String,
    /// When RD last issued the refresh token held now.
    #[schema(format = DateTime)]
    pub last_refreshed_at: String,
    /// When the access token held now expires.
    #[schema(format = DateTime)]
    pub access_token_expires_at: String,
    /// When the refresh token dies unless used (CRM: 14 idle days); `null` for
    /// tokens that do not die idle.
    #[schema(format = DateTime)]
    pub refresh_token_dies_at: Option<String>,
    /// Refreshes failed in a row.
    pub consecutive_failures: u32,
    /// The last refresh failure, without secrets.
    pub last_error: Option<String>,
    /// When the refresher tries again after failures.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// The account's RD request budget a minute (`null`: the deployment's default).
    pub rate_limit_per_minute: Option<u32>,
    /// The caller's labels.
    #[schema(value_type = BTreeMap<String, String>)]
    pub tags: crate::domain::Tags,
    /// The stored item's version (moves with every token write).
    pub version: u64,
    /// The tenant, when it is not the default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl ConnectionView {
    /// What callers may see of `c`.
    pub fn of(c: &Connection) -> Self {
        Self {
            connection_id: c.id.name().to_owned(),
            product: c.product,
            status: c.status,
            status_reason: c.status_reason.clone(),
            connected_at: c.connected_at.to_rfc3339(),
            last_refreshed_at: c.refresh_token_issued_at.to_rfc3339(),
            access_token_expires_at: c.tokens.access_expires_at.to_rfc3339(),
            refresh_token_dies_at: c.refresh_token_dies_at().map(|t| t.to_rfc3339()),
            consecutive_failures: c.backoff.failures,
            last_error: c.backoff.last_error.clone(),
            next_attempt_at: c.backoff.next_attempt_at.map(|t| t.to_rfc3339()),
            rate_limit_per_minute: c.rate_limit_per_minute,
            tags: c.tags.clone(),
            version: c.version,
            tenant: tenant_name(&c.id),
        }
    }
}

/// The tenant named in answers about `id`: none for the default tenant.
fn tenant_name(id: &ConnectionId) -> Option<String> {
    id.named_tenant().map(|t| t.as_str().to_owned())
}

/// `GET /connections`: one page.
#[derive(Serialize, ToSchema)]
pub struct ConnectionPage {
    /// The connections on this page.
    pub connections: Vec<ConnectionView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// What a forced refresh did.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// RD issued a new pair and it is stored.
    Refreshed,
    /// Another instance refreshed it meanwhile; its pair is stored.
    RefreshedByAnotherWorker,
    /// A pair RD issued but the store missed was written back.
    RestoredFromRescue,
    /// RD refused the refresh token: a person must connect again.
    NeedsReauth,
    /// RD may have rotated the token without it being kept.
    PossiblyLost,
    /// Nothing was refreshed now; the refresher retries.
    NotRefreshedTryLater,
    /// RD refused the deployment's client credentials.
    DeploymentCredentialsRejected,
}

/// `POST /connections/{id}/refresh`.
#[derive(Serialize, ToSchema)]
pub struct RefreshAnswer {
    /// What happened.
    pub outcome: RefreshOutcome,
    /// The connection afterwards, when it could be read.
    pub connection: Option<ConnectionView>,
}

/// What became of the grant at RD when a connection was deleted.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokedAtRd {
    /// RD confirmed the revoke (Marketing).
    Revoked,
    /// RD no longer accepted the grant.
    AlreadyInvalid,
    /// RD documents no revoke for the product (CRM).
    NotSupported,
}

/// `DELETE /connections/{id}`.
#[derive(Serialize, ToSchema)]
pub struct DeletedConnection {
    /// The connection deleted.
    pub connection_id: String,
    /// Always `true`.
    pub deleted: bool,
    /// What became of the grant at RD.
    pub revoked_at_rd: RevokedAtRd,
    /// The tenant, when it is not the default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl DeletedConnection {
    /// The answer for a deleted `id`.
    pub fn of(id: &ConnectionId, revoked_at_rd: RevokedAtRd) -> Self {
        Self {
            connection_id: id.name().to_owned(),
            deleted: true,
            revoked_at_rd,
            tenant: tenant_name(id),
        }
    }
}

/// What an import did.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportOutcome {
    /// Stored, the token proven (201).
    Imported,
    /// This token was imported to this connection before; RD was not called (200).
    AlreadyPresent,
    /// Stored; RD could not be reached for its first refresh (202).
    RefreshPending,
}

/// `POST /connections/import`.
#[derive(Serialize, ToSchema)]
pub struct ImportAnswer {
    /// What happened.
    pub outcome: ImportOutcome,
    /// What it means for the system that held the token before.
    pub message: &'static str,
    /// The connection as stored.
    pub connection: ConnectionView,
}

/// A new connect session (`POST /connect/sessions`, `POST /connections/{id}/reconnect`).
#[derive(Serialize, ToSchema)]
pub struct SessionOpened {
    /// The link to give the person who will consent.
    pub connect_url: String,
    /// When the link stops working.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The connection the consent makes or replaces.
    pub connection_id: String,
    /// The RD Station product.
    pub product: Product,
    /// Whether the consent replaces an existing connection's grant.
    pub reconnect: bool,
    /// The tenant, when it is not the default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl SessionOpened {
    /// The answer for a session about `id`.
    pub fn new(
        id: &ConnectionId,
        product: Product,
        reconnect: bool,
        connect_url: &url::Url,
        expires_at: String,
    ) -> Self {
        Self {
            connect_url: connect_url.as_str().to_owned(),
            expires_at,
            connection_id: id.name().to_owned(),
            product,
            reconnect,
            tenant: tenant_name(id),
        }
    }
}

/// The only status a completed connect flow answers in JSON.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectedStatus {
    /// The connection is stored.
    Connected,
}

/// The end of a connect flow, for a caller that is not a browser.
#[derive(Serialize, ToSchema)]
pub struct Connected {
    /// Always `connected`.
    pub status: ConnectedStatus,
    /// The connection stored.
    pub connection_id: String,
    /// The RD Station product.
    pub product: Product,
    /// The stored item's version.
    pub version: u64,
    /// The tenant, when it is not the default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Connected {
    /// The answer for the stored `c`.
    pub fn of(c: &Connection) -> Self {
        Self {
            status: ConnectedStatus::Connected,
            connection_id: c.id.name().to_owned(),
            product: c.product,
            version: c.version,
            tenant: tenant_name(&c.id),
        }
    }
}

/// Which endpoints a webhook belongs to, when not the caller's own tenant's.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookScopeName {
    /// Every tenant's events (operators only).
    Deployment,
}

/// An endpoint connection events are delivered to (never its secret).
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    /// `wh_` and 16 URL-safe characters.
    pub webhook_id: String,
    /// Where events are posted.
    pub url: String,
    /// When it was registered.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Until when the secret before the last rotation also signs.
    #[schema(format = DateTime)]
    pub previous_secret_valid_until: Option<String>,
    /// `deployment` for the deployment's endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<WebhookScopeName>,
    /// The tenant, when it is not the default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl WebhookView {
    /// What callers may see of `w`, registered in `scope`.
    pub fn of(scope: &WebhookScope, w: &Webhook) -> Self {
        let (scope, tenant) = match scope {
            WebhookScope::Deployment => (Some(WebhookScopeName::Deployment), None),
            WebhookScope::Tenant(t) if !t.is_default() => (None, Some(t.as_str().to_owned())),
            WebhookScope::Tenant(_) => (None, None),
        };
        Self {
            webhook_id: w.id.clone(),
            url: w.url.as_str().to_owned(),
            created_at: w.created_at.to_rfc3339(),
            previous_secret_valid_until: w
                .previous_secret
                .as_ref()
                .map(|(_, until)| until.to_rfc3339()),
            scope,
            tenant,
        }
    }
}

/// An endpoint with its new secret: the answer to registering it or rotating
/// its secret, the only answers that carry one.
// Deliberately not `Debug`: it holds the secret.
#[derive(Serialize, ToSchema)]
pub struct RegisteredWebhook {
    /// The endpoint.
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_` and the base64 key that signs deliveries (Standard Webhooks).
    pub secret: String,
}

impl RegisteredWebhook {
    /// `w` with its current secret.
    pub fn of(scope: &WebhookScope, w: &Webhook) -> Self {
        Self {
            webhook: WebhookView::of(scope, w),
            secret: w.secret.expose_secret().to_owned(),
        }
    }
}

/// `GET /webhooks`.
#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    /// The endpoints of the scope asked about.
    pub webhooks: Vec<WebhookView>,
}

/// `DELETE /webhooks/{id}`.
#[derive(Serialize, ToSchema)]
pub struct DeletedWebhook {
    /// The endpoint removed.
    pub webhook_id: String,
    /// Always `true`.
    pub deleted: bool,
}

/// A tenant and the IAM principals that act in it.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    /// The tenant's name.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// IAM principal ARNs; a trailing `*` matches a prefix.
    #[schema(value_type = Vec<String>)]
    pub principals: Vec<crate::domain::PrincipalPattern>,
}

/// `GET /tenants`.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    /// Every configured tenant.
    pub tenants: Vec<TenantView>,
}

/// `DELETE /tenants/{tenant}`.
#[derive(Serialize, ToSchema)]
pub struct RemovedTenant {
    /// The tenant removed.
    #[schema(value_type = String)]
    pub tenant: TenantId,
    /// Always `true`.
    pub removed: bool,
}
