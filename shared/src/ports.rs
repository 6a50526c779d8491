//! The roles the service needs from the outside world. Adapters in
//! [`crate::outbound`] fill them: DynamoDB and memory for the stores, S3 and
//! memory for the rescue store, Secrets Manager and a fixed value for credentials,
//! EventBridge for events, RD Station's OAuth server for tokens.

use async_trait::async_trait;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use url::Url;

use crate::clock::Timestamp;
use crate::domain::{
    ConnectSession, Connection, ConnectionId, ConnectionStatus, IssuedTokens, Product, RdPath,
    RequestPace, SessionId, TagFilter, Tags, TenantId, Tenants, TokenCallError, TokenPair,
    WebhookScope, Webhooks,
};
use crate::secret::{AccessToken, AuthCode, ClientSecret, RefreshToken, StateToken};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write's condition failed: the item exists already (on create) or its
    /// `version` is no longer the one read (on update). Carries the item as it is
    /// now, when there is one.
    #[error("connection {id} was changed by another writer (or already exists)")]
    Conflict {
        /// The connection written.
        id: ConnectionId,
        /// The stored item at the time of the failed write.
        current: Option<Box<Connection>>,
    },
    /// The store could not be reached or refused the call (throttling, network,
    /// service error). The write may be retried.
    #[error("connection store unavailable: {0}")]
    Unavailable(String),
    /// A stored item could not be read back into the domain.
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    /// A list cursor that this store did not hand out.
    #[error("the cursor is not one this service issued")]
    InvalidCursor,
}

/// Which connections to list.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// The tenant whose connections are listed (one per query).
    pub tenant: TenantId,
    /// Only this status. `needs_reauth` and `possibly_lost` (the connections that
    /// need a person) are found on a sparse index, without a scan.
    pub status: Option<ConnectionStatus>,
    /// Only this product.
    pub product: Option<Product>,
    /// Only connections with every one of these tags.
    pub tags: Vec<TagFilter>,
    /// Only connections whose refresh token dies by then (CRM's idle limit;
    /// a Marketing connection's does not die of idleness).
    pub dies_by: Option<Timestamp>,
    /// Where the previous page ended (opaque).
    pub cursor: Option<String>,
    /// At most this many items are looked at for the page.
    pub limit: u32,
}

impl ListQuery {
    /// Whether `c` passes the `dies_by` filter (every connection when unset).
    pub fn admits_death(&self, c: &Connection) -> bool {
        self.dies_by
            .is_none_or(|by| c.refresh_token_dies_at().is_some_and(|dies| dies <= by))
    }
}

/// One page of connections.
#[derive(Debug)]
pub struct ListPage {
    /// The connections (a filtered page may hold fewer than the limit, even none).
    pub connections: Vec<Connection>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<String>,
}

/// Why a connect session could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No open session matches: unknown, expired, already completed, or the state
    /// does not match the one issued last.
    #[error("connect session is unknown, expired or already used")]
    Unusable,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where connections live. Every write is conditional on the version read, and
/// reads are strongly consistent, so a write based on a stale read fails with
/// [`StoreError::Conflict`] instead of overwriting.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// The connection as last written, read consistently.
    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError>;

    /// Stores a connection that must not exist yet; it is stored with version 1.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with the existing item if the id is taken.
    async fn create(&self, connection: &Connection) -> Result<Connection, StoreError>;

    /// Replaces the connection if its stored version still equals
    /// `connection.version`; the stored copy gets `version + 1`, which is
    /// returned. The connection's settings (its rate limit) stay as stored: only
    /// [`ConnectionStore::set_rate_limit`] writes them.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with the current item if the version moved on or
    /// the item is gone.
    async fn update(&self, connection: &Connection) -> Result<Connection, StoreError>;

    /// Like [`ConnectionStore::update`], and also only if the stored item holds no
    /// lease whose deadline is after `now_ms`: the claim of a refresh lease.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with the current item if the version moved on or a
    /// live lease is held.
    async fn claim_lease(
        &self,
        connection: &Connection,
        now_ms: i64,
    ) -> Result<Connection, StoreError>;

    /// Like [`ConnectionStore::update`], and also only if the stored lease id is
    /// still `lease_id`: the commit of a refresh by the lease's holder.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with the current item if the version or the lease moved on.
    async fn update_holding_lease(
        &self,
        connection: &Connection,
        lease_id: &str,
    ) -> Result<Connection, StoreError>;

    /// Sets the connection's own request budget a minute (`None`: the
    /// deployment's) and nothing else. The version does not move, so a refresh
    /// in flight still commits; the protocol's writes leave the setting as
    /// stored. `None` when there is no such connection.
    async fn set_rate_limit(
        &self,
        id: &ConnectionId,
        rate_limit_per_minute: Option<u32>,
    ) -> Result<Option<Connection>, StoreError>;

    /// Replaces the connection's tags (a setting: the version does not move,
    /// like [`ConnectionStore::set_rate_limit`]). `None` when there is no such
    /// connection.
    async fn set_tags(
        &self,
        id: &ConnectionId,
        tags: &Tags,
    ) -> Result<Option<Connection>, StoreError>;

    /// Removes the connection; `false` if there was none. Unconditional: a refresh
    /// in flight then fails its conditional commit and cannot bring it back.
    async fn delete(&self, id: &ConnectionId) -> Result<bool, StoreError>;

    /// Removes the connection only while it is still at `version` (nothing
    /// wrote it since it was read); `false` if it was not (gone, or moved on).
    async fn delete_at_version(&self, id: &ConnectionId, version: u64) -> Result<bool, StoreError>;

    /// Ids of active connections whose due time is at or before `now`, in one shard
    /// of the due index (a query on a sparse index, never a scan).
    async fn due_connections(
        &self,
        shard: u32,
        now: Timestamp,
    ) -> Result<Vec<ConnectionId>, StoreError>;

    /// The number of due-index shards.
    fn due_shards(&self) -> u32;

    /// One page of connections.
    ///
    /// # Errors
    /// [`StoreError::InvalidCursor`] for a cursor this store did not hand out.
    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError>;
}

/// Where the tenants and the principals acting in each are kept: one record,
/// read consistently, replaced only at the version read.
#[async_trait]
pub trait TenantRegistry: Send + Sync {
    /// The tenants as last written (version 0 and none when never written).
    async fn tenants(&self) -> Result<Tenants, StoreError>;

    /// Stores `tenants` if the stored version is still `tenants.version`, and
    /// returns them as stored (`version + 1`); `None` when another write came
    /// first.
    async fn replace_tenants(&self, tenants: &Tenants) -> Result<Option<Tenants>, StoreError>;
}

/// Where webhook endpoints are kept: one record a scope (a tenant, or the
/// deployment), read consistently, replaced only at the version read.
#[async_trait]
pub trait WebhookRegistry: Send + Sync {
    /// The scope's endpoints as last written (version 0 and none when never
    /// written).
    async fn webhooks(&self, scope: &WebhookScope) -> Result<Webhooks, StoreError>;

    /// Stores `webhooks` for `scope` if the stored version is still
    /// `webhooks.version`, and returns them as stored (`version + 1`); `None`
    /// when another write came first.
    async fn replace_webhooks(
        &self,
        scope: &WebhookScope,
        webhooks: &Webhooks,
    ) -> Result<Option<Webhooks>, StoreError>;
}

/// Why a host name could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResolveError(pub String);

/// Resolves host names (to check where an endpoint leads before trusting it).
#[async_trait]
pub trait HostResolver: Send + Sync {
    /// Every address `host` resolves to now.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::IpAddr>, ResolveError>;
}

/// One signed webhook delivery, ready to post.
#[derive(Clone, Debug)]
pub struct SignedDelivery {
    /// The endpoint.
    pub url: url::Url,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` and the content type.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: String,
}

/// Why a delivery did not land.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The endpoint answered, but not 2xx.
    #[error("the endpoint answered {0}")]
    Status(u16),
    /// The endpoint's name leads to an address deliveries may not reach.
    #[error("the endpoint resolves to an address deliveries may not reach")]
    Refused,
    /// No answer (connection, TLS, timeout).
    #[error("the endpoint could not be reached: {0}")]
    Unreachable(String),
}

/// Posts deliveries (HTTPS; only to addresses [`crate::domain::address_allowed`]
/// admits, checked against what the name resolves to at connection time).
#[async_trait]
pub trait WebhookTransport: Send + Sync {
    /// Posts `delivery`; `Ok` only for a 2xx answer.
    async fn post(&self, delivery: &SignedDelivery) -> Result<(), DeliveryError>;
}

/// A delivery still to make: one event to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingDelivery {
    /// The endpoint's scope (`*` for the deployment's).
    pub scope: String,
    /// The endpoint.
    pub webhook_id: String,
    /// `webhook-id`: the same for every attempt, so a receiver can drop repeats.
    pub message_id: String,
    /// The payload, as delivered.
    pub body: String,
}

/// Why deliveries could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("could not queue webhook deliveries: {0}")]
pub struct QueueError(pub String);

/// Where deliveries wait, each retried on its own (SQS in AWS).
#[async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// Queues each of `deliveries`.
    async fn queue(&self, deliveries: &[PendingDelivery]) -> Result<(), QueueError>;

    /// Makes the received message `receipt` (a delivery that failed) come back
    /// after `delay` rather than the queue's visibility timeout: the backoff.
    async fn retry_in(&self, receipt: &str, delay: std::time::Duration) -> Result<(), QueueError>;
}

/// A rotated pair saved aside because committing it to the connection failed, so
/// that it never lives only in memory. The refresher restores these first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RescuedPair {
    /// The connection the pair belongs to.
    pub connection_id: ConnectionId,
    /// The lease under which RD issued the pair.
    pub lease_id: String,
    /// The pair RD issued.
    pub tokens: TokenPair,
    /// Fingerprint of the refresh token that was spent for it: the pair is restored
    /// only onto a connection still holding that token.
    pub spent_refresh_token: String,
    /// Fingerprint of the access token the pair replaces. Marketing refresh tokens
    /// are stable, so a connection refreshed since still holds the spent refresh
    /// token: only this tells that its newer access token must not be overwritten.
    pub replaced_access_token: String,
    /// When it was saved.
    pub rescued_at: Timestamp,
}

impl RescuedPair {
    /// The key this pair is found by.
    pub fn key(&self) -> RescueKey {
        RescueKey {
            connection_id: self.connection_id.clone(),
            spent_refresh_token: self.spent_refresh_token.clone(),
            replaced_access_token: self.replaced_access_token.clone(),
        }
    }
}

/// What a rescued pair is found by: its connection and the fingerprints of the
/// pair it replaced. A connection holding that pair now can ask, in one lookup,
/// whether a pair issued in exchange for it waits ([`RescueKey::replacing`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RescueKey {
    /// The connection.
    pub connection_id: ConnectionId,
    /// Fingerprint of the refresh token spent for the pair.
    pub spent_refresh_token: String,
    /// Fingerprint of the access token the pair replaces.
    pub replaced_access_token: String,
}

impl RescueKey {
    /// The key of a pair issued in exchange for the pair `connection` holds now.
    pub fn replacing(connection: &Connection) -> Self {
        Self {
            connection_id: connection.id.clone(),
            spent_refresh_token: connection.tokens.refresh_token.fingerprint(),
            replaced_access_token: connection.tokens.access_token.fingerprint(),
        }
    }
}

/// One page of the keys of waiting pairs.
#[derive(Clone, Debug, Default)]
pub struct RescuePage {
    /// The keys, in the store's order.
    pub keys: Vec<RescueKey>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// Where rescued pairs wait: outside the connections table, so that the failure
/// that stopped a commit does not also stop its rescue (an S3 bucket in AWS), and
/// found by key: whether a pair waits for a connection is one strongly consistent
/// read that every instance can make at once, never a drain.
#[async_trait]
pub trait RescueStore: Send + Sync {
    /// Saves `rescue` under [`RescuedPair::key`] until it is deleted.
    async fn put_rescue(&self, rescue: &RescuedPair) -> Result<(), StoreError>;

    /// The pair saved under `key`, read strongly consistently: a put that has
    /// answered is seen.
    async fn find_rescue(&self, key: &RescueKey) -> Result<Option<RescuedPair>, StoreError>;

    /// One page of the keys of every waiting pair, starting at `after` (a
    /// [`RescuePage::next`]); for the scheduled sweep, never for a decision.
    async fn list_rescues(&self, after: Option<&str>) -> Result<RescuePage, StoreError>;

    /// Removes the pair under `key` (nothing if none is there).
    async fn delete_rescue(&self, key: &RescueKey) -> Result<(), StoreError>;
}

/// A rescued pair received from the SQS queue earlier versions rescued to, with the
/// receipt that deletes it.
#[derive(Clone, Debug)]
pub struct ReceivedRescue {
    /// The pair.
    pub rescue: RescuedPair,
    /// Deletes this delivery of the message (opaque; not a secret).
    pub receipt: String,
}

/// The rescue queue of earlier versions, kept only until what it holds has moved to
/// the [`RescueStore`] ([`crate::services::scheduled_refresh`] moves it).
#[async_trait]
pub trait LegacyRescueQueue: Send + Sync {
    /// Up to `max` waiting pairs, hidden from other receivers for a while.
    async fn receive_rescues(&self, max: usize) -> Result<Vec<ReceivedRescue>, StoreError>;

    /// Removes a pair once it is saved in the rescue store.
    async fn delete_rescue(&self, receipt: &str) -> Result<(), StoreError>;
}

/// Where connect sessions live (in the same table as connections, in production).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    async fn create_session(&self, session: &ConnectSession) -> Result<(), StoreError>;

    /// The session, read consistently.
    async fn get_session(&self, id: &SessionId) -> Result<Option<ConnectSession>, StoreError>;

    /// Binds an open session to the browser whose binding cookie hashes to
    /// `browser_hash` (if no browser is bound yet; if one is, it must be this one)
    /// and records the hash of a newly issued `state`, replacing any earlier one
    /// (so only the latest redirect's state can complete it). The state is also
    /// recorded as leading to this session (see [`SessionStore::session_for_state`]).
    ///
    /// # Errors
    /// [`SessionError::Unusable`] if the session is unknown, expired, completed or
    /// bound to another browser.
    async fn bind_state(
        &self,
        id: &SessionId,
        browser_hash: &str,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<ConnectSession, SessionError>;

    /// The session a state was issued for (the state sent to RD is opaque).
    async fn session_for_state(&self, state_hash: &str) -> Result<Option<SessionId>, StoreError>;

    /// Marks the session completed, in one conditional write, if it is open, its
    /// state hash is `state_hash` and its browser hash is `browser_hash`. Exactly
    /// one caller can win this for a session.
    ///
    /// # Errors
    /// [`SessionError::Unusable`] otherwise.
    async fn complete_session(
        &self,
        id: &SessionId,
        browser_hash: &str,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<ConnectSession, SessionError>;
}

/// The client id and secret of one of our RD Station apps.
#[derive(Clone, Debug)]
pub struct ClientCredentials {
    /// The app's public client id.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: ClientSecret,
}

/// Why client credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The credentials secret has no entry for this product.
    #[error("no client credentials configured for {0}")]
    NotConfigured(Product),
    /// The secret could not be read.
    #[error("client credentials unavailable: {0}")]
    Unavailable(String),
    /// The secret's value is not the documented JSON.
    #[error("client credentials secret is malformed: {0}")]
    Malformed(String),
}

/// Where the RD Station app credentials come from.
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// The credentials for `product`, from the cache when there is one.
    async fn credentials(&self, product: Product) -> Result<ClientCredentials, CredentialsError>;

    /// Drops the cache and reads the credentials again (after RD answered
    /// `invalid_client`, e.g. because the secret was rotated).
    async fn reload(&self) -> Result<(), CredentialsError>;
}

/// RD Station's OAuth endpoints, as the services use them. Every call ends within
/// the hard timeout the adapter was built with (the refresh protocol's T).
#[async_trait]
pub trait TokenEndpoint: Send + Sync {
    /// The page where a person grants our app access to `product`, which sends
    /// them back to `redirect_uri` with `code` and `state`.
    fn consent_url(
        &self,
        product: Product,
        client_id: &str,
        redirect_uri: &str,
        state: &StateToken,
    ) -> Url;

    /// Exchanges an authorization code for a token pair.
    async fn exchange_code(
        &self,
        product: Product,
        credentials: &ClientCredentials,
        code: &AuthCode,
        redirect_uri: &str,
    ) -> Result<IssuedTokens, TokenCallError>;

    /// Revokes the grant behind `tokens` at RD (Marketing's `/auth/revoke`).
    async fn revoke(&self, tokens: &TokenPair) -> Result<(), TokenCallError>;

    /// Spends `refresh_token` for a new pair. A CRM refresh token (and a rolling
    /// Marketing one) is dead once RD has processed the call, whatever reaches us.
    async fn refresh(
        &self,
        product: Product,
        credentials: &ClientCredentials,
        refresh_token: &RefreshToken,
    ) -> Result<IssuedTokens, TokenCallError>;
}

/// One call to RD Station's API on a connection's behalf.
#[derive(Debug)]
pub struct UpstreamRequest {
    /// The HTTP method, as the caller sent it.
    pub method: Method,
    /// Where on RD's API (checked: it cannot leave RD's configured base).
    pub path: RdPath,
    /// The caller's headers that may be passed on (already filtered).
    pub headers: HeaderMap,
    /// The body, as the caller sent it.
    pub body: Bytes,
    /// The connection's access token, sent as `Authorization: Bearer`.
    pub access_token: AccessToken,
}

/// RD's answer, whole.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// The status.
    pub status: StatusCode,
    /// RD's headers (hop-by-hop ones and `Set-Cookie` removed by the adapter).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Why RD's API gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request never reached RD (connect error): safe to retry.
    #[error("RD Station could not be reached: {0}")]
    NotSent(String),
    /// The request was sent and no whole answer came back (timeout, dropped
    /// connection): RD may have acted on it.
    #[error("RD Station gave no answer: {0}")]
    NoAnswer(String),
    /// RD answered with more than the proxy can pass back; the rest was not read.
    #[error("RD Station's answer is larger than {limit_bytes} bytes")]
    AnswerTooLarge {
        /// The limit it passed.
        limit_bytes: usize,
    },
}

/// RD Station's REST API (Marketing and CRM share the host).
#[async_trait]
pub trait RdApi: Send + Sync {
    /// Sends one request and returns RD's answer, whatever its status.
    async fn send(&self, request: &UpstreamRequest) -> Result<UpstreamResponse, UpstreamError>;
}

/// What a rate budget says about one more request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetDecision {
    /// Within the budget: `granted` requests (at least one, at most those
    /// asked for) counted, the first of which conforms at `first_ms` and the
    /// others one emission apart (any moment before now meaning now).
    Allowed {
        /// How many requests were counted.
        granted: u32,
        /// When the first of them conforms.
        first_ms: i64,
    },
    /// The budget is spent for now; try again after this long.
    Exhausted {
        /// Until the next request would pass.
        retry_after: std::time::Duration,
    },
    /// The connection no longer holds the access token the request would carry
    /// (refreshed elsewhere, connected again, or deleted): nothing was counted,
    /// and the token must not be sent.
    TokenReplaced,
}

/// Each connection's requests to RD, paced where every proxy instance sees them
/// (on the connection's item in AWS): never more than the budget in any 60 s
/// ([`crate::domain::RequestPace`]); and the deployment's calls to RD's token
/// endpoint, when they are capped.
#[async_trait]
pub trait RateBudget: Send + Sync {
    /// Counts up to `wanted` requests of `connection` at `pace`: as many as
    /// conform within `horizon_ms` of `now_ms` (reserved ahead; 0: as many as
    /// conform now), at least one, or none when the budget is spent that far;
    /// and only while the connection still holds `access_token`: the one
    /// write that counts them also proves the token is the current grant's,
    /// on every instance, at no extra call.
    async fn take(
        &self,
        connection: &ConnectionId,
        access_token: &AccessToken,
        pace: RequestPace,
        wanted: u32,
        horizon_ms: i64,
        now_ms: i64,
    ) -> Result<BudgetDecision, StoreError>;

    /// Counts one call to RD's token endpoint against the deployment's `pace`
    /// (one record every instance shares): `None` when it may go, else how long
    /// until one may.
    async fn take_token_call(
        &self,
        pace: RequestPace,
        now_ms: i64,
    ) -> Result<Option<std::time::Duration>, StoreError>;
}

/// Keeps scheduled runs from overlapping without reserved concurrency: a run holds
/// the lock until its own finish line, or until it gives it back.
#[async_trait]
pub trait RunLock: Send + Sync {
    /// Takes the lock until `until_ms` unless another run holds it past `now_ms`;
    /// `Ok(false)` when another run holds it.
    async fn try_lock(&self, holder: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError>;

    /// Gives the lock back, if `holder` still holds it.
    async fn unlock(&self, holder: &str) -> Result<(), StoreError>;
}

/// Keeps two workers off one due-index shard at once (SQS may deliver a shard's
/// message twice, and a message redelivered after a worker died may meet the
/// next run's): a worker holds its shard's lease until its own finish line, or
/// until it gives it back. The refresh protocol's per-connection lease makes a
/// second worker harmless; this one makes it cheap.
#[async_trait]
pub trait ShardLease: Send + Sync {
    /// Takes `shard`'s lease until `until_ms` unless another worker holds it
    /// past `now_ms`; `Ok(false)` when another does.
    async fn try_take_shard(
        &self,
        shard: u32,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Gives `shard`'s lease back, if `holder` still holds it.
    async fn give_back_shard(&self, shard: u32, holder: &str) -> Result<(), StoreError>;
}

/// One due-index shard handed to the refresh workers by a scheduled run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardWork {
    /// The due-index shard to refresh.
    pub shard: u32,
    /// The scheduled run that handed it out (its invocation's request id), for logs.
    pub run: String,
}

/// Why work could not be handed out.
#[derive(Debug, thiserror::Error)]
#[error("the refresh work queue refused the work: {0}")]
pub struct WorkQueueError(pub String);

/// Where a scheduled run hands its shards to the refresh workers (an SQS queue
/// the refresher function consumes, with a maximum concurrency, as deployed).
#[async_trait]
pub trait RefreshWorkQueue: Send + Sync {
    /// Queues one message per shard. Returns how many were queued; those not
    /// queued are left to the next run (logged by the caller).
    async fn hand_out(&self, work: &[ShardWork]) -> Result<usize, WorkQueueError>;
}

/// What happened to a connection (or the deployment) that someone should act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// RD rejected the refresh token: a person must connect the account again.
    ConnectionNeedsReauth,
    /// RD may have rotated the refresh token without us keeping the new one.
    ConnectionPossiblyLost,
    /// A connection that was in trouble is usable again.
    ConnectionRecovered,
    /// Refreshes keep failing without a clear answer from RD; the connection is
    /// still active, but a person should look.
    ConnectionRefreshFailing,
    /// Refreshes keep failing and the refresh token dies (RD's 14 idle days
    /// for CRM) within the warning window: sent once, with the time of death.
    ConnectionExpiring,
    /// The connection was deleted (`DELETE /connections/{id}`).
    ConnectionDeleted,
    /// RD refused our client credentials: the deployment is misconfigured.
    DeploymentCredentialsRejected,
}

impl EventKind {
    /// The EventBridge `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            Self::ConnectionNeedsReauth => "ConnectionNeedsReauth",
            Self::ConnectionPossiblyLost => "ConnectionPossiblyLost",
            Self::ConnectionRecovered => "ConnectionRecovered",
            Self::ConnectionRefreshFailing => "ConnectionRefreshFailing",
            Self::ConnectionExpiring => "ConnectionExpiring",
            Self::ConnectionDeleted => "ConnectionDeleted",
            Self::DeploymentCredentialsRejected => "DeploymentCredentialsRejected",
        }
    }

    /// Every kind.
    pub const ALL: [EventKind; 7] = [
        Self::ConnectionNeedsReauth,
        Self::ConnectionPossiblyLost,
        Self::ConnectionRecovered,
        Self::ConnectionRefreshFailing,
        Self::ConnectionExpiring,
        Self::ConnectionDeleted,
        Self::DeploymentCredentialsRejected,
    ];

    /// The kind with EventBridge `detail-type` `detail_type`.
    pub fn from_detail_type(detail_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.detail_type() == detail_type)
    }

    /// The webhook payload's `type`, e.g. `connection.needs_reauth`.
    pub fn webhook_type(self) -> &'static str {
        match self {
            Self::ConnectionNeedsReauth => "connection.needs_reauth",
            Self::ConnectionPossiblyLost => "connection.possibly_lost",
            Self::ConnectionRecovered => "connection.recovered",
            Self::ConnectionRefreshFailing => "connection.refresh_failing",
            Self::ConnectionExpiring => "connection.expiring",
            Self::ConnectionDeleted => "connection.deleted",
            Self::DeploymentCredentialsRejected => "deployment.credentials_rejected",
        }
    }
}

/// An event for the operators' and integrators' systems. Never carries a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEvent {
    /// What happened.
    pub kind: EventKind,
    /// The connection, for connection events.
    pub connection_id: Option<ConnectionId>,
    /// The product concerned.
    pub product: Option<Product>,
    /// A short machine-readable reason, e.g. `lost_in_flight`.
    pub reason: String,
    /// The connection's tags, for connection events.
    pub tags: Tags,
    /// When the connection's refresh token dies, for `ConnectionExpiring`.
    pub dies_at: Option<Timestamp>,
}

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
#[error("could not publish event: {0}")]
pub struct PublishError(pub String);

/// Where events go (EventBridge in AWS).
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes one event.
    async fn publish(&self, event: &ServiceEvent) -> Result<(), PublishError>;
}
