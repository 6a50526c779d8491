//! Pure types and rules of the service: no I/O and no AWS types.

mod connection;
mod due;
mod product;
mod rd_path;
mod request_pace;
mod session;
mod tags;
mod tenant;
mod token_grant;
mod webhook;

pub use connection::{
    Connection, ConnectionId, ConnectionIdError, ConnectionStatus, Lease, RefreshBackoff,
    RefreshIntent, TokenPair,
};
pub use due::DuePolicy;
pub use product::{Product, UnknownProduct};
pub use rd_path::{PathRefused, PathTemplate, RdPath};
pub use request_pace::{BUDGET_WINDOW_MS, Pace, RequestPace};
pub use session::{CONNECT_SESSION_TTL_SECONDS, ConnectSession, SessionId, session_nonce};
pub use tags::{MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS, TagFilter, Tags, TagsError};
pub use tenant::{
    DEFAULT_TENANT, MAX_PRINCIPALS_PER_TENANT, PrincipalPattern, PrincipalPatternError, TenantId,
    TenantIdError, Tenants, TenantsError,
};
pub use token_grant::{IssuedTokens, TokenCallError};
pub use webhook::{
    EndpointRefused, MAX_WEBHOOKS_PER_SCOPE, SECRET_OVERLAP_SECONDS, Webhook, WebhookScope,
    Webhooks, address_allowed, endpoint_url,
};
