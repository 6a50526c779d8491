//! Wrappers (around the real adapters on moto in tests) that count store calls and
//! inject the failures and slow calls the protocol must survive: failing writes,
//! a slow read, claim, credentials read or commit, a refusing rescue store.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use connector::clock::Timestamp;
use connector::domain::{Connection, ConnectionId, Product};
use connector::outbound::rescue_store::S3RescueStore;
use connector::ports::{
    ClientCredentials, ConnectionStore, CredentialSource, CredentialsError, ListPage, ListQuery,
    RescueKey, RescuePage, RescueStore, RescuedPair, StoreError,
};

/// Operation counts.
#[derive(Debug, Default)]
pub struct Counts {
    /// Item reads (GetItem) and queries.
    pub reads: AtomicU64,
    /// Item writes (PutItem, DeleteItem), failed ones included.
    pub writes: AtomicU64,
}

/// A one-shot delay: the next call of one kind takes this much longer.
#[derive(Debug, Default)]
struct OneShot(Mutex<Option<Duration>>);

impl OneShot {
    fn set(&self, delay: Duration) {
        *self.0.lock().expect("lock") = Some(delay);
    }

    async fn play(&self) {
        let delay = self.take();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    fn take(&self) -> Option<Duration> {
        self.0.lock().expect("lock").take()
    }
}

/// Runs `write` `delay` from now in a task of its own, and waits for it: a
/// caller that gives up first (its deadline came) abandons the wait, not the
/// write, which lands late as an abandoned AWS write may. `landed` counts it.
async fn land_late<T: Send + 'static>(
    delay: Duration,
    landed: Arc<tokio::sync::watch::Sender<u64>>,
    write: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let result = write.await;
        landed.send_modify(|n| *n += 1);
        result
    })
    .await
    .unwrap_or_else(|e| Err(StoreError::Unavailable(e.to_string())))
}

fn throttled() -> StoreError {
    StoreError::Unavailable(
        "ProvisionedThroughputExceededException: injected by the test".to_owned(),
    )
}

/// A store, counted, with switchable failures and one-shot slow calls.
#[derive(Clone)]
pub struct InstrumentedStore {
    inner: Arc<dyn ConnectionStore>,
    /// Reads and writes so far.
    pub counts: Arc<Counts>,
    /// While true, every write made under a lease (`update_holding_lease`: refresh
    /// commits and lease releases) fails as DynamoDB throttling would.
    pub fail_commits: Arc<AtomicBool>,
    /// While true, every write under a lease is applied and then answered as a
    /// failure (throttling), as when DynamoDB's answer is lost and every retry
    /// fails too.
    pub lose_commit_answers: Arc<AtomicBool>,
    /// While true, every plain update (status writes, restores) fails likewise.
    pub fail_updates: Arc<AtomicBool>,
    slow_get: Arc<OneShot>,
    slow_claim_answer: Arc<OneShot>,
    slow_commit: Arc<OneShot>,
    slow_update: Arc<OneShot>,
    late_commit: Arc<OneShot>,
    late_update: Arc<OneShot>,
    /// Late writes landed so far (see [`InstrumentedStore::land_late_next_commit`]).
    pub landed_late: Arc<tokio::sync::watch::Sender<u64>>,
    claims: Arc<tokio::sync::watch::Sender<u64>>,
    lease_ends: Arc<Mutex<Vec<i64>>>,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: impl ConnectionStore + 'static) -> Self {
        Self {
            inner: Arc::new(inner),
            counts: Arc::default(),
            fail_commits: Arc::default(),
            lose_commit_answers: Arc::default(),
            fail_updates: Arc::default(),
            slow_get: Arc::default(),
            slow_claim_answer: Arc::default(),
            slow_commit: Arc::default(),
            slow_update: Arc::default(),
            late_commit: Arc::default(),
            late_update: Arc::default(),
            landed_late: Arc::new(tokio::sync::watch::channel(0).0),
            claims: Arc::new(tokio::sync::watch::channel(0).0),
            lease_ends: Arc::default(),
        }
    }

    /// The next read waits `delay` before reading (it reads what is there then).
    pub fn slow_next_get(&self, delay: Duration) {
        self.slow_get.set(delay);
    }

    /// The next lease claim lands at once, but its answer reaches the caller
    /// `delay` later.
    pub fn slow_next_claim_answer(&self, delay: Duration) {
        self.slow_claim_answer.set(delay);
    }

    /// The next write under a lease waits `delay` before it is made (dropped, never
    /// made, if the caller gives up first).
    pub fn slow_next_commit(&self, delay: Duration) {
        self.slow_commit.set(delay);
    }

    /// The next plain update (a status write, a restore) waits `delay` before it
    /// is made.
    pub fn slow_next_update(&self, delay: Duration) {
        self.slow_update.set(delay);
    }

    /// The next write under a lease (a commit) is made `delay` from now, whether
    /// or not its caller is still waiting then.
    pub fn land_late_next_commit(&self, delay: Duration) {
        self.late_commit.set(delay);
    }

    /// The next plain update (a status write) is made `delay` from now, whether or
    /// not its caller is still waiting then.
    pub fn land_late_next_update(&self, delay: Duration) {
        self.late_update.set(delay);
    }

    /// Resolves once at least `count` late writes have landed (this store's and
    /// any queue sharing `landed_late`).
    pub async fn wait_for_late_landings(&self, count: u64) {
        let mut watch = self.landed_late.subscribe();
        let _ = watch.wait_for(|n| *n >= count).await;
    }

    /// Resolves once at least `count` lease claims have landed.
    pub async fn wait_for_claims(&self, count: u64) {
        let mut watch = self.claims.subscribe();
        let _ = watch.wait_for(|n| *n >= count).await;
    }

    /// The deadline (ms since the epoch) of every lease claimed so far.
    pub fn claimed_lease_ends(&self) -> Vec<i64> {
        self.lease_ends.lock().expect("lock").clone()
    }

    /// Lease claims landed so far.
    pub fn claims(&self) -> u64 {
        *self.claims.borrow()
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
        self.slow_get.play().await;
        self.read();
        self.inner.get(id).await
    }

    async fn create(&self, connection: &Connection) -> Result<Connection, StoreError> {
        self.write();
        self.inner.create(connection).await
    }

    async fn update(&self, connection: &Connection) -> Result<Connection, StoreError> {
        if let Some(delay) = self.late_update.take() {
            self.write();
            let (inner, c) = (self.inner.clone(), connection.clone());
            return land_late(delay, self.landed_late.clone(), async move {
                inner.update(&c).await
            })
            .await;
        }
        self.slow_update.play().await;
        self.write();
        if self.fail_updates.load(Ordering::SeqCst) {
            return Err(throttled());
        }
        self.inner.update(connection).await
    }

    async fn set_rate_limit(
        &self,
        id: &ConnectionId,
        rate_limit_per_minute: Option<u32>,
    ) -> Result<Option<Connection>, StoreError> {
        self.write();
        self.inner.set_rate_limit(id, rate_limit_per_minute).await
    }

    async fn set_tags(
        &self,
        id: &ConnectionId,
        tags: &connector::domain::Tags,
    ) -> Result<Option<Connection>, StoreError> {
        self.write();
        self.inner.set_tags(id, tags).await
    }

    async fn delete(&self, id: &ConnectionId) -> Result<bool, StoreError> {
        self.write();
        self.inner.delete(id).await
    }

    async fn delete_at_version(&self, id: &ConnectionId, version: u64) -> Result<bool, StoreError> {
        self.write();
        self.inner.delete_at_version(id, version).await
    }

    async fn claim_lease(
        &self,
        connection: &Connection,
        now_ms: i64,
    ) -> Result<Connection, StoreError> {
        self.write();
        let claimed = self.inner.claim_lease(connection, now_ms).await;
        if let Ok(stored) = &claimed {
            if let Some(lease) = &stored.lease {
                self.lease_ends
                    .lock()
                    .expect("lock")
                    .push(lease.deadline_ms);
            }
            self.claims.send_modify(|n| *n += 1);
            self.slow_claim_answer.play().await;
        }
        claimed
    }

    async fn update_holding_lease(
        &self,
        connection: &Connection,
        lease_id: &str,
    ) -> Result<Connection, StoreError> {
        if let Some(delay) = self.late_commit.take() {
            self.write();
            let (inner, c, lease) = (self.inner.clone(), connection.clone(), lease_id.to_owned());
            return land_late(delay, self.landed_late.clone(), async move {
                inner.update_holding_lease(&c, &lease).await
            })
            .await;
        }
        self.slow_commit.play().await;
        self.write();
        if self.fail_commits.load(Ordering::SeqCst) {
            return Err(throttled());
        }
        let result = self.inner.update_holding_lease(connection, lease_id).await;
        if self.lose_commit_answers.load(Ordering::SeqCst) {
            return Err(throttled());
        }
        result
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

    async fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        self.read();
        self.inner.list(query).await
    }
}

/// A rescue store (S3 on moto) whose puts can be made to fail or land late, and
/// whose lookups can be made slow.
#[derive(Clone)]
pub struct InstrumentedRescues {
    inner: Arc<S3RescueStore>,
    /// While true, every put fails as an unreachable S3 would.
    pub fail_puts: Arc<AtomicBool>,
    /// While true, every lookup fails as an unreachable S3 would.
    pub fail_finds: Arc<AtomicBool>,
    found: Arc<tokio::sync::watch::Sender<u64>>,
    slow_find: Arc<OneShot>,
    late_put: Arc<OneShot>,
    landed_late: Arc<std::sync::Mutex<Option<Arc<tokio::sync::watch::Sender<u64>>>>>,
}

impl InstrumentedRescues {
    /// Wraps `inner`.
    pub fn new(inner: S3RescueStore) -> Self {
        Self {
            inner: Arc::new(inner),
            fail_puts: Arc::default(),
            fail_finds: Arc::default(),
            found: Arc::new(tokio::sync::watch::channel(0).0),
            slow_find: Arc::default(),
            late_put: Arc::default(),
            landed_late: Arc::default(),
        }
    }

    /// The store underneath (another instance's clients would reach the same
    /// bucket).
    pub fn inner(&self) -> &S3RescueStore {
        &self.inner
    }

    /// The next put is made `delay` from now, whether or not its caller is still
    /// waiting then; its landing counts in `landed` (a store's `landed_late`).
    pub fn land_late_next_put(
        &self,
        delay: Duration,
        landed: Arc<tokio::sync::watch::Sender<u64>>,
    ) {
        self.late_put.set(delay);
        *self.landed_late.lock().expect("lock") = Some(landed);
    }

    /// The next lookup that finds a pair hands it back `delay` after reading it.
    pub fn slow_next_find(&self, delay: Duration) {
        self.slow_find.set(delay);
    }

    /// Resolves once at least `count` lookups have found a pair.
    pub async fn wait_for_found(&self, count: u64) {
        let mut watch = self.found.subscribe();
        let _ = watch.wait_for(|n| *n >= count).await;
    }

    /// Every pair waiting now.
    pub async fn peek(&self) -> Vec<RescuedPair> {
        let page = self
            .inner
            .list_rescues(None)
            .await
            .expect("bucket listable");
        let mut pairs = Vec::new();
        for key in page.keys {
            if let Some(pair) = self.inner.find_rescue(&key).await.expect("bucket readable") {
                pairs.push(pair);
            }
        }
        pairs
    }
}

#[async_trait]
impl RescueStore for InstrumentedRescues {
    async fn put_rescue(&self, rescue: &RescuedPair) -> Result<(), StoreError> {
        if let Some(delay) = self.late_put.take() {
            let landed = self
                .landed_late
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_else(|| Arc::new(tokio::sync::watch::channel(0).0));
            let (inner, rescue) = (self.inner.clone(), rescue.clone());
            return land_late(
                delay,
                landed,
                async move { inner.put_rescue(&rescue).await },
            )
            .await;
        }
        if self.fail_puts.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "rescue store: injected by the test".to_owned(),
            ));
        }
        self.inner.put_rescue(rescue).await
    }

    async fn find_rescue(&self, key: &RescueKey) -> Result<Option<RescuedPair>, StoreError> {
        if self.fail_finds.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "rescue store: injected by the test".to_owned(),
            ));
        }
        let found = self.inner.find_rescue(key).await?;
        if found.is_some() {
            self.found.send_modify(|n| *n += 1);
            if let Some(delay) = self.slow_find.take() {
                tokio::time::sleep(delay).await;
            }
        }
        Ok(found)
    }

    async fn list_rescues(&self, after: Option<&str>) -> Result<RescuePage, StoreError> {
        self.inner.list_rescues(after).await
    }

    async fn delete_rescue(&self, key: &RescueKey) -> Result<(), StoreError> {
        self.inner.delete_rescue(key).await
    }
}

/// Credentials whose next read can be made slow.
#[derive(Clone)]
pub struct SlowCredentials {
    inner: Arc<dyn CredentialSource>,
    slow_next: Arc<OneShot>,
    reads: Arc<tokio::sync::watch::Sender<u64>>,
}

impl SlowCredentials {
    /// Wraps `inner`.
    pub fn new(inner: impl CredentialSource + 'static) -> Self {
        Self {
            inner: Arc::new(inner),
            slow_next: Arc::default(),
            reads: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// The next read takes `delay` longer.
    pub fn slow_next_read(&self, delay: Duration) {
        self.slow_next.set(delay);
    }

    /// Resolves once at least `count` reads have started.
    pub async fn wait_for_reads(&self, count: u64) {
        let mut watch = self.reads.subscribe();
        let _ = watch.wait_for(|n| *n >= count).await;
    }

    /// Reads started so far.
    pub fn reads(&self) -> u64 {
        *self.reads.borrow()
    }
}

#[async_trait]
impl CredentialSource for SlowCredentials {
    async fn credentials(&self, product: Product) -> Result<ClientCredentials, CredentialsError> {
        self.reads.send_modify(|n| *n += 1);
        self.slow_next.play().await;
        self.inner.credentials(product).await
    }

    async fn reload(&self) -> Result<(), CredentialsError> {
        self.inner.reload().await
    }
}
