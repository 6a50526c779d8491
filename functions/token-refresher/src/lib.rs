//! The scheduled refresher's Lambda handler: an EventBridge scheduled event in, one
//! refresher run out (summary logged as JSON and printed as CloudWatch EMF).

use std::time::Duration;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use connector::refresh::RefreshEngine;
use connector::refresher::{self, RunLimits, RunSummary};
use lambda_runtime::{Diagnostic, LambdaEvent};

/// Why an invocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event is not an EventBridge scheduled event.
    #[error("expected an EventBridge \"Scheduled Event\", got detail-type {0:?}")]
    NotScheduled(String),
}

impl From<HandlerError> for Diagnostic {
    fn from(err: HandlerError) -> Self {
        Diagnostic {
            error_type: "NotScheduled".to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// What the refresher needs for each invocation, built once per cold start.
#[derive(Clone)]
pub struct Refresher {
    /// The refresh protocol.
    pub engine: RefreshEngine,
    /// Refreshes in flight at once.
    pub concurrency: usize,
}

impl Refresher {
    /// Handles one scheduled event: runs the refresher until the invocation's
    /// deadline leaves less than a lease plus a margin.
    ///
    /// # Errors
    /// [`HandlerError::NotScheduled`] for any other event.
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
            deadline_ms: (context.deadline > 0).then_some(context.deadline as i64),
            // A refresh started now must be able to finish its lease inside the invocation.
            reserve: self.engine.settings.lease() + Duration::from_secs(2),
        };
        let summary = refresher::run(&self.engine, &limits).await;
        // One EMF document on stdout: CloudWatch turns it into metrics.
        println!("{}", summary.emf(self.engine.clock.now_ms()));
        Ok(summary)
    }
}
