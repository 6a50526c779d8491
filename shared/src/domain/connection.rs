use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Product, Tags, TenantId};
use crate::clock::Timestamp;
use crate::secret::{AccessToken, RefreshToken};

/// A connection's identity: the tenant it belongs to and the name the caller
/// chose for it (1 to 128 characters from `[A-Za-z0-9._:-]`). Two tenants may
/// each have a connection of the same name without meeting: everything keyed
/// by a connection (the store, caches, the rescue store) is keyed by both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    tenant: TenantId,
    name: String,
}

/// Why a string is not a valid connection name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectionIdError {
    /// The id was empty.
    #[error("connection_id must not be empty")]
    Empty,
    /// The id was longer than 128 characters.
    #[error("connection_id must be at most 128 characters")]
    TooLong,
    /// The id had a character outside `[A-Za-z0-9._:-]`.
    #[error("connection_id may only contain letters, digits, '.', '_', ':' and '-'")]
    InvalidCharacter,
}

impl ConnectionId {
    /// Validates `name` as the name of a connection of `tenant`.
    ///
    /// # Errors
    /// [`ConnectionIdError`] when `name` is not a valid name.
    pub fn parse_in(tenant: &TenantId, name: &str) -> Result<Self, ConnectionIdError> {
        if name.is_empty() {
            return Err(ConnectionIdError::Empty);
        }
        if name.len() > 128 {
            return Err(ConnectionIdError::TooLong);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if !name.chars().all(allowed) {
            return Err(ConnectionIdError::InvalidCharacter);
        }
        Ok(Self {
            tenant: tenant.clone(),
            name: name.to_owned(),
        })
    }

    /// Validates `name` as the name of a connection of the default tenant (a
    /// deployment without tenants, `make run`'s pages, tests).
    ///
    /// # Errors
    /// [`ConnectionIdError`] when `name` is not a valid name.
    pub fn in_default_tenant(name: &str) -> Result<Self, ConnectionIdError> {
        Self::parse_in(&TenantId::default_tenant(), name)
    }

    /// The tenant the connection belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant, unless it is the default one: what answers and events name,
    /// so that a deployment without tenants answers exactly as before them.
    pub fn named_tenant(&self) -> Option<&TenantId> {
        (!self.tenant.is_default()).then_some(&self.tenant)
    }

    /// Which of `buckets` this connection falls in: a stable hash of the id as
    /// displayed (so the default tenant's connections keep the buckets they
    /// had before tenants). Spreads connections over index partitions.
    pub fn spread(&self, buckets: u32) -> u32 {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(self.to_string().as_bytes());
        hasher.update([0]);
        let digest: [u8; 32] = hasher.finalize().into();
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % buckets.max(1)
    }

    /// The caller's name for the connection, unique within its tenant.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The name alone for the default tenant's connections (as before tenants),
/// `tenant/name` for the others'.
impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tenant.is_default() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.tenant, self.name)
        }
    }
}

/// Whether a connection can be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// The stored pair is believed good.
    Active,
    /// RD rejected the refresh token: a person must connect the account again.
    NeedsReauth,
    /// RD may have rotated the refresh token without us keeping the new one.
    PossiblyLost,
}

impl ConnectionStatus {
    /// Every status, in a fixed order.
    pub const ALL: [ConnectionStatus; 3] = [
        ConnectionStatus::Active,
        ConnectionStatus::NeedsReauth,
        ConnectionStatus::PossiblyLost,
    ];

    /// The lower-case name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Active => "active",
            ConnectionStatus::NeedsReauth => "needs_reauth",
            ConnectionStatus::PossiblyLost => "possibly_lost",
        }
    }
}

impl FromStr for ConnectionStatus {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "active" => Ok(Self::Active),
            "needs_reauth" => Ok(Self::NeedsReauth),
            "possibly_lost" => Ok(Self::PossiblyLost),
            other => Err(format!("unknown connection status {other:?}")),
        }
    }
}

/// The access and refresh token RD Station issued together, and when the access
/// token expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPair {
    /// Bearer token for RD's API.
    pub access_token: AccessToken,
    /// Token that buys the next pair.
    pub refresh_token: RefreshToken,
    /// When the access token stops working (issue time + `expires_in`).
    pub access_expires_at: Timestamp,
}

/// A worker's exclusive right to spend the connection's refresh token, until its
/// deadline. Written with one conditional write; see [`crate::services::refresh_protocol`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Random id of this claim; the commit is conditional on it.
    pub id: String,
    /// Milliseconds since the epoch after which the lease is dead and may be taken.
    pub deadline_ms: i64,
}

/// A record, written before RD is called, of which refresh token is about to be
/// spent. Left behind by a holder that died or whose call ended ambiguously, it
/// tells a later `invalid_grant` apart: "lost in flight", not "revoked".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshIntent {
    /// Fingerprint of the refresh token presented.
    pub refresh_token_fingerprint: String,
    /// True once an attempt with this token ended without a usable answer (or its
    /// holder vanished): RD may have rotated it.
    pub ambiguous: bool,
}

/// Failed refresh attempts since the last success, and when the next may start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefreshBackoff {
    /// Attempts that failed in a row.
    pub failures: u32,
    /// No worker calls RD for this connection before this time.
    pub next_attempt_at: Option<Timestamp>,
    /// Why the last attempt failed (a short code, never a token).
    pub last_error: Option<String>,
    /// A `ConnectionExpiring` warning went out during these failures (cleared,
    /// with the rest, by the next successful refresh).
    pub expiring_warned: bool,
}

/// How long RD keeps an unused CRM refresh token.
pub const CRM_REFRESH_IDLE_SECONDS: i64 = 14 * 86_400;

/// One connected RD Station account, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The caller's name for this connection.
    pub id: ConnectionId,
    /// Which RD Station product the tokens belong to.
    pub product: Product,
    /// Whether the connection can be used.
    pub status: ConnectionStatus,
    /// Why the status is not `active`, when it is not.
    pub status_reason: Option<String>,
    /// The current token pair.
    pub tokens: TokenPair,
    /// When the current refresh token was issued: CRM refresh tokens die 14 days
    /// after their last use.
    pub refresh_token_issued_at: Timestamp,
    /// Bumped by every write; each write is conditional on the version it read.
    pub version: u64,
    /// The refresh lease, if a worker holds (or held) one.
    pub lease: Option<Lease>,
    /// The refresh token an unfinished or ambiguous attempt presented.
    pub intent: Option<RefreshIntent>,
    /// Failed attempts and the earliest next one.
    pub backoff: RefreshBackoff,
    /// When the connection was first stored.
    pub created_at: Timestamp,
    /// When a person last completed the consent flow for it.
    pub connected_at: Timestamp,
    /// When the item was last written.
    pub updated_at: Timestamp,
    /// Requests a minute the proxy lets through to RD for this connection's account
    /// (RD allows 120 by default, 500 on Advanced plans); `None`: the deployment's
    /// default.
    pub rate_limit_per_minute: Option<u32>,
    /// The caller's labels (a setting, like the rate limit: written apart from
    /// the protocol's versioned writes).
    pub tags: Tags,
    /// For a connection made by an import, the fingerprint of the refresh token
    /// it was imported with (written at creation, never changed): a second
    /// import of that token is known as the same import.
    pub imported_from: Option<String>,
}

impl Connection {
    /// A connection just made from a completed consent flow (version 1).
    pub fn connected(
        id: ConnectionId,
        product: Product,
        tokens: TokenPair,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            product,
            status: ConnectionStatus::Active,
            status_reason: None,
            tokens,
            refresh_token_issued_at: now,
            version: 1,
            lease: None,
            intent: None,
            backoff: RefreshBackoff::default(),
            created_at: now,
            connected_at: now,
            updated_at: now,
            rate_limit_per_minute: None,
            tags: Tags::default(),
            imported_from: None,
        }
    }

    /// This connection after a person connected it again: same id and creation time,
    /// the new pair, active again, any refresh state of the old grant dropped. The
    /// version is left for the store to bump.
    pub fn reconnected(&self, tokens: TokenPair, now: Timestamp) -> Self {
        Self {
            connected_at: now,
            ..self.with_new_pair(tokens, now)
        }
    }

    /// This connection holding a newly issued pair: active, no lease, no intent, no
    /// failures.
    pub fn with_new_pair(&self, tokens: TokenPair, now: Timestamp) -> Self {
        Self {
            status: ConnectionStatus::Active,
            status_reason: None,
            tokens,
            refresh_token_issued_at: now,
            lease: None,
            intent: None,
            backoff: RefreshBackoff::default(),
            updated_at: now,
            ..self.clone()
        }
    }

    /// When the refresh token dies unless it is used before: a CRM refresh
    /// token 14 days after it was issued (its last use); a Marketing one does
    /// not die of idleness.
    pub fn refresh_token_dies_at(&self) -> Option<Timestamp> {
        match self.product {
            Product::Crm => Some(
                self.refresh_token_issued_at
                    .plus_seconds(CRM_REFRESH_IDLE_SECONDS),
            ),
            Product::Marketing => None,
        }
    }

    /// The lease, if one is held and not past its deadline at `now_ms`.
    pub fn live_lease(&self, now_ms: i64) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.deadline_ms > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "acme:crm-1", "Tenant_9.prod", &"x".repeat(128)] {
            assert!(ConnectionId::in_default_tenant(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_tokens() {
        let c = Connection::connected(
            ConnectionId::in_default_tenant("c").expect("valid"),
            Product::Crm,
            TokenPair {
                access_token: AccessToken::new("at-super-secret"),
                refresh_token: RefreshToken::new("rt-super-secret"),
                access_expires_at: Timestamp(0),
            },
            Timestamp(0),
        );
        let printed = format!("{c:?} {c:#?}");
        assert!(!printed.contains("super-secret"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(
            ConnectionId::in_default_tenant(""),
            Err(ConnectionIdError::Empty)
        );
        assert_eq!(
            ConnectionId::in_default_tenant(&"x".repeat(129)),
            Err(ConnectionIdError::TooLong)
        );
        for bad in ["a b", "a/b", "é", "a#b", "CONN#x"] {
            assert_eq!(
                ConnectionId::in_default_tenant(bad),
                Err(ConnectionIdError::InvalidCharacter),
                "{bad}"
            );
        }
    }
}
