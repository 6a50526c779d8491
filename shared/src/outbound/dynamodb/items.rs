//! Mapping between domain types and DynamoDB items. The only place that reads a
//! token's value for storage.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use url::Url;

use super::schema::{
    ATTENTION, ATTENTION_SHARDS, DUE_AT, DUE_SHARD, KIND, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE,
};
use crate::clock::Timestamp;
use crate::domain::{
    ConnectSession, Connection, ConnectionId, ConnectionStatus, DuePolicy, Lease, Product,
    RefreshBackoff, RefreshIntent, SessionId, Tags, TenantId, TokenPair,
};
use crate::ports::StoreError;
use crate::secret::{AccessToken, ExposeSecret, RefreshToken};

type Item = HashMap<String, AttributeValue>;

/// Session items stay a day past expiry for inspection, then DynamoDB's TTL removes them.
const SESSION_RETENTION_SECONDS: i64 = 86_400;

/// A connection's key: partition `CONN#<name>` for the default tenant's (the
/// key every connection had before tenants existed, so those need no
/// migration), `CONN#<tenant>#<name>` for another tenant's. Neither a name nor
/// a tenant can contain `#`, so a key reads back one way only.
pub(super) fn connection_key(id: &ConnectionId) -> Item {
    let partition = if id.tenant().is_default() {
        format!("CONN#{}", id.name())
    } else {
        format!("CONN#{}#{}", id.tenant(), id.name())
    };
    HashMap::from([
        (PARTITION_KEY.to_owned(), s(partition)),
        (SORT_KEY.to_owned(), s("CONN")),
    ])
}

/// `value` itself for the default tenant (as before tenants existed),
/// `value@<tenant>` for another: how an index partition (the list index's
/// kind, the attention index's status) is kept to one tenant.
pub(super) fn tenant_partition(value: &str, tenant: &TenantId) -> String {
    if tenant.is_default() {
        value.to_owned()
    } else {
        format!("{value}@{tenant}")
    }
}

/// The attention-index partition of a connection with `status` in `shard` of
/// `tenant`: `needs_reauth` for shard 0 of the default tenant (the value every
/// such connection carried before shards and tenants, so those are still
/// found), `needs_reauth#3` for shard 3, `…@acme` for tenant acme's.
pub(super) fn attention_partition(status: &str, shard: u32, tenant: &TenantId) -> String {
    if shard == 0 {
        tenant_partition(status, tenant)
    } else {
        tenant_partition(&format!("{status}#{shard}"), tenant)
    }
}

/// The tenant a connection item names (items from before tenants carry none).
fn tenant_of(item: &Item) -> Result<TenantId, StoreError> {
    optional_string(item, TENANT)
        .map(|t| TenantId::parse(&t).map_err(corrupt))
        .transpose()
        .map(Option::unwrap_or_default)
}

pub(super) fn due_shard_name(shard: u32) -> String {
    format!("DUE#{shard}")
}

pub(super) fn session_key(id: &SessionId) -> Item {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            s(format!("SESSION#{}", id.as_str())),
        ),
        (SORT_KEY.to_owned(), s("SESSION")),
    ])
}

/// The deployment's token-call pace (`TOKEN_CALLS_PER_SECOND`).
pub(super) fn token_call_pace_key() -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), s("RUN#token-calls")),
        (SORT_KEY.to_owned(), s("PACE")),
    ])
}

/// The scheduled run's lock.
pub(super) fn run_lock_key() -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), s("RUN#scheduled-refresh")),
        (SORT_KEY.to_owned(), s("LOCK")),
    ])
}

/// The lease item of due-index shard `shard`'s refresh worker.
pub(super) fn shard_lease_key(shard: u32) -> Item {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            s(format!("RUN#refresh-shard#{shard}")),
        ),
        (SORT_KEY.to_owned(), s("LEASE")),
    ])
}

pub(super) fn state_key(state_hash: &str) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), s(format!("STATE#{state_hash}"))),
        (SORT_KEY.to_owned(), s("STATE")),
    ])
}

/// The item that leads an opaque state (by its hash) to its session.
pub(super) fn state_item(state_hash: &str, id: &SessionId, expires_at: Timestamp) -> Item {
    let mut item = state_key(state_hash);
    item.extend([
        ("kind".to_owned(), s("connect_state")),
        ("session_id".to_owned(), s(id.as_str())),
        (
            TTL_ATTRIBUTE.to_owned(),
            n(expires_at.0 + SESSION_RETENTION_SECONDS),
        ),
    ]);
    item
}

pub(super) fn session_id_from_state_item(item: &Item) -> Result<SessionId, StoreError> {
    SessionId::parse(&string(item, "session_id")?).ok_or_else(|| corrupt("state item"))
}

/// The connection's settings: written only by a settings write
/// ([`crate::ports::ConnectionStore::set_rate_limit`]), which leaves the version
/// alone; the protocol's versioned writes never touch them.
pub(super) const SETTINGS_ATTRIBUTES: [&str; 2] = [RATE_LIMIT, TAGS];

/// The connection's own request budget a minute, when it has one.
pub(super) const RATE_LIMIT: &str = "rate_limit_per_minute";

/// A connection's or session's tags: a map of strings, absent when there are none.
pub(super) const TAGS: &str = "tags";

/// `tags` as a map attribute; `None` when there are none.
pub(super) fn tags_value(tags: &Tags) -> Option<AttributeValue> {
    (!tags.is_empty()).then(|| {
        AttributeValue::M(
            tags.iter()
                .map(|(k, v)| (k.to_owned(), AttributeValue::S(v.to_owned())))
                .collect(),
        )
    })
}

/// The tags a stored item carries (none when absent).
fn tags_of(item: &Item) -> Result<Option<Tags>, StoreError> {
    let Some(value) = item.get(TAGS) else {
        return Ok(None);
    };
    let map = value.as_m().map_err(|_| corrupt("tags"))?;
    let plain = map
        .iter()
        .map(|(k, v)| {
            v.as_s()
                .map(|v| (k.clone(), v.clone()))
                .map_err(|_| corrupt("a tag"))
        })
        .collect::<Result<_, _>>()?;
    Tags::parse(plain).map(Some).map_err(corrupt)
}

/// Attributes written once, when the connection is created, and never changed:
/// a versioned write leaves them out (a shorter update; a connection id keeps
/// its product).
pub(super) const IMMUTABLE_ATTRIBUTES: [&str; 6] = [
    KIND,
    TENANT,
    "connection_id",
    "product",
    "created_at",
    IMPORTED_FROM,
];

/// The fingerprint of the refresh token an imported connection was made with.
pub(super) const IMPORTED_FROM: &str = "imported_from";

/// The tenant of a connection or session item; absent on the default tenant's.
pub(super) const TENANT: &str = "tenant";

/// Attributes a connection item may lack (settings aside): a versioned write
/// removes those the connection it writes does not have.
pub(super) const OPTIONAL_ATTRIBUTES: [&str; 11] = [
    "status_reason",
    ATTENTION,
    "lease_id",
    "lease_deadline_ms",
    "intent_refresh_token",
    "intent_ambiguous",
    "next_attempt_at",
    "last_refresh_error",
    "expiring_warned",
    DUE_SHARD,
    DUE_AT,
];

/// The `UpdateItem` parts that write `c` over a stored connection without
/// touching its settings: a `SET` of every attribute `c` has (keys and
/// settings aside) and a `REMOVE` of every optional one it lacks, with their
/// placeholder names and values.
pub(super) fn versioned_update(
    c: &Connection,
    policy: &DuePolicy,
) -> (String, HashMap<String, String>, Item) {
    let mut item = connection_item(c, policy);
    for key in [PARTITION_KEY, SORT_KEY]
        .iter()
        .chain(&SETTINGS_ATTRIBUTES)
        .chain(&IMMUTABLE_ATTRIBUTES)
    {
        item.remove(*key);
    }
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut sets = Vec::new();
    let mut attributes: Vec<_> = item.into_iter().collect();
    attributes.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, value)) in attributes.into_iter().enumerate() {
        sets.push(format!("#s{i} = :s{i}"));
        names.insert(format!("#s{i}"), name);
        values.insert(format!(":s{i}"), value);
    }
    let mut expression = format!("SET {}", sets.join(", "));
    let lacking: Vec<&str> = OPTIONAL_ATTRIBUTES
        .into_iter()
        .filter(|name| !names.values().any(|n| n == name))
        .collect();
    let mut removed = Vec::new();
    for (i, name) in lacking.into_iter().enumerate() {
        names.insert(format!("#r{i}"), name.to_owned());
        removed.push(format!("#r{i}"));
    }
    if !removed.is_empty() {
        expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
    }
    (expression, names, values)
}

/// The request budget's theoretical arrival time (ms) on a connection item:
/// written only by the rate budget, never by the protocol's writes.
pub(super) const BUDGET_TAT: &str = "budget_tat_ms";

/// The kind of a connection item (its list-index partition).
pub(super) const CONNECTION_KIND: &str = "connection";

pub(super) fn connection_item(c: &Connection, policy: &DuePolicy) -> Item {
    let mut item = connection_key(&c.id);
    item.extend([
        (
            KIND.to_owned(),
            s(tenant_partition(CONNECTION_KIND, c.id.tenant())),
        ),
        ("connection_id".to_owned(), s(c.id.name())),
        ("product".to_owned(), s(c.product.as_str())),
        ("status".to_owned(), s(c.status.as_str())),
        (
            "access_token".to_owned(),
            s(c.tokens.access_token.expose_secret()),
        ),
        (
            "refresh_token".to_owned(),
            s(c.tokens.refresh_token.expose_secret()),
        ),
        (
            "access_expires_at".to_owned(),
            n(c.tokens.access_expires_at.0),
        ),
        (
            "refresh_token_issued_at".to_owned(),
            n(c.refresh_token_issued_at.0),
        ),
        (
            "version".to_owned(),
            AttributeValue::N(c.version.to_string()),
        ),
        ("created_at".to_owned(), n(c.created_at.0)),
        ("connected_at".to_owned(), n(c.connected_at.0)),
        ("updated_at".to_owned(), n(c.updated_at.0)),
    ]);
    if !c.id.tenant().is_default() {
        item.insert(TENANT.to_owned(), s(c.id.tenant().as_str()));
    }
    if let Some(reason) = &c.status_reason {
        item.insert("status_reason".to_owned(), s(reason));
    }
    if let Some(fingerprint) = &c.imported_from {
        item.insert(IMPORTED_FROM.to_owned(), s(fingerprint));
    }
    if let Some(tags) = tags_value(&c.tags) {
        item.insert(TAGS.to_owned(), tags);
    }
    if let Some(limit) = c.rate_limit_per_minute {
        item.insert(
            "rate_limit_per_minute".to_owned(),
            AttributeValue::N(limit.to_string()),
        );
    }
    if c.status != ConnectionStatus::Active {
        // Sparse: the operators' "which connections need a person?" is a Query.
        let shard = c.id.spread(ATTENTION_SHARDS);
        item.insert(
            ATTENTION.to_owned(),
            s(attention_partition(c.status.as_str(), shard, c.id.tenant())),
        );
    }
    if let Some(lease) = &c.lease {
        item.insert("lease_id".to_owned(), s(&lease.id));
        item.insert("lease_deadline_ms".to_owned(), n(lease.deadline_ms));
    }
    if let Some(intent) = &c.intent {
        item.insert(
            "intent_refresh_token".to_owned(),
            s(&intent.refresh_token_fingerprint),
        );
        item.insert(
            "intent_ambiguous".to_owned(),
            AttributeValue::Bool(intent.ambiguous),
        );
    }
    item.insert(
        "refresh_failures".to_owned(),
        n(i64::from(c.backoff.failures)),
    );
    if let Some(next) = c.backoff.next_attempt_at {
        item.insert("next_attempt_at".to_owned(), n(next.0));
    }
    if let Some(error) = &c.backoff.last_error {
        item.insert("last_refresh_error".to_owned(), s(error));
    }
    if c.backoff.expiring_warned {
        item.insert("expiring_warned".to_owned(), AttributeValue::Bool(true));
    }
    // Only refreshable connections are in the (sparse) due index.
    if let Some(due) = policy.due_at(c) {
        item.insert(DUE_SHARD.to_owned(), s(due_shard_name(policy.shard_of(c))));
        item.insert(DUE_AT.to_owned(), n(due.0));
    }
    item
}

/// The connection id in an index key's partition key (see [`connection_key`]).
pub(super) fn connection_id_from_key(item: &Item) -> Result<ConnectionId, StoreError> {
    let partition = string(item, PARTITION_KEY)?;
    let rest = partition
        .strip_prefix("CONN#")
        .ok_or_else(|| corrupt("index key is not a connection"))?;
    match rest.split_once('#') {
        Some((tenant, name)) => {
            ConnectionId::parse_in(&TenantId::parse(tenant).map_err(corrupt)?, name)
        }
        None => ConnectionId::in_default_tenant(rest),
    }
    .map_err(corrupt)
}

pub(super) fn connection_from_item(item: &Item) -> Result<Connection, StoreError> {
    Ok(Connection {
        id: ConnectionId::parse_in(&tenant_of(item)?, &string(item, "connection_id")?)
            .map_err(corrupt)?,
        product: Product::from_str(&string(item, "product")?).map_err(corrupt)?,
        status: ConnectionStatus::from_str(&string(item, "status")?).map_err(corrupt)?,
        status_reason: optional_string(item, "status_reason"),
        tokens: TokenPair {
            access_token: AccessToken::new(string(item, "access_token")?),
            refresh_token: RefreshToken::new(string(item, "refresh_token")?),
            access_expires_at: timestamp(item, "access_expires_at")?,
        },
        refresh_token_issued_at: timestamp(item, "refresh_token_issued_at")?,
        version: number(item, "version")?
            .try_into()
            .map_err(|_| corrupt("negative version"))?,
        lease: match optional_string(item, "lease_id") {
            Some(id) => Some(Lease {
                id,
                deadline_ms: number(item, "lease_deadline_ms")?,
            }),
            None => None,
        },
        intent: optional_string(item, "intent_refresh_token").map(|fingerprint| RefreshIntent {
            refresh_token_fingerprint: fingerprint,
            ambiguous: matches!(
                item.get("intent_ambiguous"),
                Some(AttributeValue::Bool(true))
            ),
        }),
        backoff: RefreshBackoff {
            failures: optional_number(item, "refresh_failures")
                .unwrap_or_default()
                .try_into()
                .map_err(|_| corrupt("refresh_failures"))?,
            next_attempt_at: optional_number(item, "next_attempt_at").map(Timestamp),
            last_error: optional_string(item, "last_refresh_error"),
            expiring_warned: matches!(
                item.get("expiring_warned"),
                Some(AttributeValue::Bool(true))
            ),
        },
        created_at: timestamp(item, "created_at")?,
        connected_at: timestamp(item, "connected_at")?,
        updated_at: timestamp(item, "updated_at")?,
        rate_limit_per_minute: match item.get("rate_limit_per_minute") {
            Some(AttributeValue::N(n)) => {
                Some(n.parse().map_err(|_| corrupt("rate_limit_per_minute"))?)
            }
            _ => None,
        },
        tags: tags_of(item)?.unwrap_or_default(),
        imported_from: optional_string(item, IMPORTED_FROM),
    })
}

pub(super) fn session_item(session: &ConnectSession) -> Item {
    let mut item = session_key(&session.id);
    item.extend([
        ("kind".to_owned(), s("connect_session")),
        ("connection_id".to_owned(), s(session.connection_id.name())),
        ("product".to_owned(), s(session.product.as_str())),
        ("created_at".to_owned(), n(session.created_at.0)),
        ("expires_at".to_owned(), n(session.expires_at.0)),
        (
            "completed".to_owned(),
            AttributeValue::Bool(session.completed),
        ),
        (
            TTL_ATTRIBUTE.to_owned(),
            n(session.expires_at.0 + SESSION_RETENTION_SECONDS),
        ),
    ]);
    if !session.connection_id.tenant().is_default() {
        item.insert(
            TENANT.to_owned(),
            s(session.connection_id.tenant().as_str()),
        );
    }
    if let Some(url) = &session.return_url {
        item.insert("return_url".to_owned(), s(url.as_str()));
    }
    if let Some(hash) = &session.state_hash {
        item.insert("state_hash".to_owned(), s(hash));
    }
    if let Some(hash) = &session.browser_hash {
        item.insert("browser_hash".to_owned(), s(hash));
    }
    item.insert(
        "reconnect".to_owned(),
        AttributeValue::Bool(session.reconnect),
    );
    if let Some(tags) = &session.tags {
        // Present even when empty: a reconnect given no tags clears them.
        let value = tags_value(tags).unwrap_or_else(|| AttributeValue::M(HashMap::new()));
        item.insert(TAGS.to_owned(), value);
    }
    item
}

pub(super) fn session_from_item(item: &Item) -> Result<ConnectSession, StoreError> {
    let pk = string(item, PARTITION_KEY)?;
    let id = pk
        .strip_prefix("SESSION#")
        .and_then(SessionId::parse)
        .ok_or_else(|| corrupt("session key"))?;
    let return_url = optional_string(item, "return_url")
        .map(|u| Url::parse(&u))
        .transpose()
        .map_err(corrupt)?;
    Ok(ConnectSession {
        id,
        connection_id: ConnectionId::parse_in(&tenant_of(item)?, &string(item, "connection_id")?)
            .map_err(corrupt)?,
        product: Product::from_str(&string(item, "product")?).map_err(corrupt)?,
        return_url,
        created_at: timestamp(item, "created_at")?,
        expires_at: timestamp(item, "expires_at")?,
        state_hash: optional_string(item, "state_hash"),
        browser_hash: optional_string(item, "browser_hash"),
        reconnect: matches!(item.get("reconnect"), Some(AttributeValue::Bool(true))),
        completed: match item.get("completed") {
            Some(AttributeValue::Bool(b)) => *b,
            _ => return Err(corrupt("completed")),
        },
        tags: tags_of(item)?,
    })
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn string(item: &Item, name: &str) -> Result<String, StoreError> {
    optional_string(item, name).ok_or_else(|| corrupt(format!("missing string attribute {name}")))
}

fn optional_string(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value.clone()),
        _ => None,
    }
}

fn number(item: &Item, name: &str) -> Result<i64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| corrupt(format!("attribute {name} is not an integer"))),
        _ => Err(corrupt(format!("missing number attribute {name}"))),
    }
}

fn optional_number(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().ok(),
        _ => None,
    }
}

fn timestamp(item: &Item, name: &str) -> Result<Timestamp, StoreError> {
    number(item, name).map(Timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Connection {
        let tokens = TokenPair {
            access_token: AccessToken::new("at"),
            refresh_token: RefreshToken::new("rt"),
            access_expires_at: Timestamp(7200),
        };
        let mut c = Connection::connected(
            ConnectionId::in_default_tenant("acme:crm").expect("valid"),
            Product::Crm,
            tokens,
            Timestamp(1),
        );
        c.status = ConnectionStatus::PossiblyLost;
        c.rate_limit_per_minute = Some(500);
        c.imported_from = Some("0123456789abcdef".to_owned());
        c.status_reason = Some("lost_in_flight".to_owned());
        c.version = 7;
        c.lease = Some(Lease {
            id: "lease-1".to_owned(),
            deadline_ms: 123_456,
        });
        c.intent = Some(RefreshIntent {
            refresh_token_fingerprint: "abcd".to_owned(),
            ambiguous: true,
        });
        c.backoff = RefreshBackoff {
            failures: 3,
            next_attempt_at: Some(Timestamp(99)),
            last_error: Some("ambiguous".to_owned()),
            expiring_warned: true,
        };
        c
    }

    #[test]
    fn connection_round_trips() {
        let c = sample();
        let item = connection_item(&c, &DuePolicy::default());
        assert_eq!(connection_from_item(&item).expect("parses"), c);
        assert!(
            !item.contains_key(DUE_SHARD),
            "a lost connection leaves the due index"
        );
        let active = Connection {
            status: ConnectionStatus::Active,
            status_reason: None,
            ..c
        };
        let item = connection_item(&active, &DuePolicy::default());
        assert!(item.contains_key(DUE_SHARD) && item.contains_key(DUE_AT));
        assert_eq!(connection_id_from_key(&item).expect("key"), active.id);
    }

    #[test]
    fn session_round_trips() {
        let mut session = ConnectSession::new(
            ConnectionId::in_default_tenant("c").expect("valid"),
            Product::Marketing,
            Some(Url::parse("https://app.example.com/done").expect("url")),
            Timestamp(100),
        );
        session.state_hash = Some("abc".to_owned());
        session.browser_hash = Some("def".to_owned());
        session.reconnect = true;
        assert_eq!(
            session_from_item(&session_item(&session)).expect("parses"),
            session
        );
    }

    #[test]
    fn missing_attribute_is_corrupt_not_a_panic() {
        let mut item = connection_item(&sample(), &DuePolicy::default());
        item.remove("refresh_token");
        assert!(matches!(
            connection_from_item(&item),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// A versioned write must remove whatever the stored item has and the new
    /// connection lacks (a lease, an intent, a due-index entry), or the old
    /// value would stay; this fails when an optional attribute is added to the
    /// item without being listed.
    #[test]
    fn a_versioned_write_sets_what_it_has_removes_what_it_lacks_and_leaves_settings() {
        let policy = DuePolicy::default();
        let mut minimal = sample();
        minimal.status = ConnectionStatus::Active;
        minimal.status_reason = None;
        minimal.lease = None;
        minimal.intent = None;
        minimal.backoff = RefreshBackoff::default();
        let mut active_full = sample();
        active_full.status = ConnectionStatus::Active;
        let items = [&minimal, &sample(), &active_full].map(|c| connection_item(c, &policy));
        let always: Vec<&String> = items[0]
            .keys()
            .filter(|k| items.iter().all(|item| item.contains_key(*k)))
            .collect();
        for item in &items {
            for name in item.keys() {
                assert!(
                    always.contains(&name)
                        || OPTIONAL_ATTRIBUTES.contains(&name.as_str())
                        || SETTINGS_ATTRIBUTES.contains(&name.as_str())
                        || IMMUTABLE_ATTRIBUTES.contains(&name.as_str()),
                    "{name} may be missing from an item but is not in OPTIONAL_ATTRIBUTES"
                );
            }
        }
        let (expression, names, values) = versioned_update(&minimal, &policy);
        let named: Vec<&str> = names.values().map(String::as_str).collect();
        assert!(!named.contains(&"rate_limit_per_minute"), "{expression}");
        assert!(!named.contains(&PARTITION_KEY) && !named.contains(&SORT_KEY));
        for optional in OPTIONAL_ATTRIBUTES {
            assert!(named.contains(&optional), "{optional} set or removed");
        }
        assert!(expression.contains(" REMOVE "), "{expression}");
        assert_eq!(values.len(), expression.matches(" = :s").count());
    }
}
