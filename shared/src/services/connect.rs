//! The connect flow: a caller opens a connect session, a person follows its URL to
//! RD's consent page, and RD's callback is turned into a stored connection.
//!
//! The first visit of a connect link binds its session to that browser with a
//! cookie (only the cookie's hash is stored); a second browser is refused. The
//! `state` sent to RD is an opaque random value; only its SHA-256 is stored, leading
//! to its session. The callback must come from the bound browser with the latest
//! state, and completes the session with one conditional write, so a state works
//! once, for its own session and browser, before expiry. A forwarded consent URL
//! is therefore useless to anyone but the person who opened the link.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use url::{Origin, Url};

use crate::clock::Clock;
use crate::domain::{
    ConnectSession, Connection, ConnectionId, ConnectionIdError, IssuedTokens, Product, SessionId,
    Tags, TenantId, TokenCallError, TokenPair,
};

use crate::ports::{
    ClientCredentials, ConnectionStore, CredentialSource, CredentialsError, SessionError,
    SessionStore, StoreError, TokenEndpoint,
};
use crate::secret::{AuthCode, BrowserBinding, ExposeSecret, StateToken};

/// How many times a reconnect re-reads and retries when another writer got in first.
const STORE_ATTEMPTS: usize = 3;

/// Everything the connect flow needs, built once per Lambda environment.
#[derive(Clone)]
pub struct ConnectService {
    /// Where connections are stored.
    pub connections: Arc<dyn ConnectionStore>,
    /// Where connect sessions are stored.
    pub sessions: Arc<dyn SessionStore>,
    /// RD Station app credentials.
    pub credentials: Arc<dyn CredentialSource>,
    /// RD Station's OAuth endpoints.
    pub token_endpoint: Arc<dyn TokenEndpoint>,
    /// The service's clock.
    pub clock: Arc<dyn Clock>,
    /// Where this service is reachable (connect URLs and the redirect URI start
    /// here).
    pub public_base: PublicBase,
    /// Origins a session's `return_url` may point to.
    pub allowed_return_origins: Vec<Origin>,
    /// Who may open connect sessions, in which tenant.
    pub tenancy: crate::services::tenancy::Tenancy,
}

/// Where browsers and RD are sent back to this service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicBase {
    /// A configured URL: a custom domain, or the local run's address.
    Fixed(Url),
    /// `https://` + the domain each request arrived on, as API Gateway reports it
    /// (never a `Host` header a client chose). A first deploy works without knowing
    /// its own URL: the redirect URI RD is given and the one the callback presents
    /// at the token exchange are the same, because RD sends the browser to the very
    /// domain the consent redirect named.
    RequestDomain,
}

impl PublicBase {
    /// The base for a request that arrived on `request_domain` (from API Gateway's
    /// request context); `None` when the base must come from the request and the
    /// request did not say, or said something that is not a host name.
    pub fn resolve(&self, request_domain: Option<&str>) -> Option<Url> {
        match self {
            Self::Fixed(url) => Some(url.clone()),
            Self::RequestDomain => {
                let domain = request_domain?;
                let host_only = !domain.is_empty()
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                host_only
                    .then(|| Url::parse(&format!("https://{domain}/")).ok())
                    .flatten()
            }
        }
    }
}

/// The OAuth `redirect_uri` for a service reachable at `base`: `base` +
/// `/oauth/callback`. Register it with both RD Station apps.
pub fn redirect_uri(base: &Url) -> String {
    format!("{}/oauth/callback", base.as_str().trim_end_matches('/'))
}

/// The link a person opens to connect: `base` + `/connect/{session}`.
fn connect_url(base: &Url, id: &SessionId) -> Url {
    let mut url = base.clone();
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{path}/connect/{}", id.as_str()));
    url
}

/// Where the browser that completed session `id` is sent to see the result: a
/// URL that carries no code or state, so reloading it shows the result again
/// instead of replaying the callback.
pub fn result_url(base: &Url, id: &SessionId) -> Url {
    let mut url = connect_url(base, id);
    let path = format!("{}/done", url.path());
    url.set_path(&path);
    url
}

/// Why a connect session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenSessionError {
    /// The connection id is malformed.
    #[error(transparent)]
    InvalidConnectionId(#[from] ConnectionIdError),
    /// `return_url` is not a URL or its origin is not in `ALLOWED_RETURN_ORIGINS`.
    #[error("return_url must be an absolute URL on an allowed origin")]
    ReturnUrlNotAllowed,
    /// A connection with this id exists for the other product.
    #[error("connection {id} exists for product {existing}")]
    ProductMismatch {
        /// The connection id.
        id: ConnectionId,
        /// Its product.
        existing: Product,
    },
    /// A connection with this id exists and the request did not ask to replace it.
    #[error("connection {0} exists; send \"reconnect\": true to replace it")]
    ConnectionExists(ConnectionId),
    /// `reconnect` asked to replace a connection that does not exist (in the
    /// caller's tenant: another tenant's is as unknown as any other).
    #[error("no such connection to reconnect; open a session without reconnect to create it")]
    NothingToReconnect,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a caller asks for when it opens a connect session.
#[derive(Clone, Debug)]
pub struct SessionRequest<'a> {
    /// The tenant the caller acts in.
    pub tenant: &'a TenantId,
    /// The connection's name, as the caller sent it.
    pub connection_id: &'a str,
    /// The product to connect.
    pub product: Product,
    /// Where to send the person afterwards, as the caller sent it.
    pub return_url: Option<&'a str>,
    /// Whether an existing connection of that id may be replaced.
    pub reconnect: bool,
    /// Tags for the connection (replacing its own on a reconnect), if given.
    pub tags: Option<Tags>,
}

/// Why the redirect to RD's consent page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BeginConsentError {
    /// The session is unknown, expired or used.
    #[error("connect session is unknown, expired or already used")]
    SessionUnusable,
    /// Another browser opened this connect link first.
    #[error("connect session is bound to another browser")]
    OtherBrowser,
    /// No credentials for the session's product.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SessionError> for BeginConsentError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::Unusable => Self::SessionUnusable,
            SessionError::Store(e) => Self::Store(e),
        }
    }
}

/// The query RD sends to the callback.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CallbackQuery {
    /// The authorization code, on consent.
    pub code: Option<AuthCode>,
    /// The state we sent.
    pub state: Option<StateToken>,
    /// Set when the person declined or RD refused.
    pub error: Option<String>,
}

/// A callback that could not be tied to an open session: nothing was exchanged or
/// written.
#[derive(Debug, thiserror::Error)]
pub enum CallbackRejected {
    /// The state is missing, malformed, forged, expired or replayed, or the
    /// request does not come from the browser that opened the connect link.
    #[error("the state is unknown, expired, already used or not this browser's")]
    InvalidState,
    /// The store failed while checking the state.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a callback for a valid session did not end in a stored connection.
/// Nothing was written to the connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// The person declined, or RD sent an error instead of a code.
    #[error("consent was not given ({0})")]
    ConsentDenied(String),
    /// The callback had no code.
    #[error("the callback carried no authorization code")]
    MissingCode,
    /// RD says the code expired or was used (or the grant is invalid).
    #[error("the authorization code was refused: {0}")]
    CodeRejected(TokenCallError),
    /// RD refused our client credentials even after re-reading them.
    #[error("RD Station refused the client credentials: {0}")]
    ClientRejected(TokenCallError),
    /// RD did not answer usefully (rate limit, 5xx, timeout, unexpected answer).
    #[error("RD Station could not complete the exchange: {0}")]
    RdUnavailable(TokenCallError),
    /// No usable credentials for the product.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The connection id is taken by the other product.
    #[error("connection {id} exists for product {existing}")]
    ProductMismatch {
        /// The connection id.
        id: ConnectionId,
        /// Its product.
        existing: Product,
    },
    /// A connection with this id was created meanwhile and the session was not
    /// opened to replace one.
    #[error("connection {0} exists and the session was not opened to reconnect it")]
    ConnectionExists(ConnectionId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConnectFailure {
    /// A short machine-readable reason, used in `return_url` redirects and JSON.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ConsentDenied(_) => "access_denied",
            Self::MissingCode => "missing_code",
            Self::CodeRejected(_) => "expired_code",
            Self::ClientRejected(_) => "client_rejected",
            Self::RdUnavailable(_) => "rdstation_unavailable",
            Self::Credentials(_) => "credentials_unavailable",
            Self::ProductMismatch { .. } => "product_mismatch",
            Self::ConnectionExists(_) => "connection_exists",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// A callback for a valid session, and how it ended.
#[derive(Debug)]
pub struct CallbackOutcome {
    /// The session the callback completed.
    pub session: ConnectSession,
    /// The stored connection, or why there is none.
    pub result: Result<Connection, ConnectFailure>,
}

/// RD's `error` parameter reduced to a short code: it comes from the query string,
/// so only a bounded, plain form of it reaches logs.
fn error_code(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect()
}

/// A fresh browser-binding cookie value.
pub fn new_browser_binding() -> BrowserBinding {
    BrowserBinding::new(crate::domain::session_nonce())
}

/// SHA-256 of a state or cookie value, as stored.
fn state_hash(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl ConnectService {
    /// Opens a connect session and returns it with its connect URL. Replacing an
    /// existing connection takes `reconnect`.
    ///
    /// # Errors
    /// [`OpenSessionError`] for bad input or a store failure; nothing is written then.
    pub async fn open_session(
        &self,
        request: SessionRequest<'_>,
        base: &Url,
    ) -> Result<(ConnectSession, Url), OpenSessionError> {
        let SessionRequest {
            tenant,
            connection_id,
            product,
            return_url,
            reconnect,
            tags,
        } = request;
        let connection_id = ConnectionId::parse_in(tenant, connection_id)?;
        let return_url = return_url
            .map(|raw| self.allowed_return_url(raw))
            .transpose()?;
        if let Some(existing) = self.connections.get(&connection_id).await? {
            if existing.product != product {
                return Err(OpenSessionError::ProductMismatch {
                    id: connection_id,
                    existing: existing.product,
                });
            }
            if !reconnect {
                return Err(OpenSessionError::ConnectionExists(connection_id));
            }
        } else if reconnect {
            return Err(OpenSessionError::NothingToReconnect);
        }
        let mut session = ConnectSession::new(connection_id, product, return_url, self.clock.now());
        session.reconnect = reconnect;
        session.tags = tags;
        self.sessions.create_session(&session).await?;
        let connect_url = connect_url(base, &session.id);
        Ok((session, connect_url))
    }

    /// Opens a session that reconnects the existing connection `connection_id`
    /// of `tenant` (its product; its tags kept): the one-call reconnect.
    ///
    /// # Errors
    /// As [`ConnectService::open_session`];
    /// [`OpenSessionError::NothingToReconnect`] when the tenant has no such
    /// connection.
    pub async fn open_reconnect(
        &self,
        tenant: &TenantId,
        connection_id: &str,
        return_url: Option<&str>,
        base: &Url,
    ) -> Result<(ConnectSession, Url), OpenSessionError> {
        let id = ConnectionId::parse_in(tenant, connection_id)?;
        let existing = self
            .connections
            .get(&id)
            .await?
            .ok_or(OpenSessionError::NothingToReconnect)?;
        self.open_session(
            SessionRequest {
                tenant,
                connection_id,
                product: existing.product,
                return_url,
                reconnect: true,
                tags: None,
            },
            base,
        )
        .await
    }

    fn allowed_return_url(&self, raw: &str) -> Result<Url, OpenSessionError> {
        let url = Url::parse(raw).map_err(|_| OpenSessionError::ReturnUrlNotAllowed)?;
        let allowed = matches!(url.scheme(), "http" | "https")
            && self.allowed_return_origins.contains(&url.origin());
        allowed
            .then_some(url)
            .ok_or(OpenSessionError::ReturnUrlNotAllowed)
    }

    /// Binds the session to the browser holding `binding` (a fresh binding when
    /// the browser has none), issues a fresh opaque `state` and returns RD's
    /// consent URL with the binding the browser must keep.
    ///
    /// # Errors
    /// [`BeginConsentError::SessionUnusable`] for an unknown, expired or used
    /// session; [`BeginConsentError::OtherBrowser`] if another browser opened it.
    pub async fn begin_consent(
        &self,
        session_id: &str,
        binding: Option<BrowserBinding>,
        base: &Url,
    ) -> Result<(Url, BrowserBinding), BeginConsentError> {
        let id = SessionId::parse(session_id).ok_or(BeginConsentError::SessionUnusable)?;
        let binding = binding.unwrap_or_else(new_browser_binding);
        let browser_hash = state_hash(binding.expose_secret());
        let state = StateToken::new(crate::domain::session_nonce());
        let now = self.clock.now();
        let session = match self
            .sessions
            .bind_state(&id, &browser_hash, &state_hash(state.expose_secret()), now)
            .await
        {
            Ok(session) => session,
            Err(SessionError::Unusable) => {
                // Tell a second browser apart from a dead link: the person can act on it.
                let other_browser = self.sessions.get_session(&id).await?.is_some_and(|s| {
                    s.is_open(now) && s.browser_hash.as_deref().is_some_and(|h| h != browser_hash)
                });
                return Err(if other_browser {
                    BeginConsentError::OtherBrowser
                } else {
                    BeginConsentError::SessionUnusable
                });
            }
            Err(SessionError::Store(e)) => return Err(e.into()),
        };
        let credentials = self.credentials.credentials(session.product).await?;
        let consent_url = self.token_endpoint.consent_url(
            session.product,
            &credentials.client_id,
            &redirect_uri(base),
            &state,
        );
        Ok((consent_url, binding))
    }

    /// The connection session `session_id` made, as the browser holding `binding`
    /// may see it again: only for a completed session bound to that browser,
    /// and only while a connection with that id and product exists. `None`
    /// otherwise, without saying which condition failed.
    ///
    /// # Errors
    /// [`StoreError`] when the session or the connection cannot be read.
    pub async fn completed_connection(
        &self,
        session_id: &str,
        binding: Option<BrowserBinding>,
    ) -> Result<Option<Connection>, StoreError> {
        let (Some(id), Some(binding)) = (SessionId::parse(session_id), binding) else {
            return Ok(None);
        };
        let Some(session) = self.sessions.get_session(&id).await? else {
            return Ok(None);
        };
        let this_browser =
            session.browser_hash.as_deref() == Some(state_hash(binding.expose_secret()).as_str());
        if !(session.completed && this_browser) {
            return Ok(None);
        }
        let connection = self.connections.get(&session.connection_id).await?;
        // A connection made after this session (by a later link) is not this
        // session's result.
        Ok(connection
            .filter(|c| c.product == session.product && c.connected_at >= session.created_at))
    }

    /// Handles RD's redirect back, from the browser holding `binding`: completes
    /// the session the state was issued for (once, and only from the browser bound
    /// to it), exchanges the code and stores the connection.
    ///
    /// # Errors
    /// [`CallbackRejected`] when the state and binding do not open a session;
    /// failures after that are in [`CallbackOutcome::result`].
    pub async fn complete_callback(
        &self,
        query: CallbackQuery,
        binding: Option<BrowserBinding>,
        base: &Url,
    ) -> Result<CallbackOutcome, CallbackRejected> {
        let state = query.state.ok_or(CallbackRejected::InvalidState)?;
        let binding = binding.ok_or(CallbackRejected::InvalidState)?;
        let state_hash_value = state_hash(state.expose_secret());
        let session_id = self
            .sessions
            .session_for_state(&state_hash_value)
            .await?
            .ok_or(CallbackRejected::InvalidState)?;
        let session = self
            .sessions
            .complete_session(
                &session_id,
                &state_hash(binding.expose_secret()),
                &state_hash_value,
                self.clock.now(),
            )
            .await
            .map_err(|e| match e {
                SessionError::Unusable => CallbackRejected::InvalidState,
                SessionError::Store(e) => CallbackRejected::Store(e),
            })?;
        let result = match (query.error, query.code) {
            (Some(error), _) => Err(ConnectFailure::ConsentDenied(error_code(&error))),
            (None, None) => Err(ConnectFailure::MissingCode),
            (None, Some(code)) => self.exchange_and_store(&session, &code, base).await,
        };
        Ok(CallbackOutcome { session, result })
    }

    async fn exchange_and_store(
        &self,
        session: &ConnectSession,
        code: &AuthCode,
        base: &Url,
    ) -> Result<Connection, ConnectFailure> {
        let redirect_uri = redirect_uri(base);
        let credentials = self.credentials.credentials(session.product).await?;
        let issued = match self
            .exchange(session.product, &credentials, code, &redirect_uri)
            .await
        {
            Err(TokenCallError::InvalidClient { .. }) => {
                // The secret may have been rotated since this environment read it.
                self.credentials.reload().await?;
                let credentials = self.credentials.credentials(session.product).await?;
                self.exchange(session.product, &credentials, code, &redirect_uri)
                    .await
            }
            other => other,
        }
        .map_err(|e| match e {
            TokenCallError::ExpiredCode { .. } | TokenCallError::InvalidGrant { .. } => {
                ConnectFailure::CodeRejected(e)
            }
            TokenCallError::InvalidClient { .. } => ConnectFailure::ClientRejected(e),
            other => ConnectFailure::RdUnavailable(other),
        })?;
        let now = self.clock.now();
        let pair = issued
            .into_pair(session.product, None, now)
            .ok_or_else(|| {
                ConnectFailure::RdUnavailable(TokenCallError::Other {
                    status: 200,
                    detail: "token response without a refresh_token".to_owned(),
                })
            })?;
        self.store_connection(session, pair).await
    }

    async fn exchange(
        &self,
        product: Product,
        credentials: &ClientCredentials,
        code: &AuthCode,
        redirect_uri: &str,
    ) -> Result<IssuedTokens, TokenCallError> {
        self.token_endpoint
            .exchange_code(product, credentials, code, redirect_uri)
            .await
    }

    /// Creates the connection, or reconnects an existing one (same id, version
    /// bumped), re-reading on a conflict.
    async fn store_connection(
        &self,
        session: &ConnectSession,
        pair: TokenPair,
    ) -> Result<Connection, ConnectFailure> {
        let id = &session.connection_id;
        let mut current = self.connections.get(id).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let now = self.clock.now();
            let written = match &current {
                Some(existing) if existing.product != session.product => {
                    return Err(ConnectFailure::ProductMismatch {
                        id: id.clone(),
                        existing: existing.product,
                    });
                }
                Some(_) if !session.reconnect => {
                    return Err(ConnectFailure::ConnectionExists(id.clone()));
                }
                Some(existing) => {
                    self.connections
                        .update(&existing.reconnected(pair.clone(), now))
                        .await
                }
                None => {
                    let fresh = Connection {
                        tags: session.tags.clone().unwrap_or_default(),
                        ..Connection::connected(id.clone(), session.product, pair.clone(), now)
                    };
                    self.connections.create(&fresh).await
                }
            };
            match written {
                // A reconnect's tags are a setting, written apart (the pair is
                // stored already: a failure here costs the tags, not the pair).
                Ok(stored) => match &session.tags {
                    Some(tags) if stored.tags != *tags => {
                        return match self.connections.set_tags(id, tags).await {
                            Ok(Some(tagged)) => Ok(tagged),
                            Ok(None) => Ok(stored),
                            Err(e) => {
                                tracing::warn!(connection_id = %id, error = %e, "the reconnected connection's tags could not be written");
                                Ok(stored)
                            }
                        };
                    }
                    _ => return Ok(stored),
                },
                Err(StoreError::Conflict {
                    current: now_stored,
                    ..
                }) if attempt < STORE_ATTEMPTS => {
                    current = now_stored.map(|c| *c);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_error_codes_are_bounded_and_plain() {
        assert_eq!(error_code("access_denied"), "access_denied");
        assert_eq!(error_code("bad\n<script>"), "badscript");
        assert_eq!(error_code(&"x".repeat(500)).len(), 64);
    }
}
