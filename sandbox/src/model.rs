//! The sandbox's state: apps, codes, tokens, clock, counters and faults.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{AppRegistration, SandboxConfig, SandboxProduct};

/// Marketing authorization codes live 60 minutes.
pub const MARKETING_CODE_TTL: i64 = 3_600;
/// CRM authorization codes live 5 minutes.
pub const CRM_CODE_TTL: i64 = 300;
/// CRM refresh tokens die 14 days after their last use.
pub const CRM_REFRESH_IDLE_TTL: i64 = 14 * 86_400;

/// A failure the token endpoint plays instead of answering normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer 500 without processing the call.
    ServerError,
    /// Hold the call without processing it, then answer 504.
    Hang {
        /// How long to hold, in milliseconds.
        millis: u64,
    },
    /// Answer 429 with `Retry-After`, without processing.
    RateLimited {
        /// The `Retry-After` value in seconds.
        retry_after_seconds: u64,
    },
    /// Process the call (codes used, refresh tokens rotated), then drop the
    /// connection before the answer's body.
    DropAfterProcessing,
}

impl Fault {
    /// The fault's name, as the stats report it.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::ServerError => "ServerError",
            Fault::Hang { .. } => "Hang",
            Fault::RateLimited { .. } => "RateLimited",
            Fault::DropAfterProcessing => "DropAfterProcessing",
        }
    }

    /// A hang of `duration`.
    pub fn hang(duration: Duration) -> Self {
        Fault::Hang {
            millis: duration.as_millis() as u64,
        }
    }
}

/// Counters of the token endpoints.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Every call to `/auth/token` or `/oauth2/token`.
    pub token_calls: u64,
    /// Refresh calls by the SHA-256 fingerprint (16 hex digits) of the refresh token presented.
    pub calls_by_refresh_token: HashMap<String, u64>,
    /// Refresh calls that presented a refresh token that was already dead.
    pub dead_refresh_token_presentations: u64,
    /// The same calls by the fingerprint of the dead token presented: each should
    /// be a token whose rotation the client never learned of.
    pub dead_presentations_by_refresh_token: HashMap<String, u64>,
    /// Code exchanges that succeeded.
    pub codes_exchanged: u64,
    /// Refreshes that succeeded.
    pub refreshes: u64,
    /// Refresh calls that arrived while another call presenting the same refresh
    /// token was still being handled (or held): the protocol's invariant says never.
    pub overlapping_presentations: u64,
    /// Calls to the protected API routes (not the token endpoints).
    pub api_calls: u64,
    /// API calls answered 401.
    pub api_unauthorized: u64,
    /// Calls presenting a refresh token that rolls on use (CRM's, and Marketing's
    /// while rolling), by fingerprint: more than one means it was presented again.
    pub rolling_calls_by_refresh_token: HashMap<String, u64>,
    /// The injected faults each refresh token's calls met, by fingerprint (e.g.
    /// `DropAfterProcessing`): what explains a token presented twice, or lost.
    pub faults_by_refresh_token: HashMap<String, Vec<String>>,
    /// Refresh calls whose client went away before RD answered (its timeout ran
    /// out while RD was slow), by fingerprint. RD had not processed them; to the
    /// client the outcome was unknown, so presenting the token again is right.
    pub abandoned_calls_by_refresh_token: HashMap<String, u64>,
}

pub struct CodeGrant {
    pub product: SandboxProduct,
    pub client_id: String,
    pub redirect_uri: String,
    pub issued_at: i64,
    pub used: bool,
}

pub struct RefreshState {
    pub product: SandboxProduct,
    pub grant: u64,
    pub last_used_at: i64,
    pub alive: bool,
}

pub struct AccessState {
    pub product: SandboxProduct,
    pub grant: u64,
    pub expires_at: i64,
}

/// Why an access token is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AccessRefusal {
    Missing,
    Invalid,
    Expired,
    /// An injected answer: status and `Retry-After` seconds.
    Fault(u16, Option<u64>),
}

/// Why a refresh was refused.
pub enum RefreshRefusal {
    WrongClient,
    DeadToken,
}

/// Why a code exchange was refused.
pub enum ExchangeRefusal {
    WrongClient,
    ExpiredOrUsed,
}

/// A pair the token endpoint hands out.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

pub struct State {
    pub config: SandboxConfig,
    pub clock_offset: i64,
    pub codes: HashMap<String, CodeGrant>,
    pub refresh_tokens: HashMap<String, RefreshState>,
    pub access_tokens: HashMap<String, AccessState>,
    pub revoked_grants: Vec<u64>,
    next_grant: u64,
    pub faults: VecDeque<Fault>,
    pub stats: Stats,
    pub issued: Vec<String>,
    pub token_latency: Duration,
    /// Calls being handled right now, by refresh-token fingerprint.
    pub presenting: HashMap<String, usize>,
    /// Marketing refresh tokens roll like CRM's (RD's newer Marketing OAuth server).
    pub marketing_rolls: bool,
    /// Answers the API routes play instead of answering normally: (status,
    /// `Retry-After` seconds).
    pub api_faults: VecDeque<(u16, Option<u64>)>,
    /// The bearer token of the last API call (tests check which grant's token
    /// a proxy sent).
    pub last_api_bearer: Option<String>,
}

/// The SHA-256 fingerprint (16 hex digits) by which [`Stats`] key refresh tokens.
pub fn fingerprint(value: &str) -> String {
    Sha256::digest(value.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

impl State {
    pub fn new(config: SandboxConfig) -> Self {
        Self {
            config,
            clock_offset: 0,
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            revoked_grants: Vec::new(),
            next_grant: 1,
            faults: VecDeque::new(),
            stats: Stats::default(),
            issued: Vec::new(),
            token_latency: Duration::ZERO,
            presenting: HashMap::new(),
            marketing_rolls: false,
            api_faults: VecDeque::new(),
            last_api_bearer: None,
        }
    }

    pub fn now(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        real + self.clock_offset
    }

    pub fn app(&self, product: SandboxProduct) -> &AppRegistration {
        match product {
            SandboxProduct::Marketing => &self.config.marketing,
            SandboxProduct::Crm => &self.config.crm,
        }
    }

    fn client_ok(&self, product: SandboxProduct, client_id: &str, client_secret: &str) -> bool {
        let app = self.app(product);
        app.client_id == client_id && app.client_secret == client_secret
    }

    /// Whether a consent request names a registered app and its exact callback.
    pub fn consent_ok(&self, product: SandboxProduct, client_id: &str, redirect_uri: &str) -> bool {
        let app = self.app(product);
        app.client_id == client_id
            && app
                .redirect_uri
                .as_deref()
                .is_none_or(|registered| registered == redirect_uri)
    }

    pub fn issue_code(
        &mut self,
        product: SandboxProduct,
        client_id: &str,
        redirect_uri: &str,
    ) -> String {
        let code = random("code_");
        self.issued.push(code.clone());
        self.codes.insert(
            code.clone(),
            CodeGrant {
                product,
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                issued_at: self.now(),
                used: false,
            },
        );
        code
    }

    /// Counts a token-endpoint call (before any fault plays) and returns the fault
    /// to play, if one is queued.
    pub fn record_token_call(&mut self, refresh_token: Option<&str>) -> Option<Fault> {
        self.stats.token_calls += 1;
        let fault = self.faults.pop_front();
        if let Some(token) = refresh_token {
            *self
                .stats
                .calls_by_refresh_token
                .entry(fingerprint(token))
                .or_default() += 1;
            let rolls = self
                .refresh_tokens
                .get(token)
                .is_some_and(|r| r.product == SandboxProduct::Crm || self.marketing_rolls);
            if rolls {
                *self
                    .stats
                    .rolling_calls_by_refresh_token
                    .entry(fingerprint(token))
                    .or_default() += 1;
            }
            if let Some(fault) = &fault {
                self.stats
                    .faults_by_refresh_token
                    .entry(fingerprint(token))
                    .or_default()
                    .push(fault.name().to_owned());
            }
        }
        fault
    }

    fn issue_pair(
        &mut self,
        product: SandboxProduct,
        grant: u64,
        refresh_token: Option<String>,
    ) -> Issued {
        let (prefix, ttl) = match product {
            SandboxProduct::Marketing => ("mkt_", self.config.marketing_access_ttl),
            SandboxProduct::Crm => ("crm_", self.config.crm_access_ttl),
        };
        let now = self.now();
        let access_token = random(&format!("{prefix}at_"));
        self.issued.push(access_token.clone());
        self.access_tokens.insert(
            access_token.clone(),
            AccessState {
                product,
                grant,
                expires_at: now + ttl,
            },
        );
        let refresh_token = refresh_token.unwrap_or_else(|| {
            let token = random(&format!("{prefix}rt_"));
            self.issued.push(token.clone());
            self.refresh_tokens.insert(
                token.clone(),
                RefreshState {
                    product,
                    grant,
                    last_used_at: now,
                    alive: true,
                },
            );
            token
        });
        Issued {
            access_token,
            refresh_token,
            expires_in: ttl,
        }
    }

    /// A new grant with its first pair, without a code.
    pub fn issue_grant(&mut self, product: SandboxProduct) -> Issued {
        let grant = self.next_grant;
        self.next_grant += 1;
        self.issue_pair(product, grant, None)
    }

    pub fn exchange_code(
        &mut self,
        product: SandboxProduct,
        client_id: &str,
        client_secret: &str,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<Issued, ExchangeRefusal> {
        if !self.client_ok(product, client_id, client_secret) {
            return Err(ExchangeRefusal::WrongClient);
        }
        let now = self.now();
        let ttl = match product {
            SandboxProduct::Marketing => MARKETING_CODE_TTL,
            SandboxProduct::Crm => CRM_CODE_TTL,
        };
        let grant = self.codes.get_mut(code).filter(|g| {
            g.product == product
                && g.client_id == client_id
                && !g.used
                && now < g.issued_at + ttl
                // CRM checks that redirect_uri matches the one sent to authorize.
                && redirect_uri.is_none_or(|r| r == g.redirect_uri)
        });
        let Some(grant) = grant else {
            // A code is single-use even when the attempt fails.
            if let Some(g) = self.codes.get_mut(code) {
                g.used = true;
            }
            return Err(ExchangeRefusal::ExpiredOrUsed);
        };
        grant.used = true;
        let grant_id = self.next_grant;
        self.next_grant += 1;
        self.stats.codes_exchanged += 1;
        Ok(self.issue_pair(product, grant_id, None))
    }

    pub fn refresh(
        &mut self,
        product: SandboxProduct,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> Result<Issued, RefreshRefusal> {
        if !self.client_ok(product, client_id, client_secret) {
            return Err(RefreshRefusal::WrongClient);
        }
        let now = self.now();
        let revoked = &self.revoked_grants;
        let usable = self.refresh_tokens.get_mut(refresh_token).filter(|r| {
            r.product == product
                && r.alive
                && !revoked.contains(&r.grant)
                && (product == SandboxProduct::Marketing
                    || now < r.last_used_at + CRM_REFRESH_IDLE_TTL)
        });
        let Some(state) = usable else {
            self.stats.dead_refresh_token_presentations += 1;
            *self
                .stats
                .dead_presentations_by_refresh_token
                .entry(fingerprint(refresh_token))
                .or_default() += 1;
            return Err(RefreshRefusal::DeadToken);
        };
        let grant = state.grant;
        self.stats.refreshes += 1;
        match product {
            // Marketing refresh tokens are stable: the same one comes back (unless
            // the sandbox plays RD's newer, rolling Marketing OAuth server).
            SandboxProduct::Marketing if !self.marketing_rolls => {
                state.last_used_at = now;
                Ok(self.issue_pair(product, grant, Some(refresh_token.to_owned())))
            }
            // CRM refresh tokens roll: the presented one dies now.
            SandboxProduct::Crm | SandboxProduct::Marketing => {
                state.alive = false;
                Ok(self.issue_pair(product, grant, None))
            }
        }
    }

    /// Revokes the grant behind a refresh or access token; true if one was found.
    pub fn revoke(&mut self, token: &str) -> bool {
        let grant = self
            .refresh_tokens
            .get(token)
            .map(|r| r.grant)
            .or_else(|| self.access_tokens.get(token).map(|a| a.grant));
        match grant {
            Some(grant) => {
                self.revoked_grants.push(grant);
                true
            }
            None => false,
        }
    }

    pub fn check_access(&self, product: SandboxProduct, token: &str) -> Result<(), AccessRefusal> {
        if token.is_empty() {
            return Err(AccessRefusal::Missing);
        }
        let state = self
            .access_tokens
            .get(token)
            .filter(|a| a.product == product && !self.revoked_grants.contains(&a.grant))
            .ok_or(AccessRefusal::Invalid)?;
        if self.now() >= state.expires_at {
            return Err(AccessRefusal::Expired);
        }
        Ok(())
    }
}
