//! A stateful fake RD Station for tests and local runs: consent pages, the
//! Marketing and CRM v2 token endpoints, revoke, and a few protected API routes,
//! following RD's documented behaviour:
//!
//! - codes are single-use; Marketing codes live 60 min, CRM codes 5 min
//!   (`EXPIRED_CODE_GRANT` after);
//! - Marketing refresh tokens are stable; CRM refresh tokens roll on every refresh
//!   (the old one dies at once) and die after 14 days unused;
//! - access tokens expire after a configurable `expires_in`; expired ones get 401
//!   with `WWW-Authenticate: … error="expired_token"`;
//! - a token of one product is refused by the other's routes.
//!
//! Tests steer it through [`Sandbox`] methods or the `/_sandbox/*` control routes:
//! a clock offset, per-refresh-token call counters and injected faults.

mod api;
mod control;
mod model;
mod oauth;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use url::Url;

use model::State;
pub use model::{CRM_CODE_TTL, Fault, MARKETING_CODE_TTL, Stats, fingerprint};

/// One registered RD Station app (client) of a product.
#[derive(Clone, Debug)]
pub struct AppRegistration {
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: String,
    /// The registered callback; when set, `redirect_uri` must equal it exactly.
    pub redirect_uri: Option<String>,
}

/// The sandbox's apps and lifetimes.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The Marketing app.
    pub marketing: AppRegistration,
    /// The CRM app.
    pub crm: AppRegistration,
    /// Marketing access-token life in seconds (RD: 86 400).
    pub marketing_access_ttl: i64,
    /// CRM access-token life in seconds (RD: 7 200).
    pub crm_access_ttl: i64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            marketing: AppRegistration {
                client_id: "sandbox-marketing-client".to_owned(),
                client_secret: "sandbox-marketing-secret".to_owned(),
                redirect_uri: None,
            },
            crm: AppRegistration {
                client_id: "sandbox-crm-client".to_owned(),
                client_secret: "sandbox-crm-secret".to_owned(),
                redirect_uri: None,
            },
            marketing_access_ttl: 86_400,
            crm_access_ttl: 7_200,
        }
    }
}

/// The RD products the sandbox fakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxProduct {
    /// RD Station Marketing.
    Marketing,
    /// RD Station CRM v2.
    Crm,
}

/// A sandbox's shared state; cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    state: Arc<Mutex<State>>,
    /// Token-endpoint calls being held right now: by a [`Fault::Hang`], or
    /// waiting out the token latency.
    in_flight: Arc<tokio::sync::watch::Sender<usize>>,
    /// Token-endpoint calls received so far (before any latency or fault plays).
    received: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Marks a refresh token as being presented until dropped.
pub(crate) struct Presenting {
    sandbox: Sandbox,
    fingerprint: String,
    /// Whether the handler got past its waits to an answer; a guard dropped
    /// before that was dropped with its handler, because the client went away.
    answered: bool,
    /// The hold on a call waiting out the token latency; dropped after `drop`
    /// has recorded an abandoned call, so `wait_until_idle` sees the record.
    hold: Option<InFlight>,
}

impl Presenting {
    /// The handler has its answer: no client going away can stop it now.
    pub(crate) fn answered(&mut self) {
        self.answered = true;
    }

    /// Keeps the call counted as held while the guard lives (or until released).
    pub(crate) fn hold(&mut self, hold: InFlight) {
        self.hold = Some(hold);
    }

    /// Ends the hold taken by [`Presenting::hold`].
    pub(crate) fn release_hold(&mut self) {
        self.hold = None;
    }
}

impl Drop for Presenting {
    fn drop(&mut self) {
        let mut state = self.sandbox.lock();
        if let Some(n) = state.presenting.get_mut(&self.fingerprint) {
            *n = n.saturating_sub(1);
        }
        if !self.answered {
            *state
                .stats
                .abandoned_calls_by_refresh_token
                .entry(self.fingerprint.clone())
                .or_default() += 1;
        }
    }
}

/// Counts a held token-endpoint call until dropped.
pub(crate) struct InFlight(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sandbox")
    }
}

impl Sandbox {
    /// A sandbox with no grants yet.
    pub fn new(config: SandboxConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(config))),
            in_flight: Arc::new(tokio::sync::watch::channel(0).0),
            received: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    pub(crate) fn note_token_call_received(&self) {
        self.received.send_modify(|n| *n += 1);
    }

    /// Resolves once at least `count` token-endpoint calls have been received, so a
    /// test can act while a call is in progress.
    pub async fn wait_for_token_calls(&self, count: u64) {
        let mut watch = self.received.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = watch.wait_for(|n| *n >= count).await;
    }

    pub(crate) fn hold_token_call(&self) -> InFlight {
        self.in_flight.send_modify(|n| *n += 1);
        InFlight(self.in_flight.clone())
    }

    /// Token-endpoint calls being held right now; a held call counts until its hold
    /// ends, even if the client has given up on it.
    pub fn token_calls_held(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Resolves once no token-endpoint call is being held.
    pub async fn wait_until_idle(&self) {
        let mut watch = self.in_flight.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = watch.wait_for(|n| *n == 0).await;
    }

    /// Makes every token-endpoint call take at least `latency` (before processing),
    /// like a real provider's response time.
    pub fn set_token_latency(&self, latency: Duration) {
        self.lock().token_latency = latency;
    }

    /// Issues a pair for `product` directly, as if a person had connected an
    /// account moments ago (for seeding large numbers of connections).
    /// Returns `(access_token, refresh_token, expires_in)`.
    pub fn issue_pair(&self, product: SandboxProduct) -> (String, String, i64) {
        let issued = self.lock().issue_grant(product);
        (issued.access_token, issued.refresh_token, issued.expires_in)
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Revokes the grant behind `token` (as RD does when a person disconnects the
    /// app); true if the token was known.
    pub fn revoke(&self, token: &str) -> bool {
        self.lock().revoke(token)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a sandbox bug; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// All routes: RD's and the `/_sandbox` control routes.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(oauth::routes())
            .merge(api::routes())
            .merge(control::routes())
            .with_state(self.clone())
    }

    /// Serves the sandbox on `listener` in a background task.
    pub fn spawn_on(&self, listener: TcpListener) -> std::io::Result<RunningSandbox> {
        let address = listener.local_addr()?;
        let router = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "sandbox server stopped");
            }
        });
        let base_url = Url::parse(&format!("http://{address}"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(RunningSandbox {
            sandbox: self.clone(),
            base_url,
            task,
        })
    }

    /// Serves the sandbox on a free loopback port.
    pub async fn spawn_local(&self) -> std::io::Result<RunningSandbox> {
        self.spawn_on(TcpListener::bind("127.0.0.1:0").await?)
    }

    /// Moves the sandbox clock forward.
    pub fn advance_clock(&self, seconds: i64) {
        self.lock().clock_offset += seconds;
    }

    /// Sets the `expires_in` of access tokens issued from now on.
    pub fn set_access_ttl(&self, product: SandboxProduct, seconds: i64) {
        let mut state = self.lock();
        match product {
            SandboxProduct::Marketing => state.config.marketing_access_ttl = seconds,
            SandboxProduct::Crm => state.config.crm_access_ttl = seconds,
        }
    }

    /// Records that a call presenting `refresh_token` is being handled, counting an
    /// overlap if another one already is; the mark lasts as long as the guard.
    pub(crate) fn present(&self, refresh_token: &str) -> Presenting {
        let fingerprint = model::fingerprint(refresh_token);
        let mut state = self.lock();
        let in_flight = state.presenting.entry(fingerprint.clone()).or_default();
        *in_flight += 1;
        if *in_flight > 1 {
            state.stats.overlapping_presentations += 1;
        }
        drop(state);
        Presenting {
            sandbox: self.clone(),
            fingerprint,
            answered: false,
            hold: None,
        }
    }

    /// Makes Marketing refresh tokens roll on every use, as CRM's do (RD's newer
    /// Marketing integrations use the CRM-style OAuth server).
    pub fn set_marketing_rolling(&self, rolling: bool) {
        self.lock().marketing_rolls = rolling;
    }

    /// Makes the next `count` calls to the API routes answer `status` (with
    /// `Retry-After: retry_after_seconds` when given) without doing anything, as RD
    /// does when it rate-limits (429) or is briefly down (502, 503, 504).
    pub fn inject_api_fault(&self, status: u16, retry_after_seconds: Option<u64>, count: usize) {
        let mut state = self.lock();
        state
            .api_faults
            .extend(std::iter::repeat_n((status, retry_after_seconds), count));
    }

    /// Makes the next `count` token-endpoint calls fail with `fault`.
    pub fn inject_fault(&self, fault: Fault, count: usize) {
        let mut state = self.lock();
        state.faults.extend(std::iter::repeat_n(fault, count));
    }

    /// Counters of token-endpoint calls.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// The bearer token the last API call carried.
    pub fn last_api_bearer(&self) -> Option<String> {
        self.lock().last_api_bearer.clone()
    }

    /// Token-endpoint calls that presented `refresh_token`.
    pub fn refresh_calls_for(&self, refresh_token: &str) -> u64 {
        let fingerprint = model::fingerprint(refresh_token);
        self.lock()
            .stats
            .calls_by_refresh_token
            .get(&fingerprint)
            .copied()
            .unwrap_or(0)
    }

    /// Issues a code as if a person had approved `product`'s consent page for the
    /// registered app (tests that only exercise the token endpoint).
    pub fn approve_consent(&self, product: SandboxProduct, redirect_uri: &str) -> String {
        let mut state = self.lock();
        let client_id = state.app(product).client_id.clone();
        state.issue_code(product, &client_id, redirect_uri)
    }

    /// Every code, access token and refresh token this sandbox has issued, so tests
    /// can check that none reached a log.
    pub fn issued_secrets(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// Whether `access_token` would be accepted by the product's API right now.
    pub fn access_token_is_valid(&self, product: SandboxProduct, access_token: &str) -> bool {
        self.lock().check_access(product, access_token).is_ok()
    }
}

/// A sandbox being served on loopback; stops when dropped.
#[derive(Debug)]
pub struct RunningSandbox {
    /// The sandbox's state, for control from tests.
    pub sandbox: Sandbox,
    /// `http://127.0.0.1:PORT`.
    pub base_url: Url,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSandbox {
    /// `base_url` joined with `path`.
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.base_url.clone();
        url.set_path(path);
        url
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a [`Fault::Hang`] holds a call by default.
pub const DEFAULT_HANG: Duration = Duration::from_secs(30);
