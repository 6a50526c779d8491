//! One deadline for everything done under a lease, and the one retry helper that
//! obeys it.
//!
//! Two retry layers multiply: the AWS SDK retries inside one call (bounded by its
//! own operation timeout), and [`Deadline::retry`] retries around it. So every
//! attempt here is cut off when the deadline comes, whatever the SDK is doing
//! inside it, and no new attempt starts after it: the total is the deadline, not
//! attempts × per-call bound.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::clock::Clock;
use crate::ports::StoreError;

/// A moment on the service clock by which some work must be over.
#[derive(Clone, Debug)]
pub struct Deadline {
    at_ms: i64,
    clock: Arc<dyn Clock>,
}

impl Deadline {
    /// The deadline `at_ms` (milliseconds since the epoch) on `clock`.
    pub fn at(at_ms: i64, clock: Arc<dyn Clock>) -> Self {
        Self { at_ms, clock }
    }

    /// When it falls, in milliseconds since the epoch.
    pub fn at_ms(&self) -> i64 {
        self.at_ms
    }

    /// The same clock, `by` earlier.
    pub fn earlier_by(&self, by: Duration) -> Self {
        Self::at(self.at_ms - by.as_millis() as i64, self.clock.clone())
    }

    /// The time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        Duration::from_millis((self.at_ms - self.clock.now_ms()).max(0) as u64)
    }

    /// Whether at least `needed` is left.
    pub fn leaves(&self, needed: Duration) -> bool {
        self.remaining() >= needed
    }

    /// Runs one call, cut off at the deadline.
    ///
    /// # Errors
    /// The call's own error, or [`StoreError::Unavailable`] if the deadline came first.
    pub async fn bound<T, F>(&self, what: &str, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return Err(StoreError::Unavailable(format!(
                "{what} not attempted: the lease's deadline has passed"
            )));
        }
        match tokio::time::timeout(remaining, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what} did not finish before the lease's deadline"
            ))),
        }
    }

    /// Runs a store call until it succeeds, fails for a reason a retry cannot mend
    /// (a failed condition, a corrupt item), or the deadline comes: each attempt is
    /// cut off at the deadline, and attempts are spaced by jittered exponential
    /// backoff (20 ms doubling to 1 s).
    ///
    /// # Errors
    /// The last error; [`StoreError::Unavailable`] if the deadline came first.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_secs(1))
            .with_jitter()
            .without_max_times();
        (|| self.bound(what, call()))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e| matches!(e, StoreError::Unavailable(_)) && !self.remaining().is_zero())
            .adjust(|_, pause| pause.filter(|p| *p < self.remaining()))
            .notify(|e, pause| {
                tracing::warn!(error = %e, ?pause, what, "store call failed; retrying within the lease");
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::clock::SystemClock;

    fn in_ms(ms: i64) -> Deadline {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Deadline::at(clock.now_ms() + ms, clock)
    }

    #[tokio::test]
    async fn retries_unavailable_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let result = in_ms(5_000)
            .retry("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(StoreError::Unavailable("throttled".to_owned()))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result.expect("third attempt"), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_hanging_call_is_cut_off_at_the_deadline() {
        let started = std::time::Instant::now();
        let result: Result<(), _> = in_ms(150).retry("hang", std::future::pending).await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_failed_condition_is_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = in_ms(5_000)
            .retry("conflict", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Corrupt("bad".to_owned()))
            })
            .await;
        assert!(matches!(result, Err(StoreError::Corrupt(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nothing_runs_once_the_deadline_passed() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = in_ms(-10)
            .retry("late", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))));
    }
}
