//! The schedule handler: the token-refresher Lambda's handler. An EventBridge
//! scheduled event in, one scheduled refresh run out (summary logged as JSON and
//! printed as CloudWatch EMF). With a refresh work queue, the scheduled run only
//! hands its shards out, and the same function, invoked by SQS with those
//! messages, refreshes one shard per message.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::TenantId;
use crate::ports::{
    LegacyRescueQueue, RefreshWorkQueue, RunLock, ShardLease, ShardWork, TenantRegistry,
};
use crate::services::refresh_protocol::RefreshEngine;
use crate::services::scheduled_refresh::{self, RunLimits, RunSummary};
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{Diagnostic, LambdaEvent};

/// Time kept back from the Lambda's deadline to report the run.
const REPORT_MARGIN: Duration = Duration::from_secs(1);

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event is not an EventBridge scheduled event.
    #[error("expected an EventBridge \"Scheduled Event\", got detail-type {0:?}")]
    NotScheduled(String),
    /// The event is neither a scheduled event nor a batch of SQS messages.
    #[error("expected an EventBridge scheduled event or SQS messages: {0}")]
    UnknownEvent(String),
    /// Every due-index query failed: the run could not look for due connections.
    /// Reported as a failed invocation so Lambda's error metric and alarms see it.
    #[error("every due-index query failed ({shards} shards); nothing was refreshed")]
    DueIndexUnavailable {
        /// Shards queried.
        shards: u64,
    },
}

impl From<HandlerError> for Diagnostic {
    fn from(err: HandlerError) -> Self {
        let error_type = match err {
            HandlerError::NotScheduled(_) => "NotScheduled",
            HandlerError::UnknownEvent(_) => "UnknownEvent",
            HandlerError::DueIndexUnavailable { .. } => "DueIndexUnavailable",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// How long a run may hold the run lock when the invocation gives no deadline.
const LOCK_WITHOUT_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// What the refresher needs for each invocation, built once per cold start.
#[derive(Clone)]
pub struct Refresher {
    /// The refresh protocol.
    pub engine: RefreshEngine,
    /// Refreshes in flight at once.
    pub concurrency: usize,
    /// Keeps two runs (a late schedule, a retry) from overlapping, without
    /// reserved concurrency.
    pub run_lock: Arc<dyn RunLock>,
    /// The SQS queue earlier versions rescued pairs to, while it may hold some:
    /// each run first moves what it holds to the rescue store.
    pub legacy_rescues: Option<Arc<dyn LegacyRescueQueue>>,
    /// The tenants, whose connections needing a person each run counts.
    pub tenants: Arc<dyn TenantRegistry>,
    /// Keeps two workers off one shard.
    pub shard_leases: Arc<dyn ShardLease>,
    /// Where a scheduled run hands its shards to the workers; `None`: the run
    /// refreshes them itself.
    pub work_queue: Option<Arc<dyn RefreshWorkQueue>>,
}

impl Refresher {
    /// The default tenant and every configured one (the default alone, logged,
    /// when the registry cannot be read: the refreshes do not depend on it).
    async fn counted_tenants(&self) -> Vec<TenantId> {
        match self.tenants.tenants().await {
            Ok(configured) => configured.all_with_default(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the tenants; counting the default tenant's connections only");
                vec![TenantId::default_tenant()]
            }
        }
    }

    /// Handles one scheduled event: runs the refresher, starting refreshes only
    /// while a whole lease fits before the invocation's deadline (less a margin to
    /// report), and returns once every started refresh is over.
    ///
    /// # Errors
    /// [`HandlerError::NotScheduled`] for any other event;
    /// [`HandlerError::DueIndexUnavailable`] when no due-index query succeeded.
    pub async fn handle(
        &self,
        event: LambdaEvent<EventBridgeEvent<serde_json::Value>>,
    ) -> Result<RunSummary, HandlerError> {
        let (payload, context) = event.into_parts();
        if payload.detail_type != "Scheduled Event" {
            return Err(HandlerError::NotScheduled(payload.detail_type));
        }
        let limits = RunLimits {
            concurrency: self.concurrency,
            finish_by_ms: (context.deadline > 0)
                .then(|| context.deadline as i64 - REPORT_MARGIN.as_millis() as i64),
            counted_tenants: self.counted_tenants().await,
        };
        let now_ms = self.engine.clock.now_ms();
        let until_ms = limits
            .finish_by_ms
            .unwrap_or(now_ms + LOCK_WITHOUT_DEADLINE.as_millis() as i64);
        let holder = context.request_id.clone();
        let locked = match self.run_lock.try_lock(&holder, until_ms, now_ms).await {
            Ok(locked) => locked,
            Err(e) => {
                // Overlapping runs are wasteful, not unsafe (the protocol holds):
                // run rather than skip when the lock cannot be checked.
                tracing::warn!(error = %e, "could not take the run lock; running anyway");
                true
            }
        };
        if !locked {
            tracing::info!("another refresher run is under way; this one stands down");
            let summary = RunSummary {
                overlapping_run_skipped: 1,
                ..RunSummary::default()
            };
            println!("{}", summary.emf(now_ms));
            return Ok(summary);
        }
        let moved = match &self.legacy_rescues {
            Some(queue) => {
                scheduled_refresh::move_legacy_rescues(queue.as_ref(), self.engine.rescues.as_ref())
                    .await
            }
            None => scheduled_refresh::MoveReport::default(),
        };
        let mut summary = match &self.work_queue {
            Some(queue) => {
                scheduled_refresh::dispatch(&self.engine, &limits, queue.as_ref(), &holder).await
            }
            None => scheduled_refresh::run(&self.engine, &limits).await,
        };
        summary.moved_from_legacy_queue = moved.moved;
        summary.errors += moved.errors;
        if let Err(e) = self.run_lock.unlock(&holder).await {
            tracing::warn!(error = %e, "could not give the run lock back; it expires");
        }
        // One EMF document on stdout: CloudWatch turns it into metrics.
        println!("{}", summary.emf(self.engine.clock.now_ms()));
        if summary.due_index_unavailable() {
            return Err(HandlerError::DueIndexUnavailable {
                shards: summary.shards,
            });
        }
        Ok(summary)
    }
}

impl Refresher {
    /// Handles whatever invokes the function: an EventBridge scheduled event
    /// (the run) or SQS messages from the refresh work queue (a worker).
    ///
    /// # Errors
    /// As [`Refresher::handle`] and [`Refresher::handle_work`];
    /// [`HandlerError::UnknownEvent`] for any other payload.
    pub async fn handle_any(
        &self,
        event: LambdaEvent<serde_json::Value>,
    ) -> Result<RunSummary, HandlerError> {
        let (payload, context) = event.into_parts();
        if payload.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(payload)
                .map_err(|e| HandlerError::UnknownEvent(e.to_string()))?;
            return self.handle_work(LambdaEvent::new(batch, context)).await;
        }
        let scheduled: EventBridgeEvent<serde_json::Value> = serde_json::from_value(payload)
            .map_err(|e| HandlerError::UnknownEvent(e.to_string()))?;
        self.handle(LambdaEvent::new(scheduled, context)).await
    }

    /// Handles SQS messages from the refresh work queue: each names one shard,
    /// refreshed under its lease within the invocation's deadline (less a
    /// margin to report). A message that names no shard is logged and dropped
    /// (SQS would only hand it back).
    ///
    /// # Errors
    /// [`HandlerError::DueIndexUnavailable`] when no shard's due index could be
    /// read, so that SQS hands the messages out again.
    pub async fn handle_work(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<RunSummary, HandlerError> {
        let (batch, context) = event.into_parts();
        let limits = RunLimits {
            concurrency: self.concurrency,
            finish_by_ms: (context.deadline > 0)
                .then(|| context.deadline as i64 - REPORT_MARGIN.as_millis() as i64),
            counted_tenants: Vec::new(),
        };
        let mut total = RunSummary::default();
        for message in batch.records {
            let work = message
                .body
                .as_deref()
                .and_then(|body| serde_json::from_str::<ShardWork>(body).ok())
                .filter(|work| work.shard < self.engine.store.due_shards());
            let Some(work) = work else {
                tracing::error!(message_id = ?message.message_id, "a work message names no shard of this deployment; dropped");
                total.errors += 1;
                continue;
            };
            let holder = format!("{}/{}", context.request_id, work.shard);
            tracing::info!(shard = work.shard, run = %work.run, "refreshing a shard");
            let summary = scheduled_refresh::work_shard(
                &self.engine,
                self.shard_leases.as_ref(),
                &limits,
                work.shard,
                &holder,
            )
            .await;
            total.add(&summary);
        }
        println!("{}", total.emf(self.engine.clock.now_ms()));
        if total.due_index_unavailable() {
            return Err(HandlerError::DueIndexUnavailable {
                shards: total.shards,
            });
        }
        Ok(total)
    }
}
