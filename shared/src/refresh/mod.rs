//! The single-spend refresh protocol. Every refresh of a connection, scheduled or
//! on demand, goes through [`RefreshEngine::refresh`]; nothing calls RD's token
//! endpoint around it.
//!
//! 1. Read the connection consistently. If its access token is newer than the one
//!    the caller holds, or it is not due and the caller does not force, return it.
//! 2. Claim a lease with one conditional write (the version read, and no live
//!    lease), recording the intent: the fingerprint of the
//!    refresh token about to be spent. Losers never call RD: they wait, re-read and
//!    return the holder's result.
//! 3. Call RD with a hard timeout T; the lease L outlasts T plus the commit budget.
//! 4. Rotated: commit the pair conditional on the lease, retrying until the commit
//!    budget runs out; failing that, save it to a rescue item and mark the
//!    connection `possibly_lost` (`commit_failed`).
//! 5. Grant rejected: re-read; if nobody else committed, the connection is
//!    `possibly_lost` (`lost_in_flight`) when this token has an ambiguous attempt on
//!    record, else `needs_reauth` (`revoked`).
//! 6. Client rejected: re-read the credentials and retry once; then a
//!    deployment-wide error. The connection stays `active`.
//! 7. Not processed: release the lease and back off (`next_attempt_at`).
//! 8. Ambiguous: keep the intent, release the lease, back off; the retry presents
//!    the same refresh token.
//!
//! Invariant: at most one call presenting a given refresh token is in flight, and a
//! refresh token is presented again only after an ambiguous outcome.

mod backoff;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

pub use backoff::delay_after;
pub use settings::{LeaseTooShort, RefreshSettings};

use crate::adapters::rdstation::{IssuedTokens, RdStationClient, TokenCallError};
use crate::clock::{Clock, Timestamp};
use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, Lease, RefreshBackoff, RefreshIntent, TokenPair,
};
use crate::ports::{
    ConnectionStore, CredentialSource, CredentialsError, EventKind, EventPublisher, RescueStore,
    RescuedPair, ServiceEvent, StoreError,
};
use crate::secret::AccessToken;

/// What the caller of a refresh knows.
#[derive(Clone, Debug, Default)]
pub struct RefreshRequest {
    /// The access token the caller holds (e.g. the one RD just answered 401 to). A
    /// stored token different from it is returned without calling RD.
    pub held_access_token: Option<AccessToken>,
    /// Refresh even if the connection is not due.
    pub force: bool,
}

/// A usable connection at the end of a refresh.
#[derive(Debug)]
pub enum Refreshed {
    /// No provider call was needed: the stored pair is fresh, or newer than the
    /// caller's.
    AlreadyFresh(Connection),
    /// This call rotated the pair and committed it.
    Rotated(Connection),
    /// Another worker refreshed while this one waited.
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
    /// RD refused our client credentials even after re-reading them.
    #[error("RD rejected the deployment's client credentials")]
    DeploymentCredentialsRejected,
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
    /// Rescued pairs.
    pub rescues: Arc<dyn RescueStore>,
    /// RD app credentials.
    pub credentials: Arc<dyn CredentialSource>,
    /// The RD client; its timeout must be the settings' token timeout.
    pub rdstation: RdStationClient,
    /// Where events go.
    pub events: Arc<dyn EventPublisher>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Protocol timing.
    pub settings: RefreshSettings,
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
    claimed_at_ms: i64,
}

fn lease_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
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
        let mut baseline = request.held_access_token;
        let mut waited = false;
        let mut pause = self.settings.wait_step.0;
        loop {
            let now_ms = self.clock.now_ms();
            let now = self.clock.now();
            let current = self.store.get(id).await?.ok_or(RefreshFailure::NotFound)?;
            match current.status {
                ConnectionStatus::NeedsReauth => {
                    return Err(RefreshFailure::NeedsReauth(Box::new(current)));
                }
                ConnectionStatus::PossiblyLost => {
                    // A pair saved when its commit failed brings the connection back.
                    return match self.restore_newest_rescue(id).await? {
                        Some(restored) => Ok(Refreshed::Restored(restored)),
                        None => Err(RefreshFailure::PossiblyLost(Box::new(current))),
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
            if !request.force && !self.settings.due.is_due(&current, now) {
                return Ok(Refreshed::AlreadyFresh(current));
            }
            if let Some(lease) = current.live_lease(now_ms) {
                // Another worker holds the token: wait for it, never call RD. The
                // lease's deadline bounds the wait; after it the lease may be taken.
                waited = true;
                let until_deadline =
                    Duration::from_millis((lease.deadline_ms - now_ms).max(1) as u64);
                tokio::time::sleep(pause.min(until_deadline)).await;
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
            match self.claim(current, now, now_ms).await {
                Ok(claim) => {
                    // From here RD may rotate the token: finish in a task of its own so
                    // that a caller going away (a dropped request) cannot abandon a
                    // rotated pair between RD's answer and the commit.
                    let engine = self.clone();
                    return tokio::spawn(async move { engine.spend(claim).await })
                        .await
                        .unwrap_or_else(|e| {
                            Err(RefreshFailure::Store(StoreError::Unavailable(format!(
                                "the refresh task failed: {e}"
                            ))))
                        });
                }
                // Someone wrote in between: read again.
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn claim(
        &self,
        current: Connection,
        now: Timestamp,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        let fingerprint = current.tokens.refresh_token.fingerprint();
        // With no live lease, an intent still naming this token was left by an
        // attempt that ended ambiguously or whose holder vanished mid-call.
        let ambiguous_history = current
            .intent
            .as_ref()
            .is_some_and(|i| i.refresh_token_fingerprint == fingerprint);
        let lease = Lease {
            id: lease_id(),
            deadline_ms: now_ms + self.settings.lease().as_millis() as i64,
        };
        let claimed = Connection {
            lease: Some(lease.clone()),
            intent: Some(RefreshIntent {
                refresh_token_fingerprint: fingerprint,
                ambiguous: ambiguous_history,
            }),
            updated_at: now,
            ..current
        };
        // Conditional on the version read and on no live lease being stored.
        let connection = self.store.claim_lease(&claimed, now_ms).await?;
        Ok(Claim {
            connection,
            lease,
            ambiguous_history,
            claimed_at_ms: now_ms,
        })
    }

    async fn call_rd(&self, claim: &Claim) -> Result<CallOutcome, RefreshFailure> {
        let c = &claim.connection;
        let mut reloaded = false;
        loop {
            let credentials = match self.credentials.credentials(c.product).await {
                Ok(creds) => creds,
                Err(e) => {
                    self.release(claim, |_| {}).await;
                    return Err(e.into());
                }
            };
            let outcome = match self
                .rdstation
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
                    reloaded = true;
                    if let Err(e) = self.credentials.reload().await {
                        self.release(claim, |_| {}).await;
                        return Err(e.into());
                    }
                    continue;
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

    async fn spend(&self, claim: Claim) -> Result<Refreshed, RefreshFailure> {
        let outcome = self.call_rd(&claim).await?;
        let c = &claim.connection;
        match outcome {
            CallOutcome::Rotated(issued) => {
                // Keep the refresh token RD returns; keep ours only if it sent none.
                let pair = issued.refreshed_pair(
                    c.product,
                    c.tokens.refresh_token.clone(),
                    self.clock.now(),
                );
                self.commit(&claim, pair).await
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
        self.release(claim, |c| {
            c.backoff = RefreshBackoff {
                failures,
                next_attempt_at: Some(until),
                last_error: Some(reason.to_owned()),
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
        })
        .await;
        until
    }

    /// Gives the lease back (with `change` applied), conditional on still holding
    /// it. If that write fails, the lease simply expires at its deadline, with the
    /// intent left on the item: the conservative state.
    async fn release(&self, claim: &Claim, change: impl FnOnce(&mut Connection)) {
        let mut released = Connection {
            lease: None,
            updated_at: self.clock.now(),
            ..claim.connection.clone()
        };
        if !claim.ambiguous_history {
            released.intent = None;
        }
        change(&mut released);
        if let Err(e) = self
            .store
            .update_holding_lease(&released, &claim.lease.id)
            .await
        {
            tracing::warn!(connection_id = %claim.connection.id, error = %e, "could not release the refresh lease; it will expire");
        }
    }

    /// Commits a rotated pair under the lease, retrying store failures within the
    /// commit budget; on failure the pair goes to a rescue item.
    async fn commit(&self, claim: &Claim, pair: TokenPair) -> Result<Refreshed, RefreshFailure> {
        let committed = claim
            .connection
            .with_new_pair(pair.clone(), self.clock.now());
        let budget_end_ms = claim.claimed_at_ms
            + (self.settings.token_timeout() + self.settings.commit_budget()).as_millis() as i64;
        let mut pause = Duration::from_millis(20);
        loop {
            match self
                .store
                .update_holding_lease(&committed, &claim.lease.id)
                .await
            {
                Ok(stored) => return Ok(Refreshed::Rotated(stored)),
                Err(StoreError::Conflict { current, .. }) => {
                    // An earlier attempt may have landed with its answer lost.
                    if let Some(current) = current.filter(|c| c.tokens == pair) {
                        return Ok(Refreshed::Rotated(*current));
                    }
                    break;
                }
                Err(e) => {
                    let now_ms = self.clock.now_ms();
                    if now_ms + pause.as_millis() as i64 >= budget_end_ms {
                        tracing::error!(connection_id = %claim.connection.id, error = %e, "commit budget exhausted");
                        break;
                    }
                    tracing::warn!(connection_id = %claim.connection.id, error = %e, "commit failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
        self.rescue(claim, pair).await
    }

    /// Saves a pair whose commit failed, then marks the connection `possibly_lost`.
    async fn rescue(&self, claim: &Claim, pair: TokenPair) -> Result<Refreshed, RefreshFailure> {
        let c = &claim.connection;
        let rescued = RescuedPair {
            connection_id: c.id.clone(),
            lease_id: claim.lease.id.clone(),
            tokens: pair,
            spent_refresh_token: c.tokens.refresh_token.fingerprint(),
            rescued_at: self.clock.now(),
        };
        let mut saved = false;
        for attempt in 0..5u32 {
            match self.rescues.put_rescue(&rescued).await {
                Ok(()) => {
                    saved = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(connection_id = %c.id, error = %e, attempt, "could not save the rescued pair");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        if !saved {
            tracing::error!(
                connection_id = %c.id,
                refresh_token = %rescued.tokens.refresh_token.fingerprint(),
                "a rotated refresh token could not be stored anywhere"
            );
        }
        let marked = self
            .mark(&c.id, |current| {
                // Only if nothing newer has been stored meanwhile (e.g. a reconnect).
                (current.tokens.refresh_token == c.tokens.refresh_token)
                    .then_some((ConnectionStatus::PossiblyLost, "commit_failed"))
            })
            .await;
        match marked {
            // A newer pair was stored meanwhile (a reconnect): the connection is fine.
            Some(current) if current.status == ConnectionStatus::Active => {
                Ok(Refreshed::ByOtherWorker(current))
            }
            Some(current) => Err(RefreshFailure::PossiblyLost(Box::new(current))),
            None => Err(RefreshFailure::Store(StoreError::Unavailable(if saved {
                "the rotated pair could not be committed; it was saved for restore".to_owned()
            } else {
                "the rotated pair could not be committed or saved".to_owned()
            }))),
        }
    }

    async fn grant_rejected(&self, claim: &Claim) -> Result<Refreshed, RefreshFailure> {
        let c = &claim.connection;
        let current = self
            .store
            .get(&c.id)
            .await?
            .ok_or(RefreshFailure::NotFound)?;
        if current.tokens.refresh_token != c.tokens.refresh_token {
            // Someone else stored a newer pair (a reconnect): use it.
            return Ok(Refreshed::ByOtherWorker(current));
        }
        // A pair rescued from a failed commit beats declaring the connection dead.
        if let Some(restored) = self.restore_newest_rescue(&c.id).await? {
            return Ok(Refreshed::Restored(restored));
        }
        let (status, reason) = if claim.ambiguous_history {
            (ConnectionStatus::PossiblyLost, "lost_in_flight")
        } else {
            (ConnectionStatus::NeedsReauth, "revoked")
        };
        let marked = self
            .mark(&c.id, |current| {
                (current.tokens.refresh_token == c.tokens.refresh_token).then_some((status, reason))
            })
            .await;
        let current = marked.unwrap_or(current);
        Err(match status {
            ConnectionStatus::PossiblyLost => RefreshFailure::PossiblyLost(Box::new(current)),
            _ => RefreshFailure::NeedsReauth(Box::new(current)),
        })
    }

    /// Sets a terminal status (decided by `decide` on a fresh read), clears lease
    /// and intent, and publishes the matching event. Returns the stored connection,
    /// or `None` if the write could not be made.
    async fn mark(
        &self,
        id: &ConnectionId,
        decide: impl Fn(&Connection) -> Option<(ConnectionStatus, &'static str)>,
    ) -> Option<Connection> {
        for _ in 0..5 {
            let current = match self.store.get(id).await {
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
            let now = self.clock.now();
            let marked = Connection {
                status,
                status_reason: Some(reason.to_owned()),
                lease: None,
                intent: None,
                backoff: RefreshBackoff {
                    last_error: Some(reason.to_owned()),
                    ..current.backoff.clone()
                },
                updated_at: now,
                ..current
            };
            match self.store.update(&marked).await {
                Ok(stored) => {
                    let kind = match status {
                        ConnectionStatus::NeedsReauth => EventKind::ConnectionNeedsReauth,
                        _ => EventKind::ConnectionPossiblyLost,
                    };
                    tracing::warn!(connection_id = %id, status = status.as_str(), reason, "connection marked");
                    self.publish(kind, &stored, reason).await;
                    return Some(stored);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::error!(connection_id = %id, error = %e, "could not mark the connection");
                    return None;
                }
            }
        }
        None
    }

    async fn publish(&self, kind: EventKind, c: &Connection, reason: &str) {
        let event = ServiceEvent {
            kind,
            connection_id: Some(c.id.clone()),
            product: Some(c.product),
            reason: reason.to_owned(),
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
        };
        if let Err(e) = self.events.publish(&event).await {
            tracing::error!(error = %e, "could not publish an event");
        }
    }

    async fn restore_newest_rescue(
        &self,
        id: &ConnectionId,
    ) -> Result<Option<Connection>, RefreshFailure> {
        let mut rescues = self.rescues.rescues_for(id).await?;
        rescues.sort_by_key(|r| r.rescued_at);
        match rescues.pop() {
            Some(newest) => Ok(self.restore(&newest).await?),
            None => Ok(None),
        }
    }

    /// Restores a rescued pair onto its connection (unless a newer pair is already
    /// there), then deletes the rescue item. Returns the restored connection.
    ///
    /// # Errors
    /// [`StoreError`] if the store fails; the rescue item is kept then.
    pub async fn restore(&self, rescued: &RescuedPair) -> Result<Option<Connection>, StoreError> {
        for _ in 0..5 {
            let Some(current) = self.store.get(&rescued.connection_id).await? else {
                self.rescues
                    .delete_rescue(&rescued.connection_id, &rescued.lease_id)
                    .await?;
                return Ok(None);
            };
            // Restore only onto the token that was spent for this pair; anything else
            // means the pair was restored already or a newer one (a reconnect) is there.
            let superseded =
                current.tokens.refresh_token.fingerprint() != rescued.spent_refresh_token;
            if superseded {
                self.rescues
                    .delete_rescue(&rescued.connection_id, &rescued.lease_id)
                    .await?;
                return Ok(None);
            }
            let restored = current.with_new_pair(rescued.tokens.clone(), self.clock.now());
            match self.store.update(&restored).await {
                Ok(stored) => {
                    self.rescues
                        .delete_rescue(&rescued.connection_id, &rescued.lease_id)
                        .await?;
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
        Ok(None)
    }
}
