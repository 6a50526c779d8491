//! Each proxy instance's cache of access tokens, so a warm instance reads nothing
//! from the store per request. An entry is used only while its token has more
//! than a safety margin to live; RD refusing it (a 401) replaces it through the
//! refresh protocol. Bounded: the least recently used entry goes first.
//!
//! A grant that ended (a delete, a reconnect) must not be used again by a warm
//! instance. With the rate budget on, every request's budget write checks that
//! the store still holds the cached token. With it off, nothing is written per
//! request, so an entry is trusted for at most [`TokenCache::rechecking_every`]
//! before the store is read again: the bound on how long another instance may
//! still send an ended grant's token.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use crate::clock::Timestamp;
use crate::domain::{Connection, ConnectionId, Product};
use crate::secret::AccessToken;

#[derive(Clone)]
struct Entry {
    token: AccessToken,
    version: u64,
    expires_at: Timestamp,
    rate_limit_per_minute: Option<u32>,
    product: Product,
    issued_at: Timestamp,
    /// When the store last confirmed it.
    read_at: Timestamp,
}

/// What the proxy needs of a connection for one request.
#[derive(Clone)]
pub struct CachedToken {
    /// The access token.
    pub token: AccessToken,
    /// The connection's own request budget, if it has one.
    pub rate_limit_per_minute: Option<u32>,
    /// Which API the token is for.
    pub product: Product,
    /// When RD issued the pair the token belongs to.
    pub issued_at: Timestamp,
}

impl CachedToken {
    /// What `connection` gives the proxy.
    pub fn of(connection: &Connection) -> Self {
        Self {
            token: connection.tokens.access_token.clone(),
            rate_limit_per_minute: connection.rate_limit_per_minute,
            product: connection.product,
            issued_at: connection.refresh_token_issued_at,
        }
    }
}

/// A bounded, per-instance map from connection to its current access token.
pub struct TokenCache {
    entries: Mutex<LruCache<ConnectionId, Entry>>,
    margin_seconds: i64,
    recheck_seconds: Option<i64>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("margin_seconds", &self.margin_seconds)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` connections whose tokens are used while they
    /// have more than `margin_seconds` to live.
    pub fn new(capacity: NonZeroUsize, margin_seconds: i64) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            margin_seconds,
            recheck_seconds: None,
        }
    }

    /// The same cache, trusting an entry for at most `seconds` after the store
    /// gave it (used when no per-request write checks the token).
    pub fn rechecking_every(self, seconds: i64) -> Self {
        Self {
            recheck_seconds: Some(seconds),
            ..self
        }
    }

    /// The cached token of `id` if it is well outside the margin at `now`.
    pub fn get(&self, id: &ConnectionId, now: Timestamp) -> Option<CachedToken> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(id) {
            Some(e)
                if e.expires_at > now.plus_seconds(self.margin_seconds)
                    && self
                        .recheck_seconds
                        .is_none_or(|after| now < e.read_at.plus_seconds(after)) =>
            {
                Some(CachedToken {
                    token: e.token.clone(),
                    rate_limit_per_minute: e.rate_limit_per_minute,
                    product: e.product,
                    issued_at: e.issued_at,
                })
            }
            Some(_) => {
                entries.pop(id);
                None
            }
            None => None,
        }
    }

    /// Whether `connection`'s token may be used at `now`.
    pub fn usable(&self, connection: &Connection, now: Timestamp) -> bool {
        connection.tokens.access_expires_at > now.plus_seconds(self.margin_seconds)
    }

    /// Keeps `connection`'s token as read from the store at `now`, unless a
    /// newer version is cached already.
    pub fn put(&self, connection: &Connection, now: Timestamp) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries
            .peek(&connection.id)
            .is_some_and(|e| e.version > connection.version)
        {
            return;
        }
        entries.put(
            connection.id.clone(),
            Entry {
                token: connection.tokens.access_token.clone(),
                version: connection.version,
                expires_at: connection.tokens.access_expires_at,
                rate_limit_per_minute: connection.rate_limit_per_minute,
                product: connection.product,
                issued_at: connection.refresh_token_issued_at,
                read_at: now,
            },
        );
    }

    /// Drops `id` (deleted, or no longer usable).
    pub fn forget(&self, id: &ConnectionId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.pop(id);
        }
    }
}
