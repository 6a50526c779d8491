//! One scheduled refresher run: restore pairs waiting in the rescue store, find due connections on the
//! sparse due index (shard by shard, never a scan), refresh them through the
//! protocol with bounded concurrency, and report a summary.
//!
//! Deployed, the run is split: the scheduled invocation prepares and hands each
//! due-index shard to the refresh work queue ([`dispatch`]); the refresher
//! function, consuming that queue with a maximum concurrency, refreshes one
//! shard per invocation under the shard's lease ([`work_shard`]). Without a
//! queue, one invocation does it all ([`run`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::domain::{ConnectionId, ConnectionStatus, TenantId};
use crate::ports::{
    LegacyRescueQueue, ListQuery, RefreshWorkQueue, RescueStore, ShardLease, ShardWork,
};
use crate::services::refresh_protocol::{RefreshEngine, RefreshFailure, RefreshRequest, Refreshed};

/// How a run is bounded.
#[derive(Clone, Debug)]
pub struct RunLimits {
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// Milliseconds since the epoch by which every refresh the run starts must be
    /// over (the Lambda's deadline less a margin to report), if any. A refresh is
    /// started only while a whole lease still fits before it.
    pub finish_by_ms: Option<i64>,
    /// The tenants whose connections needing a person the run counts: the
    /// default tenant and every configured one.
    pub counted_tenants: Vec<TenantId>,
}

/// What a run did; logged as JSON and emitted as CloudWatch EMF metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Connections the due index returned.
    pub due: u64,
    /// Refreshed by this run.
    pub refreshed: u64,
    /// Already fresh (refreshed by someone else, or no longer due).
    pub fresh_already: u64,
    /// Skipped because a backoff from an earlier failure has not passed.
    pub backing_off: u64,
    /// RD did not process the call (backing off now).
    pub not_processed: u64,
    /// The outcome was unknown (same token retried later).
    pub ambiguous: u64,
    /// Newly or already needing re-authorization.
    pub needs_reauth: u64,
    /// Newly or already possibly lost.
    pub possibly_lost: u64,
    /// Connections in `needs_reauth` when the run started, counted on the
    /// attention index (up to [`MAX_COUNTED`]): the dashboard's gauge.
    pub connections_needing_reauth: u64,
    /// Connections in `possibly_lost` when the run started, counted likewise.
    pub connections_possibly_lost: u64,
    /// Rescued pairs restored.
    pub restored_from_rescue: u64,
    /// Rescued pairs moved from the SQS queue of earlier versions to the rescue store.
    pub moved_from_legacy_queue: u64,
    /// Rescued pairs still waiting after the run's sweep (their restore failed).
    pub rescued_pairs_waiting: u64,
    /// How long the oldest of those has waited, in seconds (0 when none).
    pub oldest_rescued_pair_age_seconds: u64,
    /// Refreshes that met RD's refusal of our client credentials.
    pub deployment_credential_errors: u64,
    /// Not started, or given back unspent, because too little time was left.
    pub out_of_time: u64,
    /// Not started because the deployment's token-call cap was reached (the
    /// next run takes them).
    pub capped: u64,
    /// Store or credential failures.
    pub errors: u64,
    /// Due-index shards queried.
    pub shards: u64,
    /// Due-index shard queries that failed.
    pub shard_errors: u64,
    /// Due connections left for the next run (time ran short, or credentials were refused).
    pub left_for_next_run: u64,
    /// 1 when this invocation stood down because another run held the run lock.
    pub overlapping_run_skipped: u64,
    /// Due-index shards a scheduled run handed to the refresh workers.
    pub shards_handed_out: u64,
    /// 1 when a worker stood down because another held its shard's lease.
    pub shard_leased_elsewhere: u64,
}

impl RunSummary {
    /// The summary as one CloudWatch Embedded Metric Format document.
    pub fn emf(&self, timestamp_ms: i64) -> serde_json::Value {
        let mut doc = serde_json::to_value(self).unwrap_or_default();
        let names: Vec<_> = doc
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        doc["_aws"] = serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": crate::metrics::REFRESHER_NAMESPACE,
                "Dimensions": [[]],
                "Metrics": names.iter().map(|n| serde_json::json!({"Name": n, "Unit": unit_of(n)})).collect::<Vec<_>>(),
            }],
        });
        doc
    }
}

/// The CloudWatch unit of the summary's field `name`: every counter is a count,
/// an age a number of seconds.
fn unit_of(name: &str) -> &'static str {
    if name.ends_with("_seconds") {
        "Seconds"
    } else {
        "Count"
    }
}

impl RunSummary {
    /// Adds `other`'s counts to these (the shards of one batch of work
    /// messages). The gauges (connections needing a person, rescued pairs
    /// waiting) are a scheduled run's alone and are kept, not added.
    pub fn add(&mut self, other: &RunSummary) {
        self.due += other.due;
        self.refreshed += other.refreshed;
        self.fresh_already += other.fresh_already;
        self.backing_off += other.backing_off;
        self.not_processed += other.not_processed;
        self.ambiguous += other.ambiguous;
        self.needs_reauth += other.needs_reauth;
        self.possibly_lost += other.possibly_lost;
        self.restored_from_rescue += other.restored_from_rescue;
        self.moved_from_legacy_queue += other.moved_from_legacy_queue;
        self.deployment_credential_errors += other.deployment_credential_errors;
        self.out_of_time += other.out_of_time;
        self.capped += other.capped;
        self.errors += other.errors;
        self.shards += other.shards;
        self.shard_errors += other.shard_errors;
        self.left_for_next_run += other.left_for_next_run;
        self.overlapping_run_skipped += other.overlapping_run_skipped;
        self.shards_handed_out += other.shards_handed_out;
        self.shard_leased_elsewhere += other.shard_leased_elsewhere;
    }

    /// Whether the run could not look for due connections at all (every shard
    /// query failed): a failed run, whatever else it did.
    pub fn due_index_unavailable(&self) -> bool {
        self.shards > 0 && self.shard_errors == self.shards
    }
}

/// The most connections of one status a run counts: a gauge that reads "at
/// least 2,000" past that costs no more than twenty queries a run.
pub const MAX_COUNTED: u64 = 2_000;

/// Connections with `status` in `tenants`, on the attention index (no scan),
/// up to [`MAX_COUNTED`] in all.
async fn count_with_status(
    engine: &RefreshEngine,
    tenants: &[TenantId],
    status: ConnectionStatus,
) -> Result<u64, crate::ports::StoreError> {
    let mut counted = 0;
    for tenant in tenants {
        let mut query = ListQuery {
            tenant: tenant.clone(),
            status: Some(status),
            product: None,
            tags: Vec::new(),
            dies_by: None,
            cursor: None,
            limit: 100,
        };
        loop {
            if counted >= MAX_COUNTED {
                return Ok(MAX_COUNTED);
            }
            let page = engine.store.list(&query).await?;
            counted += page.connections.len() as u64;
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
    }
    Ok(counted.min(MAX_COUNTED))
}

/// Receive calls one move makes at most (10 pairs each).
const MAX_LEGACY_BATCHES: usize = 100;

/// What moving the legacy queue's pairs did.
#[derive(Clone, Debug, Default)]
pub struct MoveReport {
    /// Pairs saved in the rescue store and deleted from the queue.
    pub moved: u64,
    /// Queue or store failures (the pairs concerned stay queued).
    pub errors: u64,
}

/// Moves the pairs the SQS queue of earlier versions holds to the rescue store:
/// each is saved there before its message is deleted, so a failure between the two
/// leaves it in both (saving it twice is harmless: same key, same pair). An empty
/// receive only ends this move; no refresh decides anything on it.
pub async fn move_legacy_rescues(
    queue: &dyn LegacyRescueQueue,
    store: &dyn RescueStore,
) -> MoveReport {
    let mut report = MoveReport::default();
    for _ in 0..MAX_LEGACY_BATCHES {
        let batch = match queue.receive_rescues(10).await {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "could not read the legacy rescue queue");
                report.errors += 1;
                break;
            }
        };
        for received in batch {
            if let Err(e) = store.put_rescue(&received.rescue).await {
                tracing::error!(connection_id = %received.rescue.connection_id, error = %e, "could not move a rescued pair to the rescue store; it stays queued");
                report.errors += 1;
                continue;
            }
            if let Err(e) = queue.delete_rescue(&received.receipt).await {
                tracing::warn!(connection_id = %received.rescue.connection_id, error = %e, "could not delete a moved rescue message");
            }
            report.moved += 1;
        }
    }
    report
}

/// Runs the refresher once, in this invocation: prepares, then refreshes every
/// shard's due connections. Returns only after every refresh it started has
/// committed, rescued or given back its lease.
pub async fn run(engine: &RefreshEngine, limits: &RunLimits) -> RunSummary {
    let summary = Arc::new(Mutex::new(prepare(engine, limits).await));
    let shards = engine.store.due_shards();
    let mut due = Vec::new();
    for shard in 0..shards {
        due.extend(query_shard(engine, shard, &summary).await);
    }
    refresh_due(engine, limits, due, summary).await
}

/// A scheduled run that hands its shards to the refresh workers: prepares (the
/// rescue store, the gauges), then queues one message per due-index shard. When
/// the queue refuses them, the run refreshes every shard itself rather than
/// leave a connection to age.
pub async fn dispatch(
    engine: &RefreshEngine,
    limits: &RunLimits,
    queue: &dyn RefreshWorkQueue,
    run_id: &str,
) -> RunSummary {
    let shards = engine.store.due_shards();
    let work: Vec<ShardWork> = (0..shards)
        .map(|shard| ShardWork {
            shard,
            run: run_id.to_owned(),
        })
        .collect();
    let handed_out = match queue.hand_out(&work).await {
        Ok(queued) if queued == work.len() => queued,
        Ok(queued) => {
            // Some of a batch were refused: the next run hands them out again
            // (five minutes is far inside every connection's margin).
            tracing::warn!(
                queued,
                shards,
                "the work queue took only part of the shards"
            );
            queued
        }
        Err(e) => {
            tracing::error!(error = %e, "could not hand out the shards; this run refreshes them itself");
            let mut summary = run(engine, limits).await;
            summary.errors += 1;
            return summary;
        }
    };
    let mut summary = prepare(engine, limits).await;
    summary.shards_handed_out = handed_out as u64;
    if handed_out < work.len() {
        summary.errors += 1;
    }
    tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "refresher run handed out its shards");
    summary
}

/// A refresh worker's part of a run: `shard`'s due connections, under the
/// shard's lease until the invocation's finish line. Stands down when another
/// worker holds the lease; a worker that dies keeps it only until its own
/// deadline, and the next run's message for the shard takes it from there.
pub async fn work_shard(
    engine: &RefreshEngine,
    lease: &dyn ShardLease,
    limits: &RunLimits,
    shard: u32,
    holder: &str,
) -> RunSummary {
    let now_ms = engine.clock.now_ms();
    let until_ms = limits
        .finish_by_ms
        .unwrap_or(now_ms + UNBOUNDED_SHARD_LEASE.as_millis() as i64);
    match lease.try_take_shard(shard, holder, until_ms, now_ms).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(
                shard,
                "another worker holds this shard; this one stands down"
            );
            return RunSummary {
                shard_leased_elsewhere: 1,
                ..RunSummary::default()
            };
        }
        Err(e) => {
            // A second worker on a shard is wasteful, not unsafe (the protocol
            // holds): work rather than skip when the lease cannot be checked.
            tracing::warn!(shard, error = %e, "could not take the shard's lease; working anyway");
        }
    }
    let summary = Arc::new(Mutex::new(RunSummary::default()));
    let due = query_shard(engine, shard, &summary).await;
    let summary = refresh_due(engine, limits, due, summary).await;
    if let Err(e) = lease.give_back_shard(shard, holder).await {
        tracing::warn!(shard, error = %e, "could not give the shard's lease back; it expires");
    }
    summary
}

/// How long a worker may hold its shard when the invocation gives no deadline.
const UNBOUNDED_SHARD_LEASE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The run's preparation: restores the pairs waiting in the rescue store (they
/// are connections already refreshed but not saved) and counts the connections
/// needing a person.
async fn prepare(engine: &RefreshEngine, limits: &RunLimits) -> RunSummary {
    let mut summary = RunSummary::default();
    let drained = engine.drain_rescues().await;
    summary.restored_from_rescue += drained.restored.len() as u64;
    summary.errors += drained.errors;
    summary.rescued_pairs_waiting = drained.waiting;
    summary.oldest_rescued_pair_age_seconds = drained
        .oldest_waiting
        .map_or(0, |at| (engine.clock.now().0 - at.0).max(0) as u64);

    for status in [
        ConnectionStatus::NeedsReauth,
        ConnectionStatus::PossiblyLost,
    ] {
        match count_with_status(engine, &limits.counted_tenants, status).await {
            Ok(count) if status == ConnectionStatus::NeedsReauth => {
                summary.connections_needing_reauth = count;
            }
            Ok(count) => summary.connections_possibly_lost = count,
            Err(e) => {
                tracing::error!(status = ?status, error = %e, "could not count connections by status");
                summary.errors += 1;
            }
        }
    }
    summary
}

/// The due connections of `shard` now, counted in `summary`.
async fn query_shard(
    engine: &RefreshEngine,
    shard: u32,
    summary: &Mutex<RunSummary>,
) -> Vec<ConnectionId> {
    let now = engine.clock.now();
    let mut s = summary.lock().await;
    s.shards += 1;
    match engine.store.due_connections(shard, now).await {
        Ok(ids) => {
            s.due += ids.len() as u64;
            ids
        }
        Err(e) => {
            tracing::error!(shard, error = %e, "could not query the due index");
            s.shard_errors += 1;
            Vec::new()
        }
    }
}

/// Refreshes `due` through the protocol with bounded concurrency, starting a
/// refresh only while a whole lease fits before the finish line. Returns once
/// every started refresh is over.
async fn refresh_due(
    engine: &RefreshEngine,
    limits: &RunLimits,
    due: Vec<ConnectionId>,
    summary: Arc<Mutex<RunSummary>>,
) -> RunSummary {
    let credentials_refused = Arc::new(AtomicBool::new(false));
    let permits = Arc::new(Semaphore::new(limits.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let total = due.len();
    let lease = engine.settings.lease().as_millis() as i64;
    for (taken, id) in due.into_iter().enumerate() {
        // The permit first, then the time: waiting for a permit can take a while.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let time_short = limits
            .finish_by_ms
            .is_some_and(|end| engine.clock.now_ms() + lease > end);
        // Bad client credentials fail every connection alike: stop calling RD.
        if time_short || credentials_refused.load(Ordering::SeqCst) {
            summary.lock().await.left_for_next_run = (total - taken) as u64;
            break;
        }
        let engine = engine.clone();
        let summary = summary.clone();
        let credentials_refused = credentials_refused.clone();
        let request = RefreshRequest {
            finish_by_ms: limits.finish_by_ms,
            ..RefreshRequest::default()
        };
        tasks.spawn(async move {
            let outcome = engine.refresh(&id, request).await;
            let mut s = summary.lock().await;
            match outcome {
                Ok(Refreshed::Rotated(_)) => s.refreshed += 1,
                Ok(Refreshed::AlreadyFresh(_) | Refreshed::ByOtherWorker(_)) => {
                    s.fresh_already += 1
                }
                Ok(Refreshed::Restored(_)) => s.restored_from_rescue += 1,
                Err(RefreshFailure::BackingOff { .. }) => s.backing_off += 1,
                Err(RefreshFailure::NotProcessed { .. }) => s.not_processed += 1,
                Err(RefreshFailure::Ambiguous { .. }) => s.ambiguous += 1,
                Err(RefreshFailure::OutOfTime) => s.out_of_time += 1,
                Err(RefreshFailure::Capped { .. }) => s.capped += 1,
                Err(RefreshFailure::NeedsReauth(_)) => s.needs_reauth += 1,
                Err(RefreshFailure::PossiblyLost(_)) => s.possibly_lost += 1,
                Err(RefreshFailure::DeploymentCredentialsRejected) => {
                    credentials_refused.store(true, Ordering::SeqCst);
                    s.deployment_credential_errors += 1;
                }
                Err(RefreshFailure::NotFound) => {}
                Err(
                    e @ (RefreshFailure::Store(_)
                    | RefreshFailure::Credentials(_)
                    | RefreshFailure::HolderFailed),
                ) => {
                    tracing::error!(connection_id = %id, error = %e, "refresh failed");
                    s.errors += 1;
                }
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}

    if credentials_refused.load(Ordering::SeqCst) {
        // One deployment-wide event a run, however many connections met it.
        engine.publish_deployment_error().await;
    }
    let summary = summary.lock().await.clone();
    tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "refresher run finished");
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_declares_every_counter_as_a_metric() {
        let summary = RunSummary {
            due: 3,
            refreshed: 2,
            ambiguous: 1,
            ..RunSummary::default()
        };
        let doc = summary.emf(1_795_435_200_000);
        assert_eq!(doc["_aws"]["Timestamp"], 1_795_435_200_000_i64);
        let metrics = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics");
        assert_eq!(metrics.len(), 24);
        for metric in metrics {
            let name = metric["Name"].as_str().expect("name");
            assert!(doc[name].is_u64(), "{name} has a value");
            let expected = match name {
                "oldest_rescued_pair_age_seconds" => "Seconds",
                _ => "Count",
            };
            assert_eq!(metric["Unit"], expected, "{name}");
        }
        assert_eq!(doc["refreshed"], 2);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "RdStationConnections/Refresher"
        );
    }
}
