//! The single-spend refresh protocol. Every refresh of a connection, scheduled or
//! on demand, goes through [`RefreshEngine::refresh`]; nothing calls RD's token
//! endpoint around it.
//!
//! 1. Read the connection consistently. If its access token is newer than the one
//!    the caller holds, or it is not due and the caller does not force, return it.
//!    If a pair rescued from a failed commit may exist (the connection is
//!    `possibly_lost`, or an intent still names its current refresh token), look it
//!    up in the rescue store by key (the connection and the pair it holds: one
//!    strongly consistent read, the same from every instance) and restore it
//!    without calling RD. If the lookup or the restore failed, RD is not called
//!    either: the token may be spent. A pair restored by another instance meanwhile
//!    changes the item, so the claim below fails and the loop reads again.
//!    A worker taking over from a holder that may have rotated (an expired lease
//!    whose intent names the stored token) first waits out the holder's late
//!    writes: until the lease's end plus [`RefreshSettings::late_write_bound`]
//!    it backs off, since a commit, rescued pair or status write the holder gave
//!    up on may still land ([`RefreshFailure::BackingOff`]).
//! 2. Read the client credentials, *then* claim a lease with one conditional write
//!    (the version read, and no live lease), recording the intent: the fingerprint
//!    of the refresh token about to be spent. The lease runs L from the moment the
//!    claim is sent; the holder works to its own deadline, L minus the clock-skew
//!    allowance S. Losers never call RD: they wait, re-read and return the
//!    holder's result.
//! 3. Before each call to RD (the first, and the one retry after RD refused the
//!    client and the credentials were re-read), the time left must cover the hard
//!    timeout T plus the commit budget C; otherwise the lease is released and RD
//!    is not called ([`RefreshFailure::OutOfTime`]).
//! 4. Rotated: commit the pair conditional on the lease. Failing that, put it in
//!    the rescue store (outside the table) and mark the connection `possibly_lost`
//!    (`commit_failed`, or `rescue_failed` if even the store refused it). Every
//!    store call made under the lease (commit, rescue, status, release) retries
//!    within, and is cut off at, the holder's deadline ([`Deadline`]).
//! 5. Grant rejected: re-read; a newer pair stored meanwhile (a reconnect, a
//!    restore) is returned. A rescued pair is restored. Otherwise the connection is
//!    `possibly_lost` (`lost_in_flight`) when this token has an ambiguous attempt on
//!    record, else `needs_reauth` (`revoked`).
//! 6. Client rejected twice: a deployment-wide error. The connection stays `active`.
//! 7. Not processed: release the lease and back off (`next_attempt_at`).
//! 8. Ambiguous: keep the intent, release the lease, back off; the retry presents
//!    the same refresh token.
//!
//! Failures without a clear answer (5: no; 7 and 8: yes) never mark a connection
//! dead; after [`RefreshSettings::failing_after`] in a row the item says
//! `refresh_failing` and a `ConnectionRefreshFailing` event goes out once.
//!
//! Invariant: at most one call presenting a given refresh token is in flight; a
//! refresh token is presented again only after an ambiguous outcome; a rotated
//! pair never lives only in memory. L ≥ T + C + S is checked at load
//! ([`LeaseTooShort`]).

mod backoff;
mod deadline;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

pub use backoff::delay_after;
pub use deadline::Deadline;
pub use settings::{
    AWS_ATTEMPT_TIMEOUT, AWS_OPERATION_TIMEOUT, CLAIM_ALLOWANCE, LeaseTiming, LeaseTooShort,
    RefreshSettings,
};

use crate::clock::{Clock, Timestamp};
use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, IssuedTokens, Lease, RefreshBackoff, RefreshIntent,
    Tags, TokenCallError, TokenPair,
};

use crate::ports::{
    ClientCredentials, ConnectionStore, CredentialSource, CredentialsError, EventKind,
    EventPublisher, RateBudget, RescueKey, RescueStore, RescuedPair, ServiceEvent, StoreError,
    TokenEndpoint,
};
use crate::secret::AccessToken;

/// The reason stored on an active connection whose refreshes keep failing.
pub const REFRESH_FAILING: &str = "refresh_failing";

/// How many times a restore re-reads after another writer got in first.
const RESTORE_ATTEMPTS: usize = 5;

/// How many pages of the rescue store one sweep reads at most (1,000 keys a page
/// on S3); what is left waits for the next sweep, or is found by key.
const MAX_DRAIN_PAGES: usize = 10;

/// Why a refresh is asked for; it decides when RD is called at all.
#[derive(Clone, Debug, Default)]
pub enum RefreshTrigger {
    /// The schedule: refresh only if the connection is due.
    #[default]
    IfDue,
    /// RD just refused this access token (a 401): refresh, unless a different
    /// access token is stored already (another worker refreshed; use that one).
    Rejected(AccessToken),
    /// An operator asked: refresh now, due or not.
    Forced,
}

/// What the caller of a refresh knows.
#[derive(Clone, Debug, Default)]
pub struct RefreshRequest {
    /// Why the refresh is asked for.
    pub trigger: RefreshTrigger,
    /// Milliseconds since the epoch by which everything this refresh starts must be
    /// over (a Lambda's deadline, less a margin to answer): no other holder is
    /// waited for past it, and no lease is claimed unless the token call and the
    /// commit fit before it; the holder's own deadline is the earlier of it and
    /// its lease's.
    pub finish_by_ms: Option<i64>,
}

impl RefreshRequest {
    /// A refresh after RD refused `token`.
    pub fn rejected(token: AccessToken) -> Self {
        Self {
            trigger: RefreshTrigger::Rejected(token),
            finish_by_ms: None,
        }
    }

    /// A refresh now, due or not.
    pub fn forced() -> Self {
        Self {
            trigger: RefreshTrigger::Forced,
            finish_by_ms: None,
        }
    }
}

/// A usable connection at the end of a refresh.
#[derive(Debug)]
pub enum Refreshed {
    /// No provider call was needed: the stored pair is fresh, or newer than the
    /// caller's.
    AlreadyFresh(Connection),
    /// This call rotated the pair and committed it.
    Rotated(Connection),
    /// Another worker (or a reconnect) stored a newer pair while this one worked.
    ByOtherWorker(Connection),
    /// A rescued pair was restored.
    Restored(Connection),
}

impl Refreshed {
    /// The connection, however it was reached.
    pub fn connection(&self) -> &Connection {
        match self {
            Self::AlreadyFresh(c)
            | Self::Rotated(c)
            | Self::ByOtherWorker(c)
            | Self::Restored(c) => c,
        }
    }
}

/// Why a refresh did not end with a usable connection.
#[derive(Debug, thiserror::Error)]
pub enum RefreshFailure {
    /// No such connection.
    #[error("no such connection")]
    NotFound,
    /// The connection needs a person to connect it again.
    #[error("connection needs re-authorization")]
    NeedsReauth(Box<Connection>),
    /// The connection's refresh token may have been rotated and lost.
    #[error("connection possibly lost")]
    PossiblyLost(Box<Connection>),
    /// An earlier failure set a backoff that has not passed; RD was not called.
    #[error("backing off until {until:?}")]
    BackingOff {
        /// The earliest next attempt.
        until: Timestamp,
    },
    /// RD did not process the call (connect error, rate limit, refusal); backing off.
    #[error("RD did not process the refresh; next attempt at {until:?}")]
    NotProcessed {
        /// The earliest next attempt.
        until: Timestamp,
    },
    /// RD may or may not have rotated; the same refresh token is retried later.
    #[error("refresh outcome unknown; next attempt at {until:?}")]
    Ambiguous {
        /// The earliest next attempt.
        until: Timestamp,
    },
    /// Too little time was left (on the lease, or before the caller's deadline) to
    /// call RD safely; nothing was spent and the lease, if any, was given back.
    #[error("not enough time left to call RD safely; nothing was spent")]
    OutOfTime,
    /// RD refused our client credentials even after re-reading them.
    #[error("RD rejected the deployment's client credentials")]
    DeploymentCredentialsRejected,
    /// The deployment's cap on token calls a second was reached: RD was not
    /// called and nothing was written; a call may go after `retry_after`.
    #[error("the deployment's token-call cap is reached; try again in {retry_after:?}")]
    Capped {
        /// Until a call may go.
        retry_after: Duration,
    },
    /// This caller waited for another worker's refresh, which failed without
    /// recording a backoff (e.g. refused credentials); RD was not called again.
    #[error("the refresh this caller waited for failed")]
    HolderFailed,
    /// Client credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs the refresh protocol. Cheap to clone.
#[derive(Clone)]
pub struct RefreshEngine {
    /// Connections.
    pub store: Arc<dyn ConnectionStore>,
    /// Pairs whose commit failed, kept outside the store.
    pub rescues: Arc<dyn RescueStore>,
    /// RD app credentials.
    pub credentials: Arc<dyn CredentialSource>,
    /// RD Station's token endpoint; its hard timeout is the settings' token
    /// timeout T (the assembly builds it so).
    pub token_endpoint: Arc<dyn TokenEndpoint>,
    /// Where events go.
    pub events: Arc<dyn EventPublisher>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Protocol timing.
    pub settings: RefreshSettings,
    /// Where the deployment's token calls are counted, when they are capped
    /// (`settings.token_calls_per_second`).
    pub token_calls: Arc<dyn RateBudget>,
}

/// The result of one call to RD under a lease.
enum CallOutcome {
    Rotated(IssuedTokens),
    GrantRejected,
    ClientRejected,
    NotProcessed {
        retry_after: Option<Duration>,
        reason: &'static str,
    },
    Ambiguous,
}

/// A claimed lease and what it was claimed over.
struct Claim {
    connection: Connection,
    lease: Lease,
    /// An earlier attempt with this refresh token ended ambiguously or vanished.
    ambiguous_history: bool,
    /// The holder's own deadline: L after the claim was sent, less the skew allowance.
    deadline: Deadline,
}

/// What a lookup in the rescue store found for one connection.
enum RescueCheck {
    /// A pair of the connection's was restored.
    Restored(Box<Connection>),
    /// No pair waits for the pair the connection held when it was read (or one
    /// did and the connection has moved on since: read it again).
    NoneWaiting,
    /// The lookup or the restore failed: a pair may be waiting.
    Unsure,
}

/// What one sweep of the rescue store did.
#[derive(Debug, Default)]
pub struct DrainReport {
    /// Connections whose rescued pair was restored.
    pub restored: Vec<Connection>,
    /// Pairs found obsolete and deleted.
    pub superseded: u64,
    /// Rescue store or connection store failures (the pairs concerned stay).
    pub errors: u64,
    /// Connections whose pair was found but could not be restored (it stays).
    pub unrestored: Vec<ConnectionId>,
    /// Pairs still waiting when the sweep was over (failed reads and restores).
    pub waiting: u64,
    /// When the oldest of those was saved, where it could be read.
    pub oldest_waiting: Option<Timestamp>,
}

impl DrainReport {
    /// Counts a pair that stays in the store, saved at `rescued_at` if known.
    fn still_waiting(&mut self, rescued_at: Option<Timestamp>) {
        self.waiting += 1;
        if let Some(at) = rescued_at {
            self.oldest_waiting = Some(self.oldest_waiting.map_or(at, |oldest| oldest.min(at)));
        }
    }
}

fn lease_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

/// Whether an intent left on `c` names the refresh token it holds now: an attempt
/// with it ended ambiguously, or its holder vanished (or was slow) mid-call.
fn intent_names_current_token(c: &Connection) -> bool {
    c.intent
        .as_ref()
        .is_some_and(|i| i.refresh_token_fingerprint == c.tokens.refresh_token.fingerprint())
}

impl RefreshEngine {
    /// Refreshes connection `id` under the protocol described in the module docs.
    ///
    /// # Errors
    /// [`RefreshFailure`] when no usable connection comes out of it.
    pub async fn refresh(
        &self,
        id: &ConnectionId,
        request: RefreshRequest,
    ) -> Result<Refreshed, RefreshFailure> {
        let (mut baseline, force) = match request.trigger {
            RefreshTrigger::IfDue => (None, false),
            RefreshTrigger::Rejected(token) => (Some(token), true),
            RefreshTrigger::Forced => (None, true),
        };
        let mut waited = false;
        let mut pause = self.settings.wait_step.0;
        loop {
            let current = self.store.get(id).await?.ok_or(RefreshFailure::NotFound)?;
            let now_ms = self.clock.now_ms();
            let now = self.clock.now();
            match current.status {
                ConnectionStatus::NeedsReauth => {
                    return Err(RefreshFailure::NeedsReauth(Box::new(current)));
                }
                ConnectionStatus::PossiblyLost => {
                    // A pair saved when its commit failed brings the connection back.
                    return match self.restore_rescued(&current).await {
                        RescueCheck::Restored(restored) => Ok(Refreshed::Restored(*restored)),
                        RescueCheck::NoneWaiting | RescueCheck::Unsure => {
                            // Another instance may have restored it meanwhile: what
                            // counts is the connection as stored now.
                            match self.store.get(id).await? {
                                Some(now) if now.status == ConnectionStatus::Active => {
                                    Ok(Refreshed::ByOtherWorker(now))
                                }
                                Some(now) => Err(RefreshFailure::PossiblyLost(Box::new(now))),
                                None => Err(RefreshFailure::NotFound),
                            }
                        }
                    };
                }
                ConnectionStatus::Active => {}
            }
            match &baseline {
                Some(seen) if current.tokens.access_token != *seen => {
                    return Ok(if waited {
                        Refreshed::ByOtherWorker(current)
                    } else {
                        Refreshed::AlreadyFresh(current)
                    });
                }
                Some(_) => {}
                None => baseline = Some(current.tokens.access_token.clone()),
            }
            if !force && !self.settings.due.is_due(&current, now) {
                return Ok(Refreshed::AlreadyFresh(current));
            }
            if let Some(lease) = current.live_lease(now_ms) {
                // Another worker holds the token: wait for it, never call RD. The
                // lease's deadline bounds the wait; after it the lease may be taken.
                waited = true;
                let until_deadline =
                    Duration::from_millis((lease.deadline_ms - now_ms).max(1) as u64);
                let step = pause.min(until_deadline);
                if request
                    .finish_by_ms
                    .is_some_and(|end| now_ms + step.as_millis() as i64 > end)
                {
                    return Err(RefreshFailure::OutOfTime);
                }
                tokio::time::sleep(step).await;
                pause = (pause * 2).min(self.settings.wait_step.1);
                continue;
            }
            if let Some(until) = current.backoff.next_attempt_at.filter(|t| *t > now) {
                return Err(RefreshFailure::BackingOff { until });
            }
            if waited && current.lease.is_none() {
                // The holder gave the lease back without a new pair: its attempt
                // failed, and losers never call RD themselves. (A lease left past its
                // deadline, by contrast, means the holder died: it may be taken.)
                return Err(RefreshFailure::HolderFailed);
            }
            // Read before claiming, so a slow Secrets Manager does not eat the lease.
            let credentials = self.credentials.credentials(current.product).await?;
            if let Some(until) = self.late_writes_may_land(&current, now_ms) {
                // The previous holder may have rotated and given up on its writes
                // (commit, rescued pair, status) at its deadline; AWS may still
                // apply them. Neither a look for its pair nor RD before they land.
                tracing::info!(connection_id = %id, "waiting out a previous holder's late writes");
                return Err(RefreshFailure::BackingOff { until });
            }
            if intent_names_current_token(&current) {
                // Taking over from a holder that may have been issued a new pair and
                // failed to store it: if it saved the pair, that pair is the
                // connection's and the stored token is spent. Look it up before
                // calling RD, and do not call RD unless the lookup answered: a pair
                // that could not be read or restored just now may be this one's. Its
                // writes have all landed or been lost by now (waited out above), so a
                // put that answered is seen; a pair restored by another instance
                // after this lookup changed the item, and the claim fails.
                match self.restore_rescued(&current).await {
                    RescueCheck::Restored(restored) => return Ok(Refreshed::Restored(*restored)),
                    RescueCheck::NoneWaiting => {}
                    RescueCheck::Unsure => {
                        tracing::warn!(connection_id = %id, "the rescue store could not be checked; RD was not called");
                        return Err(RefreshFailure::Store(StoreError::Unavailable(
                            "the rescue store could not be checked for a pair saved with this refresh token; RD was not called".to_owned(),
                        )));
                    }
                }
            }
            if let Some(rate) = self.settings.token_calls_per_second {
                // Before the claim: a refresh past the cap leaves nothing behind.
                let pace = crate::domain::RequestPace::per_second(rate);
                if let Some(retry_after) = self.token_calls.take_token_call(pace, now_ms).await? {
                    return Err(RefreshFailure::Capped { retry_after });
                }
            }
            match self.claim(current, request.finish_by_ms).await {
                Ok(claim) => {
                    // From here RD may rotate the token: finish in a task of its own so
                    // that a caller going away (a dropped request) cannot abandon a
                    // rotated pair between RD's answer and the commit.
                    let engine = self.clone();
                    return tokio::spawn(async move { engine.spend(claim, credentials).await })
                        .await
                        .unwrap_or_else(|e| {
                            Err(RefreshFailure::Store(StoreError::Unavailable(format!(
                                "the refresh task failed: {e}"
                            ))))
                        });
                }
                // Someone wrote in between: read again.
                Err(ClaimError::Store(StoreError::Conflict { .. })) => continue,
                Err(ClaimError::Store(e)) => return Err(e.into()),
                Err(ClaimError::OutOfTime) => return Err(RefreshFailure::OutOfTime),
            }
        }
    }

    async fn claim(
        &self,
        current: Connection,
        finish_by_ms: Option<i64>,
    ) -> Result<Claim, ClaimError> {
        let fingerprint = current.tokens.refresh_token.fingerprint();
        let ambiguous_history = intent_names_current_token(&current);
        // The lease runs from the moment the claim is sent: whatever the claim's own
        // round trip costs comes out of the holder's time, never another worker's.
        let sent_ms = self.clock.now_ms();
        let lease_end_ms = sent_ms + self.settings.lease().as_millis() as i64;
        // The holder works to the earlier of its lease (less the skew allowance)
        // and the caller's end (a Lambda invocation): everything after RD's answer
        // must be over before either. No lease is claimed unless the token call
        // and the commit still fit once the claim is made.
        let skew_ms = self.settings.clock_skew().as_millis() as i64;
        let holder_end_ms = finish_by_ms.map_or(lease_end_ms - skew_ms, |end| {
            end.min(lease_end_ms - skew_ms)
        });
        let needed = self.settings.token_timeout()
            + self.settings.commit_budget()
            + settings::CLAIM_ALLOWANCE;
        if holder_end_ms - sent_ms < needed.as_millis() as i64 {
            return Err(ClaimError::OutOfTime);
        }
        let lease = Lease {
            id: lease_id(),
            deadline_ms: lease_end_ms,
        };
        let claimed = Connection {
            lease: Some(lease.clone()),
            intent: Some(RefreshIntent {
                refresh_token_fingerprint: fingerprint,
                ambiguous: ambiguous_history,
            }),
            updated_at: self.clock.now(),
            ..current
        };
        // Conditional on the version read and on no live lease being stored.
        let connection = self.store.claim_lease(&claimed, sent_ms).await?;
        let deadline = Deadline::at(holder_end_ms, self.clock.clone());
        Ok(Claim {
            connection,
            lease,
            ambiguous_history,
            deadline,
        })
    }

    /// Until when a takeover must wait, if `current` was left by a holder whose
    /// lease ended less than the late-write bound ago with an intent naming the
    /// stored token (it may have rotated, and its writes may still land).
    fn late_writes_may_land(&self, current: &Connection, now_ms: i64) -> Option<Timestamp> {
        let lease = current.lease.as_ref()?;
        if !intent_names_current_token(current) {
            return None;
        }
        let safe_ms = lease.deadline_ms + self.settings.late_write_bound.as_millis() as i64;
        (now_ms < safe_ms).then(|| Timestamp(safe_ms.div_euclid(1000) + 1))
    }

    /// Whether the holder may still call RD: the call and everything after it must
    /// fit before its deadline.
    fn may_call_rd(&self, claim: &Claim) -> bool {
        claim
            .deadline
            .leaves(self.settings.token_timeout() + self.settings.commit_budget())
    }

    async fn call_rd(
        &self,
        claim: &Claim,
        mut credentials: ClientCredentials,
    ) -> Result<CallOutcome, RefreshFailure> {
        let c = &claim.connection;
        let mut reloaded = false;
        loop {
            if !self.may_call_rd(claim) {
                tracing::warn!(connection_id = %c.id, "too little lease left to call RD; released without calling");
                self.release(claim, |_| {}).await;
                return Err(RefreshFailure::OutOfTime);
            }
            let outcome = match self
                .token_endpoint
                .refresh(c.product, &credentials, &c.tokens.refresh_token)
                .await
            {
                Ok(issued) => CallOutcome::Rotated(issued),
                Err(TokenCallError::InvalidGrant { .. } | TokenCallError::ExpiredCode { .. }) => {
                    CallOutcome::GrantRejected
                }
                Err(TokenCallError::InvalidClient { .. }) if !reloaded => {
                    // RD refused the client before looking at the token: it is
                    // unspent, and the secret may have been rotated since we read it.
                    // The re-read is bounded by the lease like every step under it.
                    reloaded = true;
                    let reread = async {
                        self.credentials.reload().await?;
                        self.credentials.credentials(c.product).await
                    };
                    match tokio::time::timeout(claim.deadline.remaining(), reread).await {
                        Ok(Ok(fresh)) => {
                            credentials = fresh;
                            continue;
                        }
                        Ok(Err(e)) => {
                            self.release(claim, |_| {}).await;
                            return Err(e.into());
                        }
                        Err(_) => {
                            self.release(claim, |_| {}).await;
                            return Err(RefreshFailure::OutOfTime);
                        }
                    }
                }
                Err(TokenCallError::InvalidClient { .. }) => CallOutcome::ClientRejected,
                Err(TokenCallError::RateLimited { retry_after }) => CallOutcome::NotProcessed {
                    retry_after,
                    reason: "rate_limited",
                },
                Err(TokenCallError::Transient {
                    ambiguous: false, ..
                }) => CallOutcome::NotProcessed {
                    retry_after: None,
                    reason: "unreachable",
                },
                Err(TokenCallError::Transient {
                    ambiguous: true, ..
                }) => CallOutcome::Ambiguous,
                // A refusal that is not about the grant: RD did not rotate.
                Err(TokenCallError::Other { .. }) => CallOutcome::NotProcessed {
                    retry_after: None,
                    reason: "refused",
                },
            };
            return Ok(outcome);
        }
    }

    async fn spend(
        &self,
        claim: Claim,
        credentials: ClientCredentials,
    ) -> Result<Refreshed, RefreshFailure> {
        let outcome = self.call_rd(&claim, credentials).await?;
        let c = &claim.connection;
        match outcome {
            CallOutcome::Rotated(issued) => {
                // Keep the refresh token RD returns; keep ours only if it sent none.
                let pair = issued.refreshed_pair(
                    c.product,
                    c.tokens.refresh_token.clone(),
                    self.clock.now(),
                );
                let committed = self.commit(&claim, pair).await;
                if let Ok(Refreshed::Rotated(stored)) = &committed
                    && c.backoff.expiring_warned
                {
                    // The warning is over: the new refresh token lives on.
                    self.publish(EventKind::ConnectionRecovered, stored, "refreshed")
                        .await;
                }
                committed
            }
            CallOutcome::GrantRejected => self.grant_rejected(&claim).await,
            CallOutcome::ClientRejected => {
                tracing::error!(
                    connection_id = %c.id,
                    product = %c.product,
                    "RD Station rejected the client credentials; the connection is left active"
                );
                self.release(&claim, |_| {}).await;
                Err(RefreshFailure::DeploymentCredentialsRejected)
            }
            CallOutcome::NotProcessed {
                retry_after,
                reason,
            } => {
                let until = self.back_off(&claim, retry_after, reason, false).await;
                tracing::warn!(connection_id = %c.id, reason, "refresh not processed by RD; backing off");
                Err(RefreshFailure::NotProcessed { until })
            }
            CallOutcome::Ambiguous => {
                let floor = Some(self.settings.ambiguous_retry_min);
                let until = self.back_off(&claim, floor, "ambiguous", true).await;
                tracing::warn!(connection_id = %c.id, "refresh outcome unknown; the same token will be retried");
                Err(RefreshFailure::Ambiguous { until })
            }
        }
    }

    /// Releases the lease with a backoff. The intent stays (marked ambiguous) when
    /// this attempt was ambiguous or an earlier one was; otherwise it is cleared.
    /// After [`RefreshSettings::failing_after`] failures in a row the connection is
    /// flagged `refresh_failing` (still active) and one event goes out.
    async fn back_off(
        &self,
        claim: &Claim,
        floor: Option<Duration>,
        reason: &'static str,
        ambiguous: bool,
    ) -> Timestamp {
        let failures = claim.connection.backoff.failures.saturating_add(1);
        let delay = delay_after(
            failures,
            self.settings.backoff_base,
            self.settings.backoff_cap,
            floor,
        );
        let until = self.clock.now().plus_seconds(delay.as_secs().max(1) as i64);
        let keep_intent = ambiguous || claim.ambiguous_history;
        let failing = failures >= self.settings.failing_after;
        // Once per run of failures, when the refresh token dies within the
        // warning window.
        let already_warned = claim.connection.backoff.expiring_warned;
        let warn_expiring = !already_warned
            && claim
                .connection
                .refresh_token_dies_at()
                .is_some_and(|dies| {
                    dies.0 - self.clock.now().0 <= self.settings.expiring_warning.as_secs() as i64
                });
        let released = self
            .release(claim, |c| {
                c.backoff = RefreshBackoff {
                    failures,
                    next_attempt_at: Some(until),
                    last_error: Some(reason.to_owned()),
                    expiring_warned: already_warned || warn_expiring,
                };
                c.intent = claim
                    .connection
                    .intent
                    .clone()
                    .filter(|_| keep_intent)
                    .map(|i| RefreshIntent {
                        ambiguous: true,
                        ..i
                    });
                if failing {
                    c.status_reason = Some(REFRESH_FAILING.to_owned());
                }
            })
            .await;
        if let Some(stored) = released
            .as_ref()
            .filter(|_| failures == self.settings.failing_after)
        {
            tracing::warn!(connection_id = %stored.id, failures, reason, "refreshes keep failing; the connection stays active");
            self.publish(EventKind::ConnectionRefreshFailing, stored, reason)
                .await;
        }
        if let Some(stored) = released.as_ref().filter(|_| warn_expiring) {
            tracing::warn!(connection_id = %stored.id, failures, reason, "the refresh token dies soon unless a refresh succeeds");
            self.publish(EventKind::ConnectionExpiring, stored, reason)
                .await;
        }
        until
    }

    /// Gives the lease back (with `change` applied), conditional on still holding
    /// it and within the holder's deadline. If that write fails, the lease simply
    /// expires at its deadline, with the intent left on the item: the conservative
    /// state. Returns the stored connection when the write landed.
    async fn release(
        &self,
        claim: &Claim,
        change: impl FnOnce(&mut Connection),
    ) -> Option<Connection> {
        let mut released = Connection {
            lease: None,
            updated_at: self.clock.now(),
            ..claim.connection.clone()
        };
        if !claim.ambiguous_history {
            released.intent = None;
        }
        change(&mut released);
        match claim
            .deadline
            .retry("lease release", || {
                self.store.update_holding_lease(&released, &claim.lease.id)
            })
            .await
        {
            Ok(stored) => Some(stored),
            Err(e) => {
                tracing::warn!(connection_id = %claim.connection.id, error = %e, "could not release the refresh lease; it will expire");
                None
            }
        }
    }

    /// Commits a rotated pair under the lease, retrying store failures until half
    /// the commit budget is left (the other half is the rescue's); on failure the
    /// pair goes to the rescue store.
    async fn commit(&self, claim: &Claim, pair: TokenPair) -> Result<Refreshed, RefreshFailure> {
        let committed = claim
            .connection
            .with_new_pair(pair.clone(), self.clock.now());
        let commit_deadline = claim.deadline.earlier_by(self.settings.commit_budget() / 2);
        let result = commit_deadline
            .retry("commit", || {
                self.store.update_holding_lease(&committed, &claim.lease.id)
            })
            .await;
        match result {
            Ok(stored) => return Ok(Refreshed::Rotated(stored)),
            // An earlier attempt may have landed with its answer lost.
            Err(StoreError::Conflict {
                current: Some(current),
                ..
            }) if current.tokens == pair => return Ok(Refreshed::Rotated(*current)),
            Err(e) => {
                tracing::error!(connection_id = %claim.connection.id, error = %e, "could not commit the rotated pair; rescuing it");
            }
        }
        self.rescue(claim, pair).await
    }

    /// Saves a pair whose commit failed in the rescue store (until a quarter of the
    /// commit budget is left), then marks the connection `possibly_lost`; all
    /// within the holder's deadline.
    async fn rescue(&self, claim: &Claim, pair: TokenPair) -> Result<Refreshed, RefreshFailure> {
        let c = &claim.connection;
        let rescued = RescuedPair {
            connection_id: c.id.clone(),
            lease_id: claim.lease.id.clone(),
            tokens: pair,
            spent_refresh_token: c.tokens.refresh_token.fingerprint(),
            replaced_access_token: c.tokens.access_token.fingerprint(),
            rescued_at: self.clock.now(),
        };
        // A quarter of the commit budget stays for marking the connection, so that
        // a store that keeps refusing cannot leave the item silent as well.
        let saved = claim
            .deadline
            .earlier_by(self.settings.commit_budget() / 4)
            .retry("rescue", || self.rescues.put_rescue(&rescued))
            .await;
        let reason = match &saved {
            Ok(()) => "commit_failed",
            Err(e) => {
                tracing::error!(
                    connection_id = %c.id,
                    new_refresh_token = %rescued.tokens.refresh_token.fingerprint(),
                    error = %e,
                    "ROTATED REFRESH TOKEN LOST: it could be neither committed nor saved in the rescue store"
                );
                "rescue_failed"
            }
        };
        let replaced = c.tokens.clone();
        let rotated = rescued.tokens.clone();
        let marked = self
            .mark(&c.id, &claim.deadline, |current| {
                // Only if the pair this refresh replaced is still the stored one: not
                // if the commit landed after all (its answers lost), nor if a newer
                // pair arrived (a reconnect). Both tokens must match: a Marketing
                // refresh token is stable, so it alone cannot tell.
                (current.tokens.refresh_token == replaced.refresh_token
                    && current.tokens.access_token == replaced.access_token)
                    .then_some((ConnectionStatus::PossiblyLost, reason))
            })
            .await;
        match marked {
            // The commit landed; only its answers were lost.
            Some(current) if current.tokens == rotated => Ok(Refreshed::Rotated(current)),
            // A newer pair was stored meanwhile (a reconnect): the connection is fine.
            Some(current) if current.status == ConnectionStatus::Active => {
                Ok(Refreshed::ByOtherWorker(current))
            }
            Some(current) => Err(RefreshFailure::PossiblyLost(Box::new(current))),
            None => {
                if saved.is_err() {
                    // The operators must hear of it even though the item says nothing.
                    let event = ServiceEvent {
                        kind: EventKind::ConnectionPossiblyLost,
                        connection_id: Some(c.id.clone()),
                        product: Some(c.product),
                        reason: reason.to_owned(),
                        tags: c.tags.clone(),
                        dies_at: None,
                    };
                    if let Err(e) = self.events.publish(&event).await {
                        tracing::error!(connection_id = %c.id, error = %e, "could not publish an event");
                    }
                }
                Err(RefreshFailure::Store(StoreError::Unavailable(
                    if saved.is_ok() {
                        "the rotated pair could not be committed; it waits in the rescue store"
                            .to_owned()
                    } else {
                        "the rotated pair could not be committed or saved".to_owned()
                    },
                )))
            }
        }
    }

    async fn grant_rejected(&self, claim: &Claim) -> Result<Refreshed, RefreshFailure> {
        let c = &claim.connection;
        let current = claim
            .deadline
            .retry("re-read", || self.store.get(&c.id))
            .await?
            .ok_or(RefreshFailure::NotFound)?;
        if current.tokens.refresh_token != c.tokens.refresh_token {
            // Someone else stored a newer pair (a reconnect, a restore): use it.
            return Ok(Refreshed::ByOtherWorker(current));
        }
        // A pair rescued from a failed commit beats declaring the connection dead.
        let rescued =
            tokio::time::timeout(claim.deadline.remaining(), self.restore_rescued(&current));
        let unsure = match rescued.await {
            Ok(RescueCheck::Restored(restored)) => return Ok(Refreshed::Restored(*restored)),
            Ok(RescueCheck::NoneWaiting) => false,
            Ok(RescueCheck::Unsure) | Err(_) => true,
        };
        // A pair that may wait in the rescue store unrestored keeps the connection
        // recoverable: never call it revoked then.
        let (status, reason) = if claim.ambiguous_history || unsure {
            (ConnectionStatus::PossiblyLost, "lost_in_flight")
        } else {
            (ConnectionStatus::NeedsReauth, "revoked")
        };
        let spent = c.tokens.refresh_token.clone();
        let marked = self
            .mark(&c.id, &claim.deadline, |current| {
                (current.tokens.refresh_token == spent).then_some((status, reason))
            })
            .await;
        // Tell the truth from the latest read: a newer pair stored meanwhile wins.
        let current = match marked {
            Some(stored) => stored,
            None => self.store.get(&c.id).await?.unwrap_or(current),
        };
        if current.tokens.refresh_token != c.tokens.refresh_token {
            return Ok(Refreshed::ByOtherWorker(current));
        }
        Err(match status {
            ConnectionStatus::PossiblyLost => RefreshFailure::PossiblyLost(Box::new(current)),
            _ => RefreshFailure::NeedsReauth(Box::new(current)),
        })
    }

    /// Sets a terminal status (decided by `decide` on a fresh read), clears lease
    /// and intent, and publishes the matching event; within `deadline`. Returns the
    /// stored connection (as written, or as found when `decide` declined), or
    /// `None` if the write could not be made.
    async fn mark(
        &self,
        id: &ConnectionId,
        deadline: &Deadline,
        decide: impl Fn(&Connection) -> Option<(ConnectionStatus, &'static str)>,
    ) -> Option<Connection> {
        loop {
            let current = match deadline.retry("status read", || self.store.get(id)).await {
                Ok(Some(c)) => c,
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(connection_id = %id, error = %e, "could not read the connection to mark it");
                    return None;
                }
            };
            let Some((status, reason)) = decide(&current) else {
                return Some(current);
            };
            let marked = Connection {
                status,
                status_reason: Some(reason.to_owned()),
                lease: None,
                intent: None,
                backoff: RefreshBackoff {
                    last_error: Some(reason.to_owned()),
                    ..current.backoff.clone()
                },
                updated_at: self.clock.now(),
                ..current
            };
            match deadline
                .retry("status write", || self.store.update(&marked))
                .await
            {
                Ok(stored) => {
                    let kind = match status {
                        ConnectionStatus::NeedsReauth => EventKind::ConnectionNeedsReauth,
                        _ => EventKind::ConnectionPossiblyLost,
                    };
                    tracing::warn!(connection_id = %id, status = status.as_str(), reason, "connection marked");
                    self.publish(kind, &stored, reason).await;
                    return Some(stored);
                }
                // Written by someone else in between: decide again on a fresh read.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::error!(connection_id = %id, error = %e, "could not mark the connection");
                    return None;
                }
            }
        }
    }

    async fn publish(&self, kind: EventKind, c: &Connection, reason: &str) {
        let event = ServiceEvent {
            kind,
            connection_id: Some(c.id.clone()),
            product: Some(c.product),
            reason: reason.to_owned(),
            tags: c.tags.clone(),
            dies_at: (kind == EventKind::ConnectionExpiring)
                .then(|| c.refresh_token_dies_at())
                .flatten(),
        };
        if let Err(e) = self.events.publish(&event).await {
            tracing::error!(connection_id = %c.id, error = %e, "could not publish an event");
        }
    }

    /// Publishes a deployment-wide event (no connection).
    pub async fn publish_deployment_error(&self) {
        let event = ServiceEvent {
            kind: EventKind::DeploymentCredentialsRejected,
            connection_id: None,
            product: None,
            reason: "invalid_client".to_owned(),
            tags: Tags::default(),
            dies_at: None,
        };
        if let Err(e) = self.events.publish(&event).await {
            tracing::error!(error = %e, "could not publish an event");
        }
    }

    /// Looks up the pair rescued in exchange for the pair `current` holds, and
    /// restores it if one waits.
    async fn restore_rescued(&self, current: &Connection) -> RescueCheck {
        let key = RescueKey::replacing(current);
        match self.rescues.find_rescue(&key).await {
            Ok(Some(rescued)) => match self.restore_and_delete(&rescued).await {
                Ok(Some(restored)) => RescueCheck::Restored(Box::new(restored)),
                // The connection moved on since it was read (another instance
                // restored the pair, or a reconnect): the caller reads it again.
                Ok(None) => RescueCheck::NoneWaiting,
                Err(e) => {
                    tracing::error!(connection_id = %current.id, error = %e, "could not restore a rescued pair; it stays in the rescue store");
                    RescueCheck::Unsure
                }
            },
            Ok(None) => RescueCheck::NoneWaiting,
            Err(e) => {
                tracing::error!(connection_id = %current.id, error = %e, "could not look up the rescue store");
                RescueCheck::Unsure
            }
        }
    }

    /// [`RefreshEngine::restore`], then deletes the pair once it is restored or
    /// proven superseded (a failed delete leaves a superseded pair for the sweep).
    async fn restore_and_delete(
        &self,
        rescued: &RescuedPair,
    ) -> Result<Option<Connection>, StoreError> {
        let outcome = self.restore(rescued).await?;
        if let Err(e) = self.rescues.delete_rescue(&rescued.key()).await {
            tracing::warn!(connection_id = %rescued.connection_id, error = %e, "could not delete a handled rescued pair");
        }
        Ok(outcome)
    }

    /// Restores every pair waiting in the rescue store (or deletes it once proven
    /// superseded); a pair whose restore fails stays for the next sweep. Nothing
    /// decides on what a sweep did not find: refreshes look pairs up by key.
    pub async fn drain_rescues(&self) -> DrainReport {
        let mut report = DrainReport::default();
        let mut after = None;
        for _ in 0..MAX_DRAIN_PAGES {
            let page = match self.rescues.list_rescues(after.as_deref()).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "could not list the rescue store");
                    report.errors += 1;
                    break;
                }
            };
            for key in page.keys {
                let found = match self.rescues.find_rescue(&key).await {
                    Ok(Some(found)) => found,
                    // Restored by another instance since the listing.
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(connection_id = %key.connection_id, error = %e, "could not read a rescued pair");
                        report.errors += 1;
                        report.unrestored.push(key.connection_id);
                        report.still_waiting(None);
                        continue;
                    }
                };
                match self.restore_and_delete(&found).await {
                    Ok(Some(c)) => report.restored.push(c),
                    Ok(None) => report.superseded += 1,
                    Err(e) => {
                        tracing::error!(connection_id = %key.connection_id, error = %e, "could not restore a rescued pair; it stays in the rescue store");
                        report.errors += 1;
                        report.unrestored.push(key.connection_id);
                        report.still_waiting(Some(found.rescued_at));
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        report
    }

    /// Restores a rescued pair onto its connection, unless a newer pair is there
    /// (or the connection is gone): returns the restored connection, or `None`
    /// when the pair is superseded.
    ///
    /// # Errors
    /// [`StoreError`] if the store fails.
    pub async fn restore(&self, rescued: &RescuedPair) -> Result<Option<Connection>, StoreError> {
        for _ in 0..RESTORE_ATTEMPTS {
            let Some(current) = self.store.get(&rescued.connection_id).await? else {
                return Ok(None);
            };
            // Restore only onto the very pair this one replaced. Marketing refresh
            // tokens are stable, so the refresh token alone cannot tell that a newer
            // access token was stored since: both must match.
            let superseded = current.tokens.refresh_token.fingerprint()
                != rescued.spent_refresh_token
                || current.tokens.access_token.fingerprint() != rescued.replaced_access_token;
            if superseded {
                return Ok(None);
            }
            let restored = current.with_new_pair(rescued.tokens.clone(), self.clock.now());
            match self.store.update(&restored).await {
                Ok(stored) => {
                    tracing::info!(connection_id = %stored.id, "restored a rescued token pair");
                    self.publish(
                        EventKind::ConnectionRecovered,
                        &stored,
                        "restored_from_rescue",
                    )
                    .await;
                    return Ok(Some(stored));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        // Written by others at every try: leave the pair for the next lookup.
        Err(StoreError::Unavailable(
            "the connection kept changing while a rescued pair was restored".to_owned(),
        ))
    }
}

/// Why a lease was not claimed.
enum ClaimError {
    Store(StoreError),
    OutOfTime,
}

impl From<StoreError> for ClaimError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}
