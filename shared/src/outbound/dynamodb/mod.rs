//! The DynamoDB store: connections and connect sessions in one table.
//!
//! Every write carries a condition, and a failed condition asks DynamoDB for the
//! item as it is (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so a stale write
//! comes back as [`StoreError::Conflict`] with the current connection.

mod items;
pub mod schema;
mod tenants;
mod webhooks;

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
};

use crate::clock::Timestamp;
use crate::domain::{
    ConnectSession, Connection, ConnectionId, DuePolicy, SessionId, Tags, TenantId,
};
use crate::outbound::aws_error::unavailable;
use crate::ports::{ConnectionStore, ListPage, ListQuery, SessionError, SessionStore, StoreError};
use crate::secret::{AccessToken, ExposeSecret};
use items::{connection_key, session_key};
use schema::{DUE_AT, DUE_INDEX, DUE_SHARD};

/// Connections and sessions in the DynamoDB table named by
/// `CONNECTIONS_TABLE`.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    due_policy: DuePolicy,
}

impl DynamoStore {
    /// A store over `table` with the default due policy, using a client built once
    /// at cold start.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            due_policy: DuePolicy::default(),
        }
    }

    /// The same store, computing due times with `policy`.
    pub fn with_due_policy(self, policy: DuePolicy) -> Self {
        Self {
            due_policy: policy,
            ..self
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Keys of every item in one due-index partition due at or before `now`.
    async fn query_due_keys(
        &self,
        shard: &str,
        now: Timestamp,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut keys = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("#shard = :shard AND #due <= :now")
                .expression_attribute_names("#shard", DUE_SHARD)
                .expression_attribute_names("#due", DUE_AT)
                .expression_attribute_values(":shard", AttributeValue::S(shard.to_owned()))
                .expression_attribute_values(":now", AttributeValue::N(now.0.to_string()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| unavailable("", &e))?;
            keys.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => return Ok(keys),
            }
        }
    }
}

/// The error text of a failed call: its code and message, never the request.
/// A page's last key as an opaque cursor: `v1.` + base64url of its string
/// attributes as JSON (keys hold ids, never tokens).
fn encode_cursor(key: &HashMap<String, AttributeValue>) -> String {
    use base64::Engine;
    let plain: std::collections::BTreeMap<&str, &str> = key
        .iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|s| (k.as_str(), s.as_str())))
        .collect();
    let json = serde_json::to_vec(&plain).unwrap_or_default();
    format!(
        "v1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    )
}

/// A cursor over `partitions` index partitions: the one to go on in and the
/// start key there (none: from its start). A single partition's cursor is its
/// start key alone, as before the attention index had shards.
fn join_cursor(position: usize, inner: Option<String>, partitions: usize) -> String {
    let inner = inner.unwrap_or_default();
    if partitions == 1 {
        inner
    } else {
        format!("s{position}:{inner}")
    }
}

/// The partition and start key [`join_cursor`] put in `cursor`.
fn split_cursor(cursor: &str, partitions: usize) -> Result<(usize, Option<&str>), StoreError> {
    if partitions == 1 {
        return Ok((0, Some(cursor)));
    }
    let (position, inner) = cursor
        .strip_prefix('s')
        .and_then(|rest| rest.split_once(':'))
        .ok_or(StoreError::InvalidCursor)?;
    let position: usize = position.parse().map_err(|_| StoreError::InvalidCursor)?;
    if position >= partitions {
        return Err(StoreError::InvalidCursor);
    }
    Ok((position, Some(inner).filter(|i| !i.is_empty())))
}

/// The start key a cursor names, for a Query on the index whose partition
/// attribute is `partition` (asked for `value`) and whose sort attribute, if
/// not the table's key, is `sort`. Only the key of a connection of `tenant` in
/// that partition passes: anything else would make DynamoDB refuse the Query
/// (ours to answer as a 400, not a 5xx), or start another tenant's page.
fn decode_cursor(
    cursor: &str,
    tenant: &TenantId,
    (partition, value): (&str, &str),
    sort: Option<&str>,
) -> Result<HashMap<String, AttributeValue>, StoreError> {
    use base64::Engine;
    let json = cursor
        .strip_prefix("v1.")
        .and_then(|b| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b)
                .ok()
        })
        .ok_or(StoreError::InvalidCursor)?;
    let plain: HashMap<String, String> =
        serde_json::from_slice(&json).map_err(|_| StoreError::InvalidCursor)?;
    let as_item: HashMap<String, AttributeValue> = plain
        .into_iter()
        .map(|(k, v)| (k, AttributeValue::S(v)))
        .collect();
    let id = items::connection_id_from_key(&as_item)
        .ok()
        .filter(|id| id.tenant() == tenant)
        .ok_or(StoreError::InvalidCursor)?;
    let text = |name: &str| {
        as_item
            .get(name)
            .and_then(|v| v.as_s().ok())
            .map(String::as_str)
    };
    let expected_keys = 3 + usize::from(sort.is_some());
    let valid = as_item.len() == expected_keys
        && text(schema::SORT_KEY) == Some("CONN")
        && text(partition) == Some(value)
        && sort.is_none_or(|sort| text(sort) == Some(id.name()));
    if !valid {
        return Err(StoreError::InvalidCursor);
    }
    Ok(as_item)
}

/// The conflict a failed condition means, with the item DynamoDB returned (the
/// current one), or the error reading it.
fn conflict(id: ConnectionId, current: Option<&HashMap<String, AttributeValue>>) -> StoreError {
    match current.map(items::connection_from_item).transpose() {
        Ok(current) => StoreError::Conflict {
            id,
            current: current.map(Box::new),
        },
        Err(e) => e,
    }
}

impl DynamoStore {
    /// Writes `connection` with its version bumped, only if the stored version is
    /// still `connection.version` and `extra_condition` (with `extra_values`) holds.
    /// An `UpdateItem` of the protocol's attributes: the connection's settings
    /// (written apart, without a version) stay as stored, and the connection
    /// returned carries them.
    async fn put_next_version<const N: usize>(
        &self,
        connection: &Connection,
        extra_condition: &str,
        extra_values: [(&str, AttributeValue); N],
    ) -> Result<Connection, StoreError> {
        let stored = Connection {
            version: connection.version + 1,
            ..connection.clone()
        };
        let (update, names, mut values) = items::versioned_update(&stored, &self.due_policy);
        values.insert(
            ":read_version".to_owned(),
            AttributeValue::N(connection.version.to_string()),
        );
        values.extend(extra_values.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(&stored.id)))
            .update_expression(update)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .condition_expression(format!(
                "attribute_exists(pk) AND version = :read_version{extra_condition}"
            ))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => items::connection_from_item(item),
                None => Ok(stored),
            },
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Err(conflict(stored.id, failed.item()))
                }
                _ => Err(unavailable("", &err)),
            },
        }
    }

    /// Sets one settings attribute of a connection (`None`: removes it) and
    /// nothing else: the version does not move. `None` when there is no such
    /// connection.
    async fn set_setting(
        &self,
        id: &ConnectionId,
        attribute: &str,
        value: Option<AttributeValue>,
    ) -> Result<Option<Connection>, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#setting", attribute)
            .return_values(ReturnValue::AllNew);
        let update = match value {
            Some(value) => update
                .update_expression("SET #setting = :value")
                .expression_attribute_values(":value", value),
            None => update.update_expression("REMOVE #setting"),
        };
        match update.send().await {
            Ok(output) => output
                .attributes()
                .map(items::connection_from_item)
                .transpose(),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(None),
                _ => Err(unavailable("", &err)),
            },
        }
    }

    /// The connections with these ids as stored now (consistent reads, in the
    /// order given, those gone left out): `BatchGetItem`s of up to 100 keys,
    /// asking again for what DynamoDB left unprocessed.
    async fn get_many(&self, ids: &[ConnectionId]) -> Result<Vec<Connection>, StoreError> {
        let mut found: HashMap<ConnectionId, Connection> = HashMap::new();
        for chunk in ids.chunks(100) {
            let mut keys: Vec<_> = chunk.iter().map(connection_key).collect();
            let mut attempts = 0;
            while !keys.is_empty() {
                attempts += 1;
                if attempts > 5 {
                    return Err(StoreError::Unavailable(
                        "BatchGetItem left keys unprocessed five times".to_owned(),
                    ));
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| unavailable("", &e))?;
                for item in output
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let c = items::connection_from_item(item)?;
                    found.insert(c.id.clone(), c);
                }
                if let Some(left) = output.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                    keys = left.keys().to_vec();
                }
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Puts a connection item under `condition`; a failed condition becomes
    /// [`StoreError::Conflict`] with the item DynamoDB returns.
    async fn put_connection(
        &self,
        stored: Connection,
        condition: &str,
        values: Option<HashMap<String, AttributeValue>>,
    ) -> Result<Connection, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(items::connection_item(&stored, &self.due_policy)))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(stored),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    Err(conflict(stored.id, failed.item()))
                }
                _ => Err(unavailable("", &err)),
            },
        }
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("", &e))?;
        output.item().map(items::connection_from_item).transpose()
    }

    async fn create(&self, connection: &Connection) -> Result<Connection, StoreError> {
        let stored = Connection {
            version: 1,
            ..connection.clone()
        };
        self.put_connection(stored, "attribute_not_exists(pk)", None)
            .await
    }

    async fn update(&self, connection: &Connection) -> Result<Connection, StoreError> {
        self.put_next_version(connection, "", []).await
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let limit = query.limit.clamp(1, 1_000) as i32;
        let needs_a_person = query
            .status
            .filter(|s| *s != crate::domain::ConnectionStatus::Active);
        // Both are Queries on indexes that hold connection items only (under
        // the partition value asked for), so a page's last key is always a
        // connection's: DynamoDB's `Limit` counts items before any filter.
        // Each index partition holds one tenant's connections (see
        // `items::tenant_partition`); the attention index has several per
        // status, walked in turn, one per page.
        let (index, partition, sort, values) = match needs_a_person {
            Some(status) => (
                schema::ATTENTION_INDEX,
                schema::ATTENTION,
                None,
                (0..schema::ATTENTION_SHARDS)
                    .map(|shard| items::attention_partition(status.as_str(), shard, &query.tenant))
                    .collect::<Vec<_>>(),
            ),
            None => (
                schema::LIST_INDEX,
                schema::KIND,
                Some(schema::LIST_SORT),
                vec![items::tenant_partition(
                    items::CONNECTION_KIND,
                    &query.tenant,
                )],
            ),
        };
        let (position, inner) = match query.cursor.as_deref() {
            None => (0, None),
            Some(cursor) => split_cursor(cursor, values.len())?,
        };
        // Partitions in turn until the page's limit is looked at or none is
        // left: a page never mixes partial results of two partitions' Queries
        // with a cursor into the first.
        let (mut position, mut inner) = (position, inner);
        let mut ids = Vec::new();
        let next = loop {
            let value = &values[position];
            let start = inner
                .take()
                .map(|c| decode_cursor(c, &query.tenant, (partition, value), sort))
                .transpose()?;
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#partition = :partition")
                .expression_attribute_names("#partition", partition)
                .expression_attribute_values(":partition", AttributeValue::S(value.clone()))
                .set_exclusive_start_key(start)
                .limit(limit - ids.len() as i32)
                .send()
                .await
                .map_err(|e| unavailable("", &e))?;
            for key in output.items() {
                ids.push(items::connection_id_from_key(key)?);
            }
            if let Some(key) = output.last_evaluated_key() {
                break Some((position, Some(encode_cursor(key))));
            }
            position += 1;
            if position == values.len() {
                break None;
            }
            if ids.len() as i32 >= limit {
                break Some((position, None));
            }
        };
        // The index is eventually consistent: each connection is read as stored
        // now, and one gone or changed since is left out rather than shown stale.
        let connections = self
            .get_many(&ids)
            .await?
            .into_iter()
            .filter(|c| query.status.is_none_or(|s| c.status == s))
            .filter(|c| query.product.is_none_or(|p| c.product == p))
            .filter(|c| query.tags.iter().all(|f| c.tags.has(&f.key, &f.value)))
            .filter(|c| query.admits_death(c))
            .collect();
        Ok(ListPage {
            connections,
            next_cursor: next.map(|(position, inner)| join_cursor(position, inner, values.len())),
        })
    }

    async fn set_rate_limit(
        &self,
        id: &ConnectionId,
        rate_limit_per_minute: Option<u32>,
    ) -> Result<Option<Connection>, StoreError> {
        let value = rate_limit_per_minute.map(|limit| AttributeValue::N(limit.to_string()));
        self.set_setting(id, items::RATE_LIMIT, value).await
    }

    async fn set_tags(
        &self,
        id: &ConnectionId,
        tags: &Tags,
    ) -> Result<Option<Connection>, StoreError> {
        self.set_setting(id, items::TAGS, items::tags_value(tags))
            .await
    }

    async fn delete(&self, id: &ConnectionId) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| unavailable("", &e))?;
        Ok(output.attributes().is_some())
    }

    async fn delete_at_version(&self, id: &ConnectionId, version: u64) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .condition_expression("version = :version")
            .expression_attribute_values(":version", AttributeValue::N(version.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(unavailable("", &err)),
            },
        }
    }

    async fn claim_lease(
        &self,
        connection: &Connection,
        now_ms: i64,
    ) -> Result<Connection, StoreError> {
        self.put_next_version(
            connection,
            " AND (attribute_not_exists(lease_deadline_ms) OR lease_deadline_ms <= :now_ms)",
            [(":now_ms", AttributeValue::N(now_ms.to_string()))],
        )
        .await
    }

    async fn update_holding_lease(
        &self,
        connection: &Connection,
        lease_id: &str,
    ) -> Result<Connection, StoreError> {
        self.put_next_version(
            connection,
            " AND lease_id = :lease",
            [(":lease", AttributeValue::S(lease_id.to_owned()))],
        )
        .await
    }

    async fn due_connections(
        &self,
        shard: u32,
        now: Timestamp,
    ) -> Result<Vec<ConnectionId>, StoreError> {
        self.query_due_keys(&items::due_shard_name(shard), now)
            .await?
            .iter()
            .map(items::connection_id_from_key)
            .collect()
    }

    fn due_shards(&self) -> u32 {
        self.due_policy.shards
    }
}

#[async_trait]
impl SessionStore for DynamoStore {
    async fn create_session(&self, session: &ConnectSession) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(items::session_item(session)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(|e| unavailable("", &e))?;
        Ok(())
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<ConnectSession>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(session_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("", &e))?;
        output.item().map(items::session_from_item).transpose()
    }

    async fn bind_state(
        &self,
        id: &SessionId,
        browser_hash: &str,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<ConnectSession, SessionError> {
        // The state's lookup item first: if the session update then fails, the
        // orphan leads to a session that no longer accepts this state.
        let Some(session) = self.get_session(id).await? else {
            return Err(SessionError::Unusable);
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(items::state_item(state_hash, id, session.expires_at)))
            .send()
            .await
            .map_err(|e| unavailable("", &e))?;
        self.update_open_session(
            id,
            now,
            SessionUpdate::BindState {
                browser_hash,
                state_hash,
            },
        )
        .await
    }

    async fn session_for_state(&self, state_hash: &str) -> Result<Option<SessionId>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(items::state_key(state_hash)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("", &e))?;
        output
            .item()
            .map(items::session_id_from_state_item)
            .transpose()
    }

    async fn complete_session(
        &self,
        id: &SessionId,
        browser_hash: &str,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<ConnectSession, SessionError> {
        self.update_open_session(
            id,
            now,
            SessionUpdate::Complete {
                browser_hash,
                state_hash,
            },
        )
        .await
    }
}

/// The two conditional writes a session goes through.
enum SessionUpdate<'a> {
    /// Bind the browser (if none is bound yet, or the same one) and record the
    /// hash of a newly issued state.
    BindState {
        browser_hash: &'a str,
        state_hash: &'a str,
    },
    /// Mark completed, only if the state and browser hashes match.
    Complete {
        browser_hash: &'a str,
        state_hash: &'a str,
    },
}

impl DynamoStore {
    /// Applies `change` to a session if it exists, is not completed and has not
    /// expired at `now`; a failed condition is [`SessionError::Unusable`].
    async fn update_open_session(
        &self,
        id: &SessionId,
        now: Timestamp,
        change: SessionUpdate<'_>,
    ) -> Result<ConnectSession, SessionError> {
        let mut values = HashMap::from([
            (":false".to_owned(), AttributeValue::Bool(false)),
            (":now".to_owned(), AttributeValue::N(now.0.to_string())),
        ]);
        let (update, extra_condition, browser_hash, state_hash) = match change {
            SessionUpdate::BindState {
                browser_hash,
                state_hash,
            } => (
                "SET state_hash = :state_hash, browser_hash = :browser_hash",
                " AND (attribute_not_exists(browser_hash) OR browser_hash = :browser_hash)",
                browser_hash,
                state_hash,
            ),
            SessionUpdate::Complete {
                browser_hash,
                state_hash,
            } => {
                values.insert(":true".to_owned(), AttributeValue::Bool(true));
                (
                    "SET completed = :true",
                    " AND state_hash = :state_hash AND browser_hash = :browser_hash",
                    browser_hash,
                    state_hash,
                )
            }
        };
        values.insert(
            ":state_hash".to_owned(),
            AttributeValue::S(state_hash.to_owned()),
        );
        values.insert(
            ":browser_hash".to_owned(),
            AttributeValue::S(browser_hash.to_owned()),
        );
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(session_key(id)))
            .update_expression(update)
            .condition_expression(format!(
                "attribute_exists(pk) AND completed = :false AND expires_at > :now{extra_condition}"
            ))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(attributes) => Ok(items::session_from_item(attributes)?),
                None => Err(StoreError::Corrupt("update returned no attributes".to_owned()).into()),
            },
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(SessionError::Unusable)
            }
            Err(e) => Err(unavailable("", &e).into()),
        }
    }
}

/// Each connection's pace ([`crate::domain::RequestPace`]) on the connection's
/// own item: one conditional `UpdateItem` of its `budget_tat_ms` per request,
/// conditioned also on the access token the request would carry, so that a
/// token replaced on any instance (a refresh, a reconnect, a delete) is never
/// sent again. The protocol's writes leave the attribute alone.
#[async_trait]
impl crate::ports::RateBudget for DynamoStore {
    /// One item (`RUN#token-calls`, `PACE`) every instance shares: read, then
    /// moved on only from the value read, so two instances never both take the
    /// last call of a moment.
    async fn take_token_call(
        &self,
        pace: crate::domain::RequestPace,
        now_ms: i64,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        use crate::domain::Pace;
        let key = items::token_call_pace_key();
        for _ in 0..8 {
            let read = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| unavailable("", &e))?;
            let tat = read
                .item()
                .and_then(|i| i.get(items::BUDGET_TAT))
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok());
            let next_tat_ms = match pace.meet(tat, now_ms) {
                Pace::TooSoon { retry_after } => return Ok(Some(retry_after)),
                Pace::Allowed { next_tat_ms, .. } => next_tat_ms,
            };
            let write = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression("SET #tat = :next")
                .expression_attribute_names("#tat", items::BUDGET_TAT)
                .expression_attribute_values(":next", AttributeValue::N(next_tat_ms.to_string()));
            let write = match tat {
                Some(read) => write
                    .condition_expression("#tat = :read")
                    .expression_attribute_values(":read", AttributeValue::N(read.to_string())),
                None => write.condition_expression("attribute_not_exists(#tat)"),
            };
            match write.send().await {
                Ok(_) => return Ok(None),
                Err(err) => match err.as_service_error() {
                    // Another instance took a call in between: read again.
                    Some(UpdateItemError::ConditionalCheckFailedException(_)) => continue,
                    _ => return Err(unavailable("", &err)),
                },
            }
        }
        Err(StoreError::Unavailable(
            "the token-call pace kept changing under this write".to_owned(),
        ))
    }

    async fn take(
        &self,
        connection: &ConnectionId,
        access_token: &AccessToken,
        pace: crate::domain::RequestPace,
        wanted: u32,
        horizon_ms: i64,
        now_ms: i64,
    ) -> Result<crate::ports::BudgetDecision, StoreError> {
        use crate::domain::Pace;
        use crate::ports::BudgetDecision;
        let n = |v: i64| AttributeValue::N(v.to_string());
        let token = || AttributeValue::S(access_token.expose_secret().to_owned());
        let horizon_ms = horizon_ms.max(0);
        let mut wanted = wanted.max(1);
        // Conflicts only when another request moves the same arrival time
        // between our two writes; a few rounds settle it.
        for _ in 0..8 {
            // Busy: the arrival time is ahead of now, and `wanted` more come
            // within the tolerance and the horizon.
            let latest = now_ms + horizon_ms + pace.tolerance_ms
                - (i64::from(wanted) - 1) * pace.emission_ms;
            let busy = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(connection_key(connection)))
                .update_expression("SET #tat = #tat + :cost")
                .condition_expression("#token = :token AND #tat >= :now AND #tat <= :latest")
                .expression_attribute_names("#tat", items::BUDGET_TAT)
                .expression_attribute_names("#token", "access_token")
                .expression_attribute_values(":cost", n(i64::from(wanted) * pace.emission_ms))
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":latest", n(latest))
                .expression_attribute_values(":token", token())
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedOld)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let stored = match busy {
                Ok(updated) => {
                    // The arrival time before this write: the first reserved
                    // request conforms at it less the tolerance.
                    let old = updated
                        .attributes()
                        .and_then(|a| a.get(items::BUDGET_TAT))
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(now_ms);
                    return Ok(BudgetDecision::Allowed {
                        granted: wanted,
                        first_ms: old.max(now_ms) - pace.tolerance_ms,
                    });
                }
                Err(err) => match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                        failed.item().cloned()
                    }
                    _ => return Err(unavailable("", &err)),
                },
            };
            let Some(stored) = stored else {
                return Ok(BudgetDecision::TokenReplaced);
            };
            let holds_token = matches!(
                stored.get("access_token"),
                Some(AttributeValue::S(t)) if t.as_str() == access_token.expose_secret()
            );
            if !holds_token {
                return Ok(BudgetDecision::TokenReplaced);
            }
            let tat = match stored.get(items::BUDGET_TAT) {
                Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
                _ => None,
            };
            match pace.reserve(tat, now_ms, wanted, horizon_ms) {
                Pace::TooSoon { retry_after } if tat.is_some_and(|t| t >= now_ms) => {
                    return Ok(BudgetDecision::Exhausted { retry_after });
                }
                Pace::TooSoon { .. } => continue,
                Pace::Allowed {
                    next_tat_ms,
                    granted,
                    first_ms,
                } if tat.is_none_or(|t| t < now_ms) => {
                    // Idle: the arrival time fell behind now (or was never set).
                    let idle = self
                        .client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(connection_key(connection)))
                        .update_expression("SET #tat = :next")
                        .condition_expression(
                            "#token = :token AND (attribute_not_exists(#tat) OR #tat < :now)",
                        )
                        .expression_attribute_names("#tat", items::BUDGET_TAT)
                        .expression_attribute_names("#token", "access_token")
                        .expression_attribute_values(":next", n(next_tat_ms))
                        .expression_attribute_values(":now", n(now_ms))
                        .expression_attribute_values(":token", token())
                        .send()
                        .await;
                    match idle {
                        Ok(_) => return Ok(BudgetDecision::Allowed { granted, first_ms }),
                        Err(err)
                            if err
                                .as_service_error()
                                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                        {
                            continue;
                        }
                        Err(err) => return Err(unavailable("", &err)),
                    }
                }
                // Fewer fit than asked for (or another instance moved it since):
                // ask for what fits.
                Pace::Allowed { granted, .. } => wanted = granted,
            }
        }
        // So many requests at once that the pace kept moving under this one: the
        // connection is busy; not sending is what the budget is for.
        Ok(BudgetDecision::Exhausted {
            retry_after: std::time::Duration::from_secs(1),
        })
    }
}

/// The scheduled run's lock: one item, written only if no other run holds it
/// past now.
#[async_trait]
impl crate::ports::RunLock for DynamoStore {
    async fn try_lock(&self, holder: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        self.take_lease(items::run_lock_key(), holder, until_ms, now_ms)
            .await
    }

    async fn unlock(&self, holder: &str) -> Result<(), StoreError> {
        self.give_back_lease(items::run_lock_key(), holder).await
    }
}

/// A refresh worker's shard lease: one item per due-index shard, written like
/// the run lock.
#[async_trait]
impl crate::ports::ShardLease for DynamoStore {
    async fn try_take_shard(
        &self,
        shard: u32,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.take_lease(items::shard_lease_key(shard), holder, until_ms, now_ms)
            .await
    }

    async fn give_back_shard(&self, shard: u32, holder: &str) -> Result<(), StoreError> {
        self.give_back_lease(items::shard_lease_key(shard), holder)
            .await
    }
}

impl DynamoStore {
    /// Writes the lease item `key` for `holder` until `until_ms`, unless another
    /// holder's lease runs past `now_ms`.
    async fn take_lease(
        &self,
        mut item: HashMap<String, AttributeValue>,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        item.insert("holder".to_owned(), AttributeValue::S(holder.to_owned()));
        item.insert(
            "until_ms".to_owned(),
            AttributeValue::N(until_ms.to_string()),
        );
        item.insert(
            schema::TTL_ATTRIBUTE.to_owned(),
            AttributeValue::N((until_ms / 1000 + 86_400).to_string()),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR until_ms <= :now")
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable("", &e)),
        }
    }

    /// Deletes the lease item `key` if `holder` still holds it.
    async fn give_back_lease(
        &self,
        key: HashMap<String, AttributeValue>,
        holder: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression("holder = :holder")
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Taken over after it expired: nothing of ours to give back.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable("", &e)),
        }
    }
}
