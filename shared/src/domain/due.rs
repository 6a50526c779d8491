//! When a connection is due for a refresh, and which shard of the due index it
//! sits in.

use sha2::{Digest, Sha256};

use super::{Connection, ConnectionStatus, Product};
use crate::clock::Timestamp;

/// How early to refresh, per product, and how to spread connections over the
/// due index's shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuePolicy {
    /// Refresh a CRM access token this many seconds before it expires (of 2 h).
    pub crm_margin_seconds: i64,
    /// Refresh a Marketing access token this many seconds before it expires (of 24 h).
    pub marketing_margin_seconds: i64,
    /// Refresh a CRM refresh token unused for this long, well inside RD's 14-day
    /// idle limit.
    pub crm_keepalive_seconds: i64,
    /// How many partitions the due index spreads connections over.
    pub shards: u32,
}

impl Default for DuePolicy {
    fn default() -> Self {
        Self {
            crm_margin_seconds: 15 * 60,
            marketing_margin_seconds: 60 * 60,
            crm_keepalive_seconds: 7 * 86_400,
            shards: 16,
        }
    }
}

fn hash_bytes(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    hasher.finalize().into()
}

impl DuePolicy {
    /// The margin before expiry for `product`.
    pub fn margin(&self, product: Product) -> i64 {
        match product {
            Product::Crm => self.crm_margin_seconds,
            Product::Marketing => self.marketing_margin_seconds,
        }
    }

    /// When `connection` should next be refreshed, or `None` when it should not be
    /// refreshed by the schedule at all (not `active`).
    ///
    /// The margin is stretched by up to a quarter, by an amount fixed per connection
    /// and token, so connections made together do not all come due together.
    pub fn due_at(&self, connection: &Connection) -> Option<Timestamp> {
        if connection.status != ConnectionStatus::Active {
            return None;
        }
        let margin = self.margin(connection.product);
        let seed = hash_bytes(&[
            connection.id.to_string().as_bytes(),
            &connection.tokens.access_expires_at.0.to_be_bytes(),
        ]);
        let spread = (margin / 4).max(1);
        let jitter =
            (u64::from_be_bytes(seed[..8].try_into().unwrap_or_default()) % spread as u64) as i64;
        let mut due = connection
            .tokens
            .access_expires_at
            .plus_seconds(-(margin + jitter));
        if connection.product == Product::Crm {
            due = due.min(
                connection
                    .refresh_token_issued_at
                    .plus_seconds(self.crm_keepalive_seconds),
            );
        }
        if let Some(next) = connection.backoff.next_attempt_at {
            due = due.max(next);
        }
        Some(due)
    }

    /// Whether `connection` is due at `now` (ignoring backoff).
    pub fn is_due(&self, connection: &Connection, now: Timestamp) -> bool {
        let without_backoff = Connection {
            backoff: Default::default(),
            ..connection.clone()
        };
        self.due_at(&without_backoff).is_some_and(|due| due <= now)
    }

    /// The due-index shard of a connection: a stable hash of its id.
    pub fn shard_of(&self, connection: &Connection) -> u32 {
        connection.id.spread(self.shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionId, TokenPair};
    use crate::secret::{AccessToken, RefreshToken};

    fn connection(product: Product, expires_at: i64, issued_at: i64) -> Connection {
        let mut c = Connection::connected(
            ConnectionId::in_default_tenant("c").expect("valid"),
            product,
            TokenPair {
                access_token: AccessToken::new("a"),
                refresh_token: RefreshToken::new("r"),
                access_expires_at: Timestamp(expires_at),
            },
            Timestamp(issued_at),
        );
        c.refresh_token_issued_at = Timestamp(issued_at);
        c
    }

    #[test]
    fn due_within_the_jittered_margin() {
        let policy = DuePolicy::default();
        let c = connection(Product::Crm, 10_000, 9_000);
        let due = policy.due_at(&c).expect("active").0;
        assert!((10_000 - 900 - 225..=10_000 - 900).contains(&due), "{due}");
        let m = connection(Product::Marketing, 100_000, 0);
        let due = policy.due_at(&m).expect("active").0;
        assert!(
            (100_000 - 3_600 - 900..=100_000 - 3_600).contains(&due),
            "{due}"
        );
    }

    #[test]
    fn idle_crm_refresh_tokens_come_due_by_keepalive() {
        let policy = DuePolicy::default();
        let c = connection(Product::Crm, 100 * 86_400, 0);
        assert_eq!(policy.due_at(&c), Some(Timestamp(7 * 86_400)));
        let m = connection(Product::Marketing, 100 * 86_400, 0);
        assert!(
            policy.due_at(&m).expect("active").0 > 90 * 86_400,
            "marketing tokens do not idle out"
        );
    }

    #[test]
    fn backoff_and_status_move_or_remove_the_due_time() {
        let policy = DuePolicy::default();
        let mut c = connection(Product::Crm, 10_000, 9_000);
        c.backoff.next_attempt_at = Some(Timestamp(50_000));
        assert_eq!(policy.due_at(&c), Some(Timestamp(50_000)));
        assert!(
            policy.is_due(&c, Timestamp(10_000)),
            "due, though backing off"
        );
        c.status = ConnectionStatus::NeedsReauth;
        assert_eq!(policy.due_at(&c), None);
    }

    #[test]
    fn shards_spread_connections() {
        let policy = DuePolicy::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let mut c = connection(Product::Crm, 0, 0);
            c.id = ConnectionId::in_default_tenant(&format!("tenant-{i}")).expect("valid");
            seen.insert(policy.shard_of(&c));
        }
        assert_eq!(seen.len(), 16);
    }
}
