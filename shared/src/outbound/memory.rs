//! An in-process store with the same conditional semantics as the DynamoDB adapter,
//! for `make run` and unit tests. It passes the same contract tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::domain::{
    ConnectSession, Connection, ConnectionId, DuePolicy, SessionId, Tags, Tenants, WebhookScope,
    Webhooks,
};
use crate::ports::{
    ConnectionStore, ListPage, ListQuery, RescueKey, RescuePage, RescueStore, RescuedPair,
    SessionError, SessionStore, StoreError, TenantRegistry,
};
use crate::secret::AccessToken;

/// Connections and sessions in memory, behind locks.
#[derive(Debug, Default)]
pub struct MemoryStore {
    connections: Mutex<HashMap<ConnectionId, Connection>>,
    sessions: Mutex<HashMap<String, ConnectSession>>,
    states: Mutex<HashMap<String, SessionId>>,
    /// Each connection's request pace: its theoretical arrival time (ms).
    requests: Mutex<HashMap<ConnectionId, i64>>,
    run_lock: Mutex<Option<(String, i64)>>,
    shard_leases: Mutex<HashMap<u32, (String, i64)>>,
    tenants: Mutex<Tenants>,
    webhooks: Mutex<HashMap<WebhookScope, Webhooks>>,
    /// The deployment's token-call pace: its theoretical arrival time (ms).
    token_calls: Mutex<Option<i64>>,
    due_policy: DuePolicy,
}

impl MemoryStore {
    /// An empty store with the default due policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose due index follows `policy`.
    pub fn with_due_policy(policy: DuePolicy) -> Self {
        Self {
            due_policy: policy,
            ..Self::default()
        }
    }

    /// Applies `change` to an open session for which `condition` holds.
    fn update_open_session(
        &self,
        id: &SessionId,
        now: Timestamp,
        condition: impl Fn(&ConnectSession) -> bool,
        change: impl FnOnce(&mut ConnectSession),
    ) -> Result<ConnectSession, SessionError> {
        let mut sessions = self.sessions.lock().map_err(|_| poisoned())?;
        let session = sessions
            .get_mut(id.as_str())
            .filter(|s| s.is_open(now) && condition(s))
            .ok_or(SessionError::Unusable)?;
        change(session);
        Ok(session.clone())
    }

    fn write_if(
        &self,
        connection: &Connection,
        condition: impl Fn(&Connection) -> bool,
    ) -> Result<Connection, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        match connections.get(&connection.id) {
            Some(current) if condition(current) => {
                // Settings are the settings write's alone (see the port).
                let stored = Connection {
                    version: connection.version + 1,
                    rate_limit_per_minute: current.rate_limit_per_minute,
                    tags: current.tags.clone(),
                    imported_from: current.imported_from.clone(),
                    ..connection.clone()
                };
                connections.insert(stored.id.clone(), stored.clone());
                Ok(stored)
            }
            current => Err(StoreError::Conflict {
                id: connection.id.clone(),
                current: current.cloned().map(Box::new),
            }),
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("memory store lock poisoned".to_owned())
}

#[async_trait]
impl ConnectionStore for MemoryStore {
    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        let connections = self.connections.lock().map_err(|_| poisoned())?;
        Ok(connections.get(id).cloned())
    }

    async fn create(&self, connection: &Connection) -> Result<Connection, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        if let Some(current) = connections.get(&connection.id) {
            return Err(StoreError::Conflict {
                id: connection.id.clone(),
                current: Some(Box::new(current.clone())),
            });
        }
        let stored = Connection {
            version: 1,
            ..connection.clone()
        };
        connections.insert(stored.id.clone(), stored.clone());
        Ok(stored)
    }

    async fn update(&self, connection: &Connection) -> Result<Connection, StoreError> {
        self.write_if(connection, |current| current.version == connection.version)
    }

    async fn set_rate_limit(
        &self,
        id: &ConnectionId,
        rate_limit_per_minute: Option<u32>,
    ) -> Result<Option<Connection>, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        Ok(connections.get_mut(id).map(|c| {
            c.rate_limit_per_minute = rate_limit_per_minute;
            c.clone()
        }))
    }

    async fn set_tags(
        &self,
        id: &ConnectionId,
        tags: &Tags,
    ) -> Result<Option<Connection>, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        Ok(connections.get_mut(id).map(|c| {
            c.tags = tags.clone();
            c.clone()
        }))
    }

    async fn delete(&self, id: &ConnectionId) -> Result<bool, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        // The pace lives on the connection's item in DynamoDB: it goes with it.
        self.requests.lock().map_err(|_| poisoned())?.remove(id);
        Ok(connections.remove(id).is_some())
    }

    async fn delete_at_version(&self, id: &ConnectionId, version: u64) -> Result<bool, StoreError> {
        let mut connections = self.connections.lock().map_err(|_| poisoned())?;
        if connections.get(id).is_none_or(|c| c.version != version) {
            return Ok(false);
        }
        self.requests.lock().map_err(|_| poisoned())?.remove(id);
        Ok(connections.remove(id).is_some())
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let after = query
            .cursor
            .as_deref()
            .map(|c| {
                // `after:<tenant>/<name>`: a cursor of another tenant's list
                // starts no page of this one.
                c.strip_prefix("after:")
                    .and_then(|rest| rest.split_once('/'))
                    .filter(|(tenant, _)| *tenant == query.tenant.as_str())
                    .and_then(|(_, name)| ConnectionId::parse_in(&query.tenant, name).ok())
                    .ok_or(StoreError::InvalidCursor)
            })
            .transpose()?;
        let connections = self.connections.lock().map_err(|_| poisoned())?;
        // A status is the attention index's key (only connections with it are
        // paged); product and tags filter each page, as in DynamoDB.
        let mut ids: Vec<&ConnectionId> = connections
            .iter()
            .filter(|(id, _)| *id.tenant() == query.tenant)
            .filter(|(id, _)| after.as_ref().is_none_or(|a| id.name() > a.name()))
            .filter(|(_, c)| query.status.is_none_or(|s| c.status == s))
            .map(|(id, _)| id)
            .collect();
        ids.sort_by(|a, b| a.name().cmp(b.name()));
        let limit = query.limit.max(1) as usize;
        let more = ids.len() > limit;
        let looked_at = &ids[..ids.len().min(limit)];
        let page = looked_at
            .iter()
            .filter_map(|id| connections.get(*id))
            .filter(|c| query.status.is_none_or(|s| c.status == s))
            .filter(|c| query.product.is_none_or(|p| c.product == p))
            .filter(|c| query.tags.iter().all(|f| c.tags.has(&f.key, &f.value)))
            .filter(|c| query.admits_death(c))
            .cloned()
            .collect();
        Ok(ListPage {
            connections: page,
            next_cursor: more
                .then(|| {
                    looked_at
                        .last()
                        .map(|id| format!("after:{}/{}", id.tenant(), id.name()))
                })
                .flatten(),
        })
    }

    async fn claim_lease(
        &self,
        connection: &Connection,
        now_ms: i64,
    ) -> Result<Connection, StoreError> {
        self.write_if(connection, |current| {
            current.version == connection.version && current.live_lease(now_ms).is_none()
        })
    }

    async fn update_holding_lease(
        &self,
        connection: &Connection,
        lease_id: &str,
    ) -> Result<Connection, StoreError> {
        self.write_if(connection, |current| {
            current.version == connection.version
                && current.lease.as_ref().is_some_and(|l| l.id == lease_id)
        })
    }

    async fn due_connections(
        &self,
        shard: u32,
        now: Timestamp,
    ) -> Result<Vec<ConnectionId>, StoreError> {
        let connections = self.connections.lock().map_err(|_| poisoned())?;
        let mut due: Vec<_> = connections
            .values()
            .filter(|c| self.due_policy.shard_of(c) == shard)
            .filter_map(|c| Some((self.due_policy.due_at(c)?, c.id.clone())))
            .filter(|(at, _)| *at <= now)
            .collect();
        due.sort();
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    fn due_shards(&self) -> u32 {
        self.due_policy.shards
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: &ConnectSession) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().map_err(|_| poisoned())?;
        if sessions.contains_key(session.id.as_str()) {
            return Err(StoreError::Corrupt(
                "connect session id collision".to_owned(),
            ));
        }
        sessions.insert(session.id.as_str().to_owned(), session.clone());
        Ok(())
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<ConnectSession>, StoreError> {
        let sessions = self.sessions.lock().map_err(|_| poisoned())?;
        Ok(sessions.get(id.as_str()).cloned())
    }

    async fn bind_state(
        &self,
        id: &SessionId,
        browser_hash: &str,
        state_hash: &str,
        now: Timestamp,
    ) -> Result<ConnectSession, SessionError> {
        let session = self.update_open_session(
            id,
            now,
            |s| s.browser_hash.as_deref().is_none_or(|b| b == browser_hash),
            |s| {
                s.browser_hash = Some(browser_hash.to_owned());
                s.state_hash = Some(state_hash.to_owned());
            },
        )?;
        let mut states = self.states.lock().map_err(|_| poisoned())?;
        states.insert(state_hash.to_owned(), id.clone());
        Ok(session)
    }

    async fn session_for_state(&self, state_hash: &str) -> Result<Option<SessionId>, StoreError> {
        let states = self.states.lock().map_err(|_| poisoned())?;
        Ok(states.get(state_hash).cloned())
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
            |s| {
                s.state_hash.as_deref() == Some(state_hash)
                    && s.browser_hash.as_deref() == Some(browser_hash)
            },
            |s| s.completed = true,
        )
    }
}

/// A rescue store in memory: a map by key, read consistently like S3.
#[derive(Debug, Default)]
pub struct MemoryRescueStore {
    pairs: Mutex<BTreeMap<RescueKey, RescuedPair>>,
}

#[async_trait]
impl RescueStore for MemoryRescueStore {
    async fn put_rescue(&self, rescue: &RescuedPair) -> Result<(), StoreError> {
        let mut pairs = self.pairs.lock().map_err(|_| poisoned())?;
        pairs.insert(rescue.key(), rescue.clone());
        Ok(())
    }

    async fn find_rescue(&self, key: &RescueKey) -> Result<Option<RescuedPair>, StoreError> {
        let pairs = self.pairs.lock().map_err(|_| poisoned())?;
        Ok(pairs.get(key).cloned())
    }

    async fn list_rescues(&self, after: Option<&str>) -> Result<RescuePage, StoreError> {
        // One page holds everything: a process's memory holds few rescued pairs.
        if after.is_some() {
            return Err(StoreError::InvalidCursor);
        }
        let pairs = self.pairs.lock().map_err(|_| poisoned())?;
        Ok(RescuePage {
            keys: pairs.keys().cloned().collect(),
            next: None,
        })
    }

    async fn delete_rescue(&self, key: &RescueKey) -> Result<(), StoreError> {
        let mut pairs = self.pairs.lock().map_err(|_| poisoned())?;
        pairs.remove(key);
        Ok(())
    }
}

#[async_trait]
impl crate::ports::RateBudget for MemoryStore {
    async fn take_token_call(
        &self,
        pace: crate::domain::RequestPace,
        now_ms: i64,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let mut tat = self.token_calls.lock().map_err(|_| poisoned())?;
        match pace.meet(*tat, now_ms) {
            crate::domain::Pace::Allowed { next_tat_ms, .. } => {
                *tat = Some(next_tat_ms);
                Ok(None)
            }
            crate::domain::Pace::TooSoon { retry_after } => Ok(Some(retry_after)),
        }
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
        let connections = self.connections.lock().map_err(|_| poisoned())?;
        let holds_token = connections
            .get(connection)
            .is_some_and(|c| c.tokens.access_token == *access_token);
        if !holds_token {
            return Ok(BudgetDecision::TokenReplaced);
        }
        let mut arrivals = self.requests.lock().map_err(|_| poisoned())?;
        match pace.reserve(
            arrivals.get(connection).copied(),
            now_ms,
            wanted,
            horizon_ms,
        ) {
            Pace::Allowed {
                next_tat_ms,
                granted,
                first_ms,
            } => {
                arrivals.insert(connection.clone(), next_tat_ms);
                Ok(BudgetDecision::Allowed { granted, first_ms })
            }
            Pace::TooSoon { retry_after } => Ok(BudgetDecision::Exhausted { retry_after }),
        }
    }
}

#[async_trait]
impl TenantRegistry for MemoryStore {
    async fn tenants(&self) -> Result<Tenants, StoreError> {
        Ok(self.tenants.lock().map_err(|_| poisoned())?.clone())
    }

    async fn replace_tenants(&self, tenants: &Tenants) -> Result<Option<Tenants>, StoreError> {
        let mut stored = self.tenants.lock().map_err(|_| poisoned())?;
        if stored.version != tenants.version {
            return Ok(None);
        }
        *stored = tenants.at_version(tenants.version + 1);
        Ok(Some(stored.clone()))
    }
}

#[async_trait]
impl crate::ports::WebhookRegistry for MemoryStore {
    async fn webhooks(&self, scope: &WebhookScope) -> Result<Webhooks, StoreError> {
        let stored = self.webhooks.lock().map_err(|_| poisoned())?;
        Ok(stored.get(scope).cloned().unwrap_or_default())
    }

    async fn replace_webhooks(
        &self,
        scope: &WebhookScope,
        webhooks: &Webhooks,
    ) -> Result<Option<Webhooks>, StoreError> {
        let mut stored = self.webhooks.lock().map_err(|_| poisoned())?;
        let current = stored.entry(scope.clone()).or_default();
        if current.version != webhooks.version {
            return Ok(None);
        }
        *current = Webhooks {
            version: webhooks.version + 1,
            endpoints: webhooks.endpoints.clone(),
        };
        Ok(Some(current.clone()))
    }
}

#[async_trait]
impl crate::ports::ShardLease for MemoryStore {
    async fn try_take_shard(
        &self,
        shard: u32,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut leases = self.shard_leases.lock().map_err(|_| poisoned())?;
        if leases.get(&shard).is_some_and(|(_, until)| *until > now_ms) {
            return Ok(false);
        }
        leases.insert(shard, (holder.to_owned(), until_ms));
        Ok(true)
    }

    async fn give_back_shard(&self, shard: u32, holder: &str) -> Result<(), StoreError> {
        let mut leases = self.shard_leases.lock().map_err(|_| poisoned())?;
        if leases.get(&shard).is_some_and(|(h, _)| h == holder) {
            leases.remove(&shard);
        }
        Ok(())
    }
}

#[async_trait]
impl crate::ports::RunLock for MemoryStore {
    async fn try_lock(&self, holder: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        let mut lock = self.run_lock.lock().map_err(|_| poisoned())?;
        if lock.as_ref().is_some_and(|(_, until)| *until > now_ms) {
            return Ok(false);
        }
        *lock = Some((holder.to_owned(), until_ms));
        Ok(true)
    }

    async fn unlock(&self, holder: &str) -> Result<(), StoreError> {
        let mut lock = self.run_lock.lock().map_err(|_| poisoned())?;
        if lock.as_ref().is_some_and(|(h, _)| h == holder) {
            *lock = None;
        }
        Ok(())
    }
}

/// The refresh work queue in memory: what a scheduled run handed out waits
/// here until an in-process worker takes it (local runs, tests, benchmarks).
#[derive(Debug, Default)]
pub struct MemoryWorkQueue {
    queued: Mutex<std::collections::VecDeque<crate::ports::ShardWork>>,
}

impl MemoryWorkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The oldest work waiting, if any.
    pub fn take(&self) -> Option<crate::ports::ShardWork> {
        self.queued.lock().ok()?.pop_front()
    }
}

#[async_trait]
impl crate::ports::RefreshWorkQueue for MemoryWorkQueue {
    async fn hand_out(
        &self,
        work: &[crate::ports::ShardWork],
    ) -> Result<usize, crate::ports::WorkQueueError> {
        let mut queued = self
            .queued
            .lock()
            .map_err(|_| crate::ports::WorkQueueError("poisoned".to_owned()))?;
        queued.extend(work.iter().cloned());
        Ok(work.len())
    }
}

/// The delivery queue in memory: what was queued, for the tests and the
/// local run to take.
#[derive(Debug, Default)]
pub struct MemoryDeliveryQueue {
    queued: Mutex<Vec<crate::ports::PendingDelivery>>,
}

impl MemoryDeliveryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything queued since the last take.
    pub fn take(&self) -> Vec<crate::ports::PendingDelivery> {
        self.queued
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

#[async_trait]
impl crate::ports::DeliveryQueue for MemoryDeliveryQueue {
    async fn queue(
        &self,
        deliveries: &[crate::ports::PendingDelivery],
    ) -> Result<(), crate::ports::QueueError> {
        self.queued
            .lock()
            .map_err(|_| crate::ports::QueueError("lock poisoned".to_owned()))?
            .extend_from_slice(deliveries);
        Ok(())
    }

    async fn retry_in(
        &self,
        _receipt: &str,
        _delay: std::time::Duration,
    ) -> Result<(), crate::ports::QueueError> {
        Ok(())
    }
}
