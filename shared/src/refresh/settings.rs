//! The refresh protocol's timing, checked once at load: a lease must outlast the
//! provider call and the commit, or two holders could spend one refresh token.

use std::time::Duration;

use crate::domain::DuePolicy;

/// Timing of the refresh protocol.
#[derive(Clone, Debug)]
pub struct RefreshSettings {
    token_timeout: Duration,
    commit_budget: Duration,
    lease: Duration,
    /// When connections come due.
    pub due: DuePolicy,
    /// First backoff step after a failed attempt (doubles per failure).
    pub backoff_base: Duration,
    /// Longest backoff step.
    pub backoff_cap: Duration,
    /// Least wait before presenting a refresh token again after an ambiguous
    /// outcome, so a request RD is still holding can finish first.
    pub ambiguous_retry_min: Duration,
    /// First and longest pause of a worker waiting for another's lease.
    pub wait_step: (Duration, Duration),
}

/// Timing that would let two workers hold one refresh token at once.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "refresh lease ({lease:?}) must be longer than the RD token timeout ({token_timeout:?}) plus the commit budget ({commit_budget:?})"
)]
pub struct LeaseTooShort {
    /// The lease length L.
    pub lease: Duration,
    /// The token-call timeout T.
    pub token_timeout: Duration,
    /// The commit budget.
    pub commit_budget: Duration,
}

impl RefreshSettings {
    /// Settings with the given timing and defaults for the rest.
    ///
    /// # Errors
    /// [`LeaseTooShort`] unless `lease > token_timeout + commit_budget`.
    pub fn new(
        token_timeout: Duration,
        commit_budget: Duration,
        lease: Duration,
    ) -> Result<Self, LeaseTooShort> {
        if lease <= token_timeout + commit_budget {
            return Err(LeaseTooShort {
                lease,
                token_timeout,
                commit_budget,
            });
        }
        Ok(Self::with_timing(token_timeout, commit_budget, lease))
    }

    /// The timing as given, defaults for the rest; callers have checked the timing.
    fn with_timing(token_timeout: Duration, commit_budget: Duration, lease: Duration) -> Self {
        Self {
            token_timeout,
            commit_budget,
            lease,
            due: DuePolicy::default(),
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(15 * 60),
            ambiguous_retry_min: Duration::from_secs(60),
            wait_step: (Duration::from_millis(25), Duration::from_millis(500)),
        }
    }

    /// The hard timeout T of one token call.
    pub fn token_timeout(&self) -> Duration {
        self.token_timeout
    }

    /// How long a commit may keep retrying after the call returned.
    pub fn commit_budget(&self) -> Duration {
        self.commit_budget
    }

    /// The lease length L.
    pub fn lease(&self) -> Duration {
        self.lease
    }
}

impl Default for RefreshSettings {
    /// T = 10 s, commit budget 10 s, L = 30 s.
    fn default() -> Self {
        Self::with_timing(
            Duration::from_secs(10),
            Duration::from_secs(10),
            Duration::from_secs(30),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_lease_that_does_not_outlast_call_and_commit() {
        let err = RefreshSettings::new(
            Duration::from_secs(10),
            Duration::from_secs(10),
            Duration::from_secs(20),
        )
        .expect_err("too short");
        let message = err.to_string();
        assert!(
            message.contains("20s") && message.contains("10s"),
            "{message}"
        );
        assert!(
            RefreshSettings::new(
                Duration::from_secs(10),
                Duration::from_secs(10),
                Duration::from_secs(21)
            )
            .is_ok()
        );
        let d = RefreshSettings::default();
        assert!(d.lease() > d.token_timeout() + d.commit_budget());
    }
}
