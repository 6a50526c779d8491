//! The proxy: other systems call RD Station's API through it with their own AWS
//! identity and never see a token.
//!
//! For each request: the connection's access token comes from this instance's
//! [`TokenCache`] (no store read when warm) or from the store; the connection's
//! rate budget is taken (when on); the request goes to RD with the token; a 401
//! refreshes through the refresh protocol, passing the refused token (so a token
//! another worker already replaced costs no RD call), and the request is retried
//! exactly once. Idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS) are
//! retried on 429/502/503/504 with full-jitter backoff that honours
//! `Retry-After` (seconds or an HTTP date), within a total budget under API
//! Gateway's 30 s. POST and PATCH are sent again only when they never reached
//! RD: RD is not known to deduplicate on `Idempotency-Key`, so the header is
//! passed on and buys no retry.

mod budget_slices;
mod token_cache;

pub use budget_slices::{BudgetSlices, Local};

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use backon::{BackoffBuilder, ExponentialBuilder};

pub use token_cache::{CachedToken, TokenCache};

use crate::domain::{Connection, ConnectionId, ConnectionStatus, RdPath};
use crate::ports::{
    BudgetDecision, ConnectionStore, RateBudget, RdApi, StoreError, UpstreamError, UpstreamRequest,
    UpstreamResponse,
};
use crate::secret::AccessToken;
use crate::services::refresh_protocol::{RefreshEngine, RefreshFailure, RefreshRequest, Refreshed};

/// How the proxy behaves.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Total time one request may spend on retries (under API Gateway's 30 s).
    pub retry_budget: Duration,
    /// Requests a connection may send RD per minute, across all instances, unless
    /// the connection has a limit of its own; `None` turns the budget off.
    pub rate_limit_per_minute: Option<u32>,
    /// The largest answer from RD passed back to a caller. A Lambda answer
    /// carries at most 6 MB, and API Gateway's Lambda proxy format carries
    /// binary bodies in base64 (a third larger) and JSON bodies as an escaped
    /// string: 4 MiB of RD's answer leaves room for either. Larger answers get a
    /// clear 502 instead of a failed invocation nobody can read.
    pub max_answer_bytes: usize,
    /// How long an instance may spend a slice of a connection's budget after
    /// taking it with one shared write (see [`BudgetSlices`]); zero takes
    /// one request per write.
    pub budget_slice: Duration,
}

/// The default life of a budget slice: at a steady 2 requests a second over
/// four instances, about one write per five requests (docs/benchmarks.md).
pub const DEFAULT_BUDGET_SLICE: Duration = Duration::from_secs(10);

impl Default for ProxySettings {
    /// 20 s of retries; RD's default account limit, 120 requests a minute,
    /// taken in slices of [`DEFAULT_BUDGET_SLICE`]; answers up to 4 MiB.
    fn default() -> Self {
        Self {
            retry_budget: Duration::from_secs(20),
            rate_limit_per_minute: Some(120),
            max_answer_bytes: 4 * 1024 * 1024,
            budget_slice: DEFAULT_BUDGET_SLICE,
        }
    }
}

/// One caller request to forward.
#[derive(Debug)]
pub struct ProxyRequest {
    /// The method.
    pub method: Method,
    /// Where on RD's API.
    pub path: RdPath,
    /// The caller's headers (filtered here before they go to RD).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// Milliseconds since the epoch by which the request must be over (its
    /// invocation's end less a margin to answer), if its host has one: a
    /// refresh starts only if it fits, and retries and waits on RD stop there.
    pub finish_by_ms: Option<i64>,
}

/// RD's answer and how it was reached.
#[derive(Debug)]
pub struct Proxied {
    /// RD's answer (passed back as it is, 4xx and 5xx included).
    pub response: UpstreamResponse,
    /// Whether a refresh happened on the way.
    pub refreshed: bool,
    /// Retries after 429/5xx or a connection that never reached RD.
    pub retries: u32,
    /// Time spent waiting on RD.
    pub upstream: Duration,
}

/// Why a request was not forwarded (or got no answer).
#[derive(Debug, thiserror::Error)]
pub enum ProxyFailure {
    /// No such connection.
    #[error("no such connection")]
    NotFound,
    /// A person must connect the account again.
    #[error("the connection needs re-authorization ({reason})")]
    NeedsReauth {
        /// Why.
        reason: String,
    },
    /// The connection's refresh token may have been lost.
    #[error("the connection is possibly lost ({reason})")]
    PossiblyLost {
        /// Why.
        reason: String,
    },
    /// No usable token right now (backing off after failures, RD unreachable).
    #[error("no usable token for now")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
    /// The connection's request budget for this minute is spent.
    #[error("the connection's request budget is spent for this minute")]
    RateLimited {
        /// Until the budget refills.
        retry_after: Duration,
    },
    /// RD gave no answer.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The path is on the other product's API: its token would be refused.
    #[error("the path is on another product's API than the connection's ({product})")]
    WrongProduct {
        /// The connection's product.
        product: crate::domain::Product,
    },
    /// The invocation would end before the request could be completed (a
    /// refresh could not start safely, or RD had not answered in time).
    #[error("the request could not be completed before the invocation ends")]
    OutOfTime,
}

/// Request headers that never go to RD: the caller's credentials and cookies,
/// AWS's and API Gateway's own, and hop-by-hop ones.
fn forwardable(mut headers: HeaderMap) -> HeaderMap {
    crate::outbound::rdstation::api_client::remove_hop_by_hop(&mut headers);
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            *name == header::AUTHORIZATION
                || *name == header::COOKIE
                || *name == header::HOST
                || *name == header::CONTENT_LENGTH
                || n.starts_with("x-amz")
                || n.starts_with("x-forwarded-")
                || n == "forwarded"
                || n == "via"
                // Hop-by-hop in practice though no RFC lists them.
                || n == "proxy-connection"
                || n == "proxy-authorization"
                // Ours: which tenant the request acts in.
                || n == crate::services::tenancy::TENANT_HEADER
        })
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
    headers
}

/// How long RD asked us to wait, when it sent `Retry-After`: delay-seconds or
/// an HTTP date (RFC 9110 §10.2.3), measured from `now_ms`; a date in the past
/// is no wait.
fn retry_after(headers: &HeaderMap, now_ms: i64) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let now = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(now_ms).ok()?);
    Some(at.duration_since(now).unwrap_or_default())
}

/// A 401 to a token whose pair RD issued less than this long ago (seconds) is
/// passed back to the caller rather than answered with another rotation.
pub const REFUSAL_COOLDOWN_SECONDS: i64 = 60;

/// The time limits of one request, on the service clock (ms since the epoch).
#[derive(Clone, Copy, Debug)]
struct Times {
    /// No retry pause may end after this (the retry budget, or the invocation).
    retry_until_ms: i64,
    /// No attempt may run past this (the invocation's end, less a margin).
    finish_by_ms: Option<i64>,
}

/// The proxy's collaborators. Cheap to clone.
#[derive(Clone)]
pub struct ProxyService {
    /// Connections (read on a cache miss).
    pub connections: Arc<dyn ConnectionStore>,
    /// The refresh protocol (on a 401 or an expiring token).
    pub engine: RefreshEngine,
    /// RD's API.
    pub upstream: Arc<dyn RdApi>,
    /// This instance's tokens.
    pub tokens: Arc<TokenCache>,
    /// The shared request counter, when the budget is on.
    pub budget: Option<Arc<dyn RateBudget>>,
    /// This instance's slices of the shared budgets.
    pub slices: Arc<BudgetSlices>,
    /// How it behaves.
    pub settings: ProxySettings,
}

impl ProxyService {
    /// Forwards one request for connection `id` (see the module docs).
    ///
    /// # Errors
    /// [`ProxyFailure`] when the request was not forwarded or got no answer.
    pub async fn forward(
        &self,
        id: &ConnectionId,
        request: ProxyRequest,
    ) -> Result<Proxied, ProxyFailure> {
        let finish_by_ms = request.finish_by_ms;
        // One retry budget for the whole request (both sends, a refresh between),
        // never past the invocation.
        let retry_until_ms = {
            let budget_end =
                self.engine.clock.now_ms() + self.settings.retry_budget.as_millis() as i64;
            finish_by_ms.map_or(budget_end, |end| end.min(budget_end))
        };
        let (cached, mut refreshed) = self.token(id, finish_by_ms).await?;
        if request.path.belongs_to_other_product_than(cached.product) {
            // RD would answer 401 to every such call, and each 401 would cost a
            // refresh: refuse it here, without calling RD.
            return Err(ProxyFailure::WrongProduct {
                product: cached.product,
            });
        }
        let issued_at = cached.issued_at;
        let mut limit = cached
            .rate_limit_per_minute
            .or(self.settings.rate_limit_per_minute);
        let idempotent = matches!(
            request.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let mut upstream = UpstreamRequest {
            method: request.method,
            path: request.path,
            headers: forwardable(request.headers),
            body: request.body,
            access_token: cached.token,
        };
        let times = Times {
            retry_until_ms,
            finish_by_ms,
        };
        let mut proxied = self
            .send(id, &mut upstream, idempotent, &mut limit, times)
            .await?;
        let fresh = self.engine.clock.now().0 - issued_at.0 < REFUSAL_COOLDOWN_SECONDS;
        if proxied.response.status == StatusCode::UNAUTHORIZED && !fresh {
            // Every 401 alike (Marketing may say "expired" only in a remapped
            // header; CRM says nothing): refresh, then try exactly once more.
            // Not for a pair issued moments ago: RD refusing it is not expiry
            // (a revoked app, a permission), and another rotation would not help;
            // its 401 goes back to the caller.
            let refused = upstream.access_token.clone();
            upstream.access_token = self.replace_refused(id, refused, finish_by_ms).await?;
            refreshed = true;
            let again = self
                .send(id, &mut upstream, idempotent, &mut limit, times)
                .await?;
            proxied = Proxied {
                retries: proxied.retries + again.retries,
                upstream: proxied.upstream + again.upstream,
                ..again
            };
        }
        proxied.refreshed = refreshed;
        Ok(proxied)
    }

    /// A usable access token for `id`: cached, stored, or refreshed now. Says
    /// whether a refresh happened.
    async fn token(
        &self,
        id: &ConnectionId,
        finish_by_ms: Option<i64>,
    ) -> Result<(CachedToken, bool), ProxyFailure> {
        let now = self.engine.clock.now();
        if let Some(cached) = self.tokens.get(id, now) {
            return Ok((cached, false));
        }
        let connection = self
            .connections
            .get(id)
            .await?
            .ok_or(ProxyFailure::NotFound)?;
        usable_status(&connection)?;
        if self.tokens.usable(&connection, now) {
            self.tokens.put(&connection, now);
            return Ok((CachedToken::of(&connection), false));
        }
        // Expiring or expired: the protocol refreshes it (or says why not).
        let request = RefreshRequest {
            finish_by_ms,
            ..RefreshRequest::default()
        };
        let refreshed = self.refresh(id, request).await?;
        Ok((CachedToken::of(&refreshed), true))
    }

    /// After RD refused `refused`: the protocol's answer, with no RD call when
    /// another worker stored a different token already.
    async fn replace_refused(
        &self,
        id: &ConnectionId,
        refused: AccessToken,
        finish_by_ms: Option<i64>,
    ) -> Result<AccessToken, ProxyFailure> {
        self.tokens.forget(id);
        let request = RefreshRequest {
            finish_by_ms,
            ..RefreshRequest::rejected(refused)
        };
        let connection = self.refresh(id, request).await?;
        Ok(connection.tokens.access_token)
    }

    async fn refresh(
        &self,
        id: &ConnectionId,
        request: RefreshRequest,
    ) -> Result<Connection, ProxyFailure> {
        let now = self.engine.clock.now();
        let finish_by_ms = request.finish_by_ms;
        let wait_until = |until: crate::clock::Timestamp| ProxyFailure::Unavailable {
            retry_after: Duration::from_secs((until.0 - now.0).max(1) as u64),
        };
        match self.engine.refresh(id, request).await {
            Ok(
                Refreshed::AlreadyFresh(c)
                | Refreshed::Rotated(c)
                | Refreshed::ByOtherWorker(c)
                | Refreshed::Restored(c),
            ) => {
                self.tokens.put(&c, self.engine.clock.now());
                Ok(c)
            }
            Err(RefreshFailure::NotFound) => Err(ProxyFailure::NotFound),
            Err(RefreshFailure::NeedsReauth(c)) => Err(ProxyFailure::NeedsReauth {
                reason: reason_of(&c),
            }),
            Err(RefreshFailure::PossiblyLost(c)) => Err(ProxyFailure::PossiblyLost {
                reason: reason_of(&c),
            }),
            Err(
                RefreshFailure::BackingOff { until }
                | RefreshFailure::NotProcessed { until }
                | RefreshFailure::Ambiguous { until },
            ) => Err(wait_until(until)),
            Err(RefreshFailure::Capped { retry_after }) => {
                Err(ProxyFailure::Unavailable { retry_after })
            }
            // Too little of the invocation was left to refresh safely; without an
            // invocation's end, too little of a lease (a slow claim): try again.
            Err(RefreshFailure::OutOfTime) if finish_by_ms.is_some() => {
                Err(ProxyFailure::OutOfTime)
            }
            Err(e) => {
                tracing::warn!(connection_id = %id, error = %e, "no token for a proxied request");
                Err(ProxyFailure::Unavailable {
                    retry_after: Duration::from_secs(5),
                })
            }
        }
    }

    /// Sends with the connection's budget taken before each attempt, retrying what
    /// may be retried until the request's retry budget ends; no attempt runs past
    /// the invocation.
    async fn send(
        &self,
        id: &ConnectionId,
        request: &mut UpstreamRequest,
        idempotent: bool,
        limit: &mut Option<u32>,
        times: Times,
    ) -> Result<Proxied, ProxyFailure> {
        let clock = &self.engine.clock;
        let mut waited = Duration::ZERO;
        let mut retries = 0;
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(4))
            .with_max_times(4)
            .with_jitter()
            .build();
        loop {
            self.take_budget(id, request, limit, times.finish_by_ms)
                .await?;
            let attempt = Instant::now();
            let result = match times.finish_by_ms {
                None => self.upstream.send(&*request).await,
                Some(end) => {
                    let left = Duration::from_millis((end - clock.now_ms()).max(0) as u64);
                    match tokio::time::timeout(left, self.upstream.send(&*request)).await {
                        Ok(result) => result,
                        Err(_) => return Err(ProxyFailure::OutOfTime),
                    }
                }
            };
            waited += attempt.elapsed();
            let (retryable, hint) = match &result {
                Ok(r) => (
                    idempotent && matches!(r.status.as_u16(), 429 | 502 | 503 | 504),
                    retry_after(&r.headers, self.engine.clock.now_ms()),
                ),
                // It never reached RD: safe whatever the method.
                Err(UpstreamError::NotSent(_)) => (true, None),
                Err(UpstreamError::NoAnswer(_)) => (idempotent, None),
                // Asking again brings the same answer.
                Err(UpstreamError::AnswerTooLarge { .. }) => (false, None),
            };
            let pause = pauses.next().map(|p| p.max(hint.unwrap_or_default()));
            match pause {
                // Checked: RD's Retry-After may be any number of seconds.
                Some(pause)
                    if retryable
                        && i64::try_from(pause.as_millis())
                            .ok()
                            .and_then(|p| clock.now_ms().checked_add(p))
                            .is_some_and(|resume| resume < times.retry_until_ms) =>
                {
                    retries += 1;
                    tokio::time::sleep(pause).await;
                }
                _ => {
                    return Ok(Proxied {
                        response: result?,
                        refreshed: false,
                        retries,
                        upstream: waited,
                    });
                }
            }
        }
    }

    /// Takes one request from the connection's budget (its own limit, else the
    /// deployment's; nothing when the deployment turned the budget off), only
    /// while the store still holds the token `request` carries. When it does
    /// not (refreshed elsewhere, connected again, deleted), the token is read
    /// again and `request` carries the new one, or the connection is gone.
    async fn take_budget(
        &self,
        id: &ConnectionId,
        request: &mut UpstreamRequest,
        limit: &mut Option<u32>,
        finish_by_ms: Option<i64>,
    ) -> Result<(), ProxyFailure> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if self.settings.rate_limit_per_minute.is_none() {
            return Ok(());
        }
        for _ in 0..3 {
            let Some(per_minute) = *limit else {
                return Ok(());
            };
            let now_ms = self.engine.clock.now_ms();
            let token = &request.access_token;
            let wanted = match self.slices.spend(id, token, now_ms) {
                Local::Spent => return Ok(()),
                Local::Refused(retry_after) => {
                    return Err(ProxyFailure::RateLimited { retry_after });
                }
                Local::Take(wanted) => wanted,
            };
            let pace = self.slices.pace(per_minute);
            let horizon_ms = self.slices.horizon_ms();
            match budget
                .take(id, token, pace, wanted, horizon_ms, now_ms)
                .await?
            {
                BudgetDecision::Allowed { granted, first_ms } => {
                    return match self.slices.taken(
                        id,
                        token,
                        granted,
                        first_ms,
                        pace.emission_ms,
                        now_ms,
                    ) {
                        Local::Refused(retry_after) => {
                            Err(ProxyFailure::RateLimited { retry_after })
                        }
                        Local::Spent | Local::Take(_) => Ok(()),
                    };
                }
                BudgetDecision::Exhausted { retry_after } => {
                    self.slices.refused(id, token, retry_after, now_ms);
                    return Err(ProxyFailure::RateLimited { retry_after });
                }
                BudgetDecision::TokenReplaced => {
                    self.slices.forget(id);
                    self.tokens.forget(id);
                    let (current, _) = self.token(id, finish_by_ms).await?;
                    request.access_token = current.token;
                    *limit = current
                        .rate_limit_per_minute
                        .or(self.settings.rate_limit_per_minute);
                }
            }
        }
        // The token kept changing under us: say so rather than send a stale one.
        Err(ProxyFailure::Unavailable {
            retry_after: Duration::from_secs(1),
        })
    }
}

fn reason_of(c: &Connection) -> String {
    c.status_reason
        .clone()
        .unwrap_or_else(|| c.status.as_str().to_owned())
}

/// Refuses connections a person must look at, without calling RD.
fn usable_status(c: &Connection) -> Result<(), ProxyFailure> {
    match c.status {
        ConnectionStatus::Active => Ok(()),
        ConnectionStatus::NeedsReauth => Err(ProxyFailure::NeedsReauth {
            reason: reason_of(c),
        }),
        ConnectionStatus::PossiblyLost => Err(ProxyFailure::PossiblyLost {
            reason: reason_of(c),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_credentials_and_aws_headers_never_reach_rd() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "AWS4-HMAC-SHA256 Credential=..."),
            ("cookie", "session=1"),
            ("host", "abc.execute-api.us-east-1.amazonaws.com"),
            ("x-amz-date", "20261202T000000Z"),
            ("x-amz-security-token", "token"),
            ("x-amzn-trace-id", "Root=1"),
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "keep-alive"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eDp5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
            ("x-custom", "kept"),
            ("x-rdconn-tenant", "acme"),
        ] {
            headers.insert(
                axum::http::HeaderName::from_static(name),
                value.parse().expect("ascii"),
            );
        }
        let out = forwardable(headers);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(out.contains_key("content-type") && out.contains_key("x-custom"));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let at = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, value.parse().expect("ascii"));
            headers
        };
        // 2026-12-03T00:00:00Z
        let now_ms = 1_796_256_000_000;
        assert_eq!(retry_after(&at("7"), now_ms), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&at("18446744073709551615"), now_ms),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            retry_after(&at("Thu, 03 Dec 2026 00:01:30 GMT"), now_ms),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(&at("Wed, 02 Dec 2026 00:00:00 GMT"), now_ms),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&at("soon"), now_ms), None);
    }
}
