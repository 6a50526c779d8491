use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use url::Url;

use super::{ConnectionId, Product, Tags};
use crate::clock::Timestamp;

/// How long a connect session may be used, from its creation.
pub const CONNECT_SESSION_TTL_SECONDS: i64 = 600;

/// The random, unguessable id of a connect session (32 bytes, base64url).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(random_token())
    }

    /// Accepts `value` if it has the shape of an id this service generates; says
    /// nothing about whether such a session exists.
    pub fn parse(value: &str) -> Option<Self> {
        let well_formed = value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// The id is part of a connect URL that lets a person finish a connection, so it is
// kept out of logs like the other secrets.
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

/// A fresh random nonce for a `state` value.
pub fn session_nonce() -> String {
    random_token()
}

/// 32 random bytes from the OS-seeded generator, base64url without padding.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A single-use invitation to connect one RD Station account under a given id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectSession {
    /// The session's id, part of its connect URL.
    pub id: SessionId,
    /// The connection the flow will create or reconnect.
    pub connection_id: ConnectionId,
    /// The product to connect.
    pub product: Product,
    /// Where to send the person when the flow ends, if anywhere.
    pub return_url: Option<Url>,
    /// When the session was made.
    pub created_at: Timestamp,
    /// After this, the session cannot be used.
    pub expires_at: Timestamp,
    /// SHA-256 of the `state` issued on the latest redirect to RD, if any.
    pub state_hash: Option<String>,
    /// SHA-256 of the binding cookie of the browser that first opened the connect
    /// link; only that browser may go on with the flow.
    pub browser_hash: Option<String>,
    /// Whether the flow may replace an existing connection with this id.
    pub reconnect: bool,
    /// Set once a callback has used the session.
    pub completed: bool,
    /// Tags the connection gets (replacing its own on a reconnect); `None`:
    /// none given.
    pub tags: Option<Tags>,
}

impl ConnectSession {
    /// A new session that expires [`CONNECT_SESSION_TTL_SECONDS`] after `now`
    /// and may not replace an existing connection.
    pub fn new(
        connection_id: ConnectionId,
        product: Product,
        return_url: Option<Url>,
        now: Timestamp,
    ) -> Self {
        Self {
            id: SessionId::generate(),
            connection_id,
            product,
            return_url,
            created_at: now,
            expires_at: now.plus_seconds(CONNECT_SESSION_TTL_SECONDS),
            state_hash: None,
            browser_hash: None,
            reconnect: false,
            completed: false,
            tags: None,
        }
    }

    /// Whether the session can still be used at `now`.
    pub fn is_open(&self, now: Timestamp) -> bool {
        !self.completed && now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert!(SessionId::parse(a.as_str()).is_some());
        assert!(SessionId::parse("short").is_none());
        assert!(SessionId::parse(&"a/".repeat(21)).is_none());
    }

    #[test]
    fn session_closes_after_ttl_or_use() {
        let id = ConnectionId::in_default_tenant("c1").expect("valid");
        let mut session = ConnectSession::new(id, Product::Crm, None, Timestamp(1000));
        assert!(session.is_open(Timestamp(1000 + CONNECT_SESSION_TTL_SECONDS - 1)));
        assert!(!session.is_open(Timestamp(1000 + CONNECT_SESSION_TTL_SECONDS)));
        session.completed = true;
        assert!(!session.is_open(Timestamp(1000)));
    }
}
