//! The refresh protocol's timing, checked once at load: a lease must cover the
//! provider call, every store write made after it, and the clock skew allowed
//! between the machines that compare lease deadlines, or two holders could spend
//! one refresh token.

use std::time::Duration;

use crate::domain::DuePolicy;

/// The four durations that decide whether a lease is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// The hard timeout T of one token call.
    pub token_timeout: Duration,
    /// Time for everything written after RD answers (commit, rescue, status).
    pub commit_budget: Duration,
    /// The lease length L, counted from the moment the claim is sent.
    pub lease: Duration,
    /// How far apart two workers' clocks may be. A holder stops this much before
    /// its own reading of the deadline, so a worker whose clock runs ahead cannot
    /// take the lease while the holder still works under it.
    pub clock_skew: Duration,
}

/// The longest one call to AWS may take, retries included: every AWS client of
/// the service is built with it as its operation timeout (each attempt 3 s).
/// A write its caller gave up on may still land at AWS, but within this of
/// being sent or never: the bound a takeover waits out (see
/// [`RefreshSettings::late_write_bound`]).
pub const AWS_OPERATION_TIMEOUT: Duration = Duration::from_secs(8);

/// The longest one attempt of an AWS call may take.
pub const AWS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a lease must hold beyond T, the commit budget and the skew allowance:
/// the claim's own round trip and the look for a rescued pair both come out of
/// the lease before RD may be called. A lease of exactly T + commit budget +
/// skew would leave every refresh `out_of_time`, silently, forever.
pub const CLAIM_ALLOWANCE: Duration = Duration::from_millis(500);

impl LeaseTiming {
    /// What must be left on the lease before RD may be called.
    pub fn needed_before_call(&self) -> Duration {
        self.token_timeout + self.commit_budget + self.clock_skew
    }

    /// The shortest lease under which a refresh can ever call RD.
    pub fn shortest_lease(&self) -> Duration {
        self.needed_before_call() + CLAIM_ALLOWANCE
    }
}

/// The default warning window before a refresh token dies: 48 hours.
pub const DEFAULT_EXPIRING_WARNING: Duration = Duration::from_secs(48 * 3_600);

/// Timing of the refresh protocol.
#[derive(Clone, Debug)]
pub struct RefreshSettings {
    timing: LeaseTiming,
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
    /// Consecutive failures without a clear answer after which a connection is
    /// flagged `refresh_failing` (it stays active; see the module docs).
    pub failing_after: u32,
    /// How long before a refresh token dies (CRM: 14 idle days) a failing
    /// refresh sends `ConnectionExpiring` (once per run of failures).
    pub expiring_warning: Duration,
    /// How long after a holder's lease ended its abandoned writes (its commit,
    /// its rescued pair, its status) may still land: a worker taking over from a
    /// holder that may have rotated waits this out before it looks for a rescued
    /// pair or presents the token. [`AWS_OPERATION_TIMEOUT`] in a deployment.
    pub late_write_bound: Duration,
    /// The most calls to RD's token endpoint the whole deployment makes a
    /// second (`None`: no cap): after an RD outage every due connection comes
    /// due at once, and this keeps the catch-up from hammering RD. A refresh
    /// past the cap calls nothing and writes nothing; the next run takes it.
    pub token_calls_per_second: Option<u32>,
}

/// Timing that would let two workers hold one refresh token at once.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "refresh lease ({:?}) must be at least the RD token timeout ({:?}) plus the commit budget ({:?}) plus the clock-skew allowance ({:?}) plus {:?} for the claim itself",
    .0.lease, .0.token_timeout, .0.commit_budget, .0.clock_skew, CLAIM_ALLOWANCE
)]
pub struct LeaseTooShort(pub LeaseTiming);

impl RefreshSettings {
    /// Settings with the given timing and defaults for the rest.
    ///
    /// # Errors
    /// [`LeaseTooShort`] unless `lease >= token_timeout + commit_budget +
    /// clock_skew + CLAIM_ALLOWANCE`.
    pub fn new(timing: LeaseTiming) -> Result<Self, LeaseTooShort> {
        if timing.lease < timing.shortest_lease() {
            return Err(LeaseTooShort(timing));
        }
        Ok(Self::with_timing(timing))
    }

    /// The timing as given, defaults for the rest; callers have checked the timing.
    fn with_timing(timing: LeaseTiming) -> Self {
        Self {
            timing,
            due: DuePolicy::default(),
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(15 * 60),
            ambiguous_retry_min: Duration::from_secs(60),
            wait_step: (Duration::from_millis(25), Duration::from_millis(500)),
            failing_after: 6,
            expiring_warning: DEFAULT_EXPIRING_WARNING,
            late_write_bound: AWS_OPERATION_TIMEOUT,
            token_calls_per_second: None,
        }
    }

    /// The lease timing.
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// The hard timeout T of one token call.
    pub fn token_timeout(&self) -> Duration {
        self.timing.token_timeout
    }

    /// How long the writes after a token call may take.
    pub fn commit_budget(&self) -> Duration {
        self.timing.commit_budget
    }

    /// The lease length L.
    pub fn lease(&self) -> Duration {
        self.timing.lease
    }

    /// The clock-skew allowance between workers.
    pub fn clock_skew(&self) -> Duration {
        self.timing.clock_skew
    }
}

impl Default for RefreshSettings {
    /// T = 10 s, commit budget 10 s, skew allowance 2 s, L = 30 s.
    fn default() -> Self {
        Self::with_timing(LeaseTiming {
            token_timeout: Duration::from_secs(10),
            commit_budget: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            clock_skew: Duration::from_secs(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(lease_ms: u64) -> LeaseTiming {
        LeaseTiming {
            token_timeout: Duration::from_secs(10),
            commit_budget: Duration::from_secs(8),
            lease: Duration::from_millis(lease_ms),
            clock_skew: Duration::from_secs(2),
        }
    }

    #[test]
    fn refuses_a_lease_that_does_not_cover_call_commit_and_skew() {
        let err = RefreshSettings::new(timing(19_999)).expect_err("too short");
        let message = err.to_string();
        for value in ["19.999s", "10s", "8s", "2s"] {
            assert!(message.contains(value), "{value} named in {message}");
        }
        // Exactly T + commit budget + skew: no refresh could ever call RD.
        // (Before: accepted.)
        assert!(RefreshSettings::new(timing(20_000)).is_err());
        assert!(RefreshSettings::new(timing(20_499)).is_err());
        assert!(RefreshSettings::new(timing(20_500)).is_ok());
        let d = RefreshSettings::default();
        assert!(d.lease() >= d.timing().shortest_lease());
    }
}
