//! A store wrapper (around the real DynamoDB adapter in tests) that counts reads
//! and writes and can inject DynamoDB failures into writes made under a lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use connector::clock::Timestamp;
use connector::domain::{Connection, ConnectionId};
use connector::ports::{ConnectionStore, RescueStore, RescuedPair, StoreError};

/// Operation counts.
#[derive(Debug, Default)]
pub struct Counts {
    /// Item reads (GetItem) and queries.
    pub reads: AtomicU64,
    /// Item writes (PutItem, DeleteItem), failed ones included.
    pub writes: AtomicU64,
}

/// Both store roles the refresh engine uses.
pub trait RefreshStore: ConnectionStore + RescueStore {}
impl<T: ConnectionStore + RescueStore> RefreshStore for T {}

/// A store, counted, with switchable commit failures.
#[derive(Clone)]
pub struct InstrumentedStore {
    inner: Arc<dyn RefreshStore>,
    /// Reads and writes so far.
    pub counts: Arc<Counts>,
    /// While true, every write made under a lease (`update_holding_lease`: refresh
    /// commits and lease releases) fails as DynamoDB throttling would.
    pub fail_commits: Arc<AtomicBool>,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: impl RefreshStore + 'static) -> Self {
        Self {
            inner: Arc::new(inner),
            counts: Arc::default(),
            fail_commits: Arc::default(),
        }
    }

    fn read(&self) {
        self.counts.reads.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self) {
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl ConnectionStore for InstrumentedStore {
    async fn get(&self, id: &ConnectionId) -> Result<Option<Connection>, StoreError> {
        self.read();
        self.inner.get(id).await
    }

    async fn create(&self, connection: &Connection) -> Result<Connection, StoreError> {
        self.write();
        self.inner.create(connection).await
    }

    async fn update(&self, connection: &Connection) -> Result<Connection, StoreError> {
        self.write();
        self.inner.update(connection).await
    }

    async fn claim_lease(
        &self,
        connection: &Connection,
        now_ms: i64,
    ) -> Result<Connection, StoreError> {
        self.write();
        self.inner.claim_lease(connection, now_ms).await
    }

    async fn update_holding_lease(
        &self,
        connection: &Connection,
        lease_id: &str,
    ) -> Result<Connection, StoreError> {
        self.write();
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "ProvisionedThroughputExceededException: injected by the test".to_owned(),
            ));
        }
        self.inner.update_holding_lease(connection, lease_id).await
    }

    async fn due_connections(
        &self,
        shard: u32,
        now: Timestamp,
    ) -> Result<Vec<ConnectionId>, StoreError> {
        self.read();
        self.inner.due_connections(shard, now).await
    }

    fn due_shards(&self) -> u32 {
        self.inner.due_shards()
    }
}

#[async_trait]
impl RescueStore for InstrumentedStore {
    async fn put_rescue(&self, rescue: &RescuedPair) -> Result<(), StoreError> {
        self.write();
        self.inner.put_rescue(rescue).await
    }

    async fn rescues(&self) -> Result<Vec<RescuedPair>, StoreError> {
        self.read();
        self.inner.rescues().await
    }

    async fn rescues_for(
        &self,
        connection_id: &ConnectionId,
    ) -> Result<Vec<RescuedPair>, StoreError> {
        self.read();
        self.inner.rescues_for(connection_id).await
    }

    async fn delete_rescue(
        &self,
        connection_id: &ConnectionId,
        lease_id: &str,
    ) -> Result<(), StoreError> {
        self.write();
        self.inner.delete_rescue(connection_id, lease_id).await
    }
}
