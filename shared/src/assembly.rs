//! The one place that wires the services together, for every host: the Lambdas
//! (DynamoDB, SQS, Secrets Manager, EventBridge), `make run` (in memory) and the
//! tests (moto, instrumented). A host supplies the [`Parts`] that differ between
//! them; [`Assembly`] builds the rest the same way everywhere. In particular it
//! builds the RD Station client from the refresh settings, so the protocol's rule
//! "client timeout = T" cannot be broken by hand.
//!
//! The AWS SDK reads region, credentials and `AWS_ENDPOINT_URL` from the standard
//! environment, so tests and local runs point it at moto without special code.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use url::Origin;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::config::DEFAULT_TENANT_CACHE_SECONDS;
use crate::domain::PrincipalPattern;
use crate::inbound::http::ApiState;
use crate::inbound::schedule::Refresher;
use crate::inbound::webhook_queue::WebhookSender;
use crate::outbound::credentials::{CredentialSet, SecretsManagerCredentials, StaticCredentials};
use crate::outbound::dynamodb::DynamoStore;
use crate::outbound::events::{EventBridgePublisher, LogPublisher};
use crate::outbound::legacy_rescue_queue::SqsLegacyRescueQueue;
use crate::outbound::memory::{MemoryRescueStore, MemoryStore};
use crate::outbound::rdstation::api_client::RdApiClient;
use crate::outbound::rdstation::{ClientBuildError, RdStationClient, RdStationEndpoints};
use crate::outbound::refresh_work_queue::SqsWorkQueue;
use crate::outbound::rescue_store::S3RescueStore;
use crate::outbound::webhook_client::{HttpsWebhookTransport, SystemResolver};
use crate::ports::{
    ConnectionStore, CredentialSource, DeliveryQueue, EventPublisher, LegacyRescueQueue,
    RateBudget, RefreshWorkQueue, RescueStore, RunLock, SessionStore, ShardLease, TenantRegistry,
    TokenEndpoint, WebhookRegistry,
};
use crate::services::caller_policy::CallerPolicy;
use crate::services::connect::{ConnectService, PublicBase};
use crate::services::proxy::{BudgetSlices, ProxyService, ProxySettings, TokenCache};
use crate::services::refresh_protocol::{
    AWS_ATTEMPT_TIMEOUT, AWS_OPERATION_TIMEOUT, RefreshEngine, RefreshSettings,
};
use crate::services::tenancy::Tenancy;
use crate::services::webhooks::{WebhookDeliverer, WebhookService, WebhookSettings};

/// The hard timeout of one proxied call to RD's API.
const PROXY_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose token one proxy instance keeps.
const TOKEN_CACHE_ENTRIES: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");
/// A cached token is used only while it has more than this to live.
const TOKEN_CACHE_MARGIN_SECONDS: i64 = 60;
/// With the rate budget off, how long a proxy instance trusts a cached token
/// before reading the store again: the longest another instance may still send
/// the token of a grant that a delete or a reconnect ended.
pub const TOKEN_RECHECK_WITHOUT_BUDGET_SECONDS: i64 = 5;

/// What differs from host to host: where state lives, where events go, the clock.
#[derive(Clone)]
pub struct Parts {
    /// Connections.
    pub connections: Arc<dyn ConnectionStore>,
    /// Connect sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Pairs whose commit failed.
    pub rescues: Arc<dyn RescueStore>,
    /// RD Station app credentials.
    pub credentials: Arc<dyn CredentialSource>,
    /// Where events go.
    pub events: Arc<dyn EventPublisher>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Where the proxy counts each connection's requests (shared by instances).
    pub rate_budget: Arc<dyn RateBudget>,
    /// Keeps scheduled runs from overlapping.
    pub run_lock: Arc<dyn RunLock>,
    /// Keeps two refresh workers off one due-index shard.
    pub shard_leases: Arc<dyn ShardLease>,
    /// The tenants and the principals acting in each.
    pub tenants: Arc<dyn TenantRegistry>,
    /// The webhook endpoints.
    pub webhooks: Arc<dyn WebhookRegistry>,
}

impl Parts {
    /// Parts over one `store` holding connections, sessions, rate budgets and the
    /// run lock, with `rescues` as the rescue store, fixed app `credentials`,
    /// events written to the log and the system clock: a host without AWS around
    /// it (`make run`, tests).
    pub fn on_one_store<S>(
        store: Arc<S>,
        rescues: Arc<dyn RescueStore>,
        credentials: CredentialSet,
    ) -> Self
    where
        S: ConnectionStore
            + SessionStore
            + RateBudget
            + RunLock
            + ShardLease
            + TenantRegistry
            + WebhookRegistry
            + 'static,
    {
        Self {
            connections: store.clone(),
            sessions: store.clone(),
            rate_budget: store.clone(),
            run_lock: store.clone(),
            shard_leases: store.clone(),
            webhooks: store.clone(),
            tenants: store,
            rescues,
            credentials: Arc::new(StaticCredentials(credentials)),
            events: Arc::new(LogPublisher),
            clock: Arc::new(SystemClock),
        }
    }

    /// Everything in memory ([`Parts::on_one_store`] over a [`MemoryStore`] and a
    /// [`MemoryRescueStore`]): gone when the process ends.
    pub fn in_memory(credentials: CredentialSet) -> Self {
        Self::on_one_store(
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryRescueStore::default()),
            credentials,
        )
    }
}

/// How the service reaches RD Station and presents itself.
#[derive(Clone, Debug)]
pub struct Settings {
    /// RD Station's endpoints.
    pub rdstation: RdStationEndpoints,
    /// The refresh protocol's timing (its T is every RD call's hard timeout).
    pub refresh: RefreshSettings,
    /// Where this service is reachable (connect URLs and the redirect URI start here).
    pub public_base: PublicBase,
    /// Origins a session's `return_url` may point to.
    pub allowed_return_origins: Vec<Origin>,
    /// Who may open connect sessions and call the API.
    pub caller_policy: CallerPolicy,
    /// Who acts as an operator, and how long a read of the tenants is used.
    pub tenancy: TenancySettings,
    /// The proxy's behaviour.
    pub proxy: ProxySettings,
}

impl Settings {
    /// The settings a deployed function reads from its environment.
    pub fn from_config(config: &Config) -> Self {
        Self {
            rdstation: config.rdstation.clone(),
            refresh: config.refresh.clone(),
            public_base: config
                .public_base_url
                .clone()
                .map_or(PublicBase::RequestDomain, PublicBase::Fixed),
            allowed_return_origins: config.allowed_return_origins.clone(),
            caller_policy: CallerPolicy::Iam {
                allowed_arns: config.allowed_caller_arns.clone(),
            },
            tenancy: TenancySettings {
                operators: config.operator_arns.clone(),
                cache_seconds: config.tenant_cache_seconds,
            },
            proxy: config.proxy.clone(),
        }
    }
}

/// Who acts as an operator, and how long a read of the tenants is used.
#[derive(Clone, Debug)]
pub struct TenancySettings {
    /// `OPERATOR_ARNS`.
    pub operators: Vec<PrincipalPattern>,
    /// `TENANT_CACHE_SECONDS`.
    pub cache_seconds: u32,
}

impl Default for TenancySettings {
    /// No operator; the tenants read again after the default time.
    fn default() -> Self {
        Self {
            operators: Vec::new(),
            cache_seconds: DEFAULT_TENANT_CACHE_SECONDS,
        }
    }
}

/// Why the service could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// The RD Station HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    /// `RESCUE_BUCKET` is not set: a refresh must have somewhere to save a pair
    /// whose commit failed.
    #[error("missing environment variable RESCUE_BUCKET")]
    NoRescueBucket,
}

/// The services, assembled from one host's parts and the shared settings.
#[derive(Clone)]
pub struct Assembly {
    parts: Parts,
    settings: Settings,
    token_endpoint: Arc<dyn TokenEndpoint>,
    /// The SQS queue earlier versions rescued pairs to, while it may hold some.
    legacy_rescues: Option<Arc<dyn LegacyRescueQueue>>,
    /// Where scheduled runs hand their shards to the refresh workers, if anywhere.
    work_queue: Option<Arc<dyn RefreshWorkQueue>>,
    /// How webhooks are registered and delivered.
    webhooks: WebhookSettings,
}

impl Assembly {
    /// Assembles from `parts` and `settings`, with the RD Station client built with
    /// the refresh protocol's T as its hard timeout.
    ///
    /// # Errors
    /// [`ClientBuildError`] if the HTTP client cannot be built.
    pub fn new(parts: Parts, settings: Settings) -> Result<Self, ClientBuildError> {
        let client =
            RdStationClient::new(settings.rdstation.clone(), settings.refresh.token_timeout())?;
        Ok(Self {
            parts,
            settings,
            token_endpoint: Arc::new(client),
            legacy_rescues: None,
            work_queue: None,
            webhooks: WebhookSettings::default(),
        })
    }

    /// The same, with `settings` for webhooks.
    pub fn with_webhook_settings(mut self, settings: WebhookSettings) -> Self {
        self.webhooks = settings;
        self
    }

    /// The same, with `queue` as the rescue queue of earlier versions: each
    /// scheduled run moves what it holds to the rescue store.
    pub fn with_legacy_rescue_queue(mut self, queue: Arc<dyn LegacyRescueQueue>) -> Self {
        self.legacy_rescues = Some(queue);
        self
    }

    /// The same, with `queue` as the refresh work queue: each scheduled run hands
    /// its shards there instead of refreshing them itself.
    pub fn with_work_queue(mut self, queue: Arc<dyn RefreshWorkQueue>) -> Self {
        self.work_queue = Some(queue);
        self
    }

    /// The parts on AWS, from a function's configuration.
    ///
    /// # Errors
    /// [`AssemblyError`] if the client cannot be built or no rescue bucket is set.
    pub async fn aws(config: &Config) -> Result<Self, AssemblyError> {
        let sdk = sdk_config().await;
        let store = Arc::new(
            DynamoStore::new(
                aws_sdk_dynamodb::Client::new(&sdk),
                &config.connections_table,
            )
            .with_due_policy(config.refresh.due.clone()),
        );
        let bucket = config
            .rescue_bucket
            .as_deref()
            .ok_or(AssemblyError::NoRescueBucket)?;
        let events: Arc<dyn EventPublisher> = match &config.event_bus_name {
            Some(bus) => Arc::new(EventBridgePublisher::new(
                aws_sdk_eventbridge::Client::new(&sdk),
                bus,
            )),
            // Without a bus, events are only logged.
            None => Arc::new(LogPublisher),
        };
        let parts = Parts {
            connections: store.clone(),
            sessions: store.clone(),
            rate_budget: store.clone(),
            run_lock: store.clone(),
            shard_leases: store.clone(),
            webhooks: store.clone(),
            tenants: store,
            rescues: Arc::new(S3RescueStore::new(s3_client(&sdk), bucket)),
            credentials: Arc::new(SecretsManagerCredentials::new(
                aws_sdk_secretsmanager::Client::new(&sdk),
                &config.client_credentials_secret,
            )),
            events,
            clock: Arc::new(SystemClock),
        };
        let assembly = Self::new(parts, Settings::from_config(config))?;
        let assembly = match &config.legacy_rescue_queue_url {
            Some(url) => assembly.with_legacy_rescue_queue(Arc::new(SqsLegacyRescueQueue::new(
                aws_sdk_sqs::Client::new(&sdk),
                url,
            ))),
            None => assembly,
        };
        let assembly = assembly.with_webhook_settings(config.webhooks.clone());
        Ok(match &config.refresh_work_queue_url {
            Some(url) => assembly.with_work_queue(Arc::new(SqsWorkQueue::new(
                aws_sdk_sqs::Client::new(&sdk),
                url,
            ))),
            None => assembly,
        })
    }

    /// The settings it was assembled with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The parts it was assembled from (another assembly of the same parts is
    /// another instance of the service over the same state).
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The connect flow.
    pub fn connect_service(&self) -> ConnectService {
        let p = &self.parts;
        ConnectService {
            connections: p.connections.clone(),
            sessions: p.sessions.clone(),
            credentials: p.credentials.clone(),
            token_endpoint: self.token_endpoint.clone(),
            clock: p.clock.clone(),
            public_base: self.settings.public_base.clone(),
            allowed_return_origins: self.settings.allowed_return_origins.clone(),
            tenancy: self.tenancy(),
        }
    }

    /// Who may call in which tenant (each call a resolution with its own cache
    /// of the tenants: one per service built, as one per Lambda instance).
    pub fn tenancy(&self) -> Tenancy {
        Tenancy::new(
            self.settings.caller_policy.clone(),
            self.settings.tenancy.operators.clone(),
            self.parts.tenants.clone(),
            self.parts.clock.clone(),
            i64::from(self.settings.tenancy.cache_seconds) * 1_000,
        )
    }

    /// The API function's state: the proxy (with a token cache of its own) and the
    /// connections API.
    ///
    /// # Errors
    /// [`ClientBuildError`] if the HTTP client cannot be built.
    pub fn api_state(&self) -> Result<ApiState, ClientBuildError> {
        let upstream = RdApiClient::new(
            self.settings.rdstation.api_base.clone(),
            PROXY_CALL_TIMEOUT,
            self.settings.proxy.max_answer_bytes,
        )?;
        let proxy = ProxyService {
            connections: self.parts.connections.clone(),
            engine: self.refresh_engine(),
            upstream: Arc::new(upstream),
            tokens: Arc::new({
                let cache = TokenCache::new(TOKEN_CACHE_ENTRIES, TOKEN_CACHE_MARGIN_SECONDS);
                // Without the budget's per-request write, nothing else would
                // notice another instance's delete or reconnect.
                match self.settings.proxy.rate_limit_per_minute {
                    Some(_) => cache,
                    None => cache.rechecking_every(TOKEN_RECHECK_WITHOUT_BUDGET_SECONDS),
                }
            }),
            budget: Some(self.parts.rate_budget.clone()),
            slices: Arc::new(BudgetSlices::new(
                TOKEN_CACHE_ENTRIES,
                self.settings.proxy.budget_slice,
            )),
            settings: self.settings.proxy.clone(),
        };
        Ok(ApiState {
            proxy,
            token_endpoint: self.token_endpoint.clone(),
            tenancy: self.tenancy(),
            webhooks: self.webhook_service(),
        })
    }

    /// Registering webhook endpoints.
    pub fn webhook_service(&self) -> WebhookService {
        WebhookService {
            registry: self.parts.webhooks.clone(),
            resolver: Arc::new(SystemResolver),
            clock: self.parts.clock.clone(),
            allow_loopback: self.webhooks.allow_loopback,
        }
    }

    /// The webhook sender over `queue` (where its deliveries wait).
    ///
    /// # Errors
    /// When the HTTPS client cannot be built (a bad extra root certificate).
    pub fn webhook_sender(
        &self,
        queue: Arc<dyn DeliveryQueue>,
    ) -> Result<WebhookSender, reqwest::Error> {
        let transport = HttpsWebhookTransport::new(
            self.webhooks.allow_loopback,
            self.webhooks.extra_roots_pem.as_deref(),
        )?;
        Ok(WebhookSender {
            deliverer: WebhookDeliverer {
                registry: self.parts.webhooks.clone(),
                queue,
                transport: Arc::new(transport),
                clock: self.parts.clock.clone(),
                allow_loopback: self.webhooks.allow_loopback,
            },
            retry_base: self.webhooks.retry_base,
        })
    }

    /// The schedule handler, running `concurrency` refreshes at once.
    pub fn refresher(&self, concurrency: usize) -> Refresher {
        Refresher {
            engine: self.refresh_engine(),
            concurrency,
            run_lock: self.parts.run_lock.clone(),
            legacy_rescues: self.legacy_rescues.clone(),
            tenants: self.parts.tenants.clone(),
            shard_leases: self.parts.shard_leases.clone(),
            work_queue: self.work_queue.clone(),
        }
    }

    /// The refresh protocol.
    pub fn refresh_engine(&self) -> RefreshEngine {
        let p = &self.parts;
        RefreshEngine {
            store: p.connections.clone(),
            rescues: p.rescues.clone(),
            credentials: p.credentials.clone(),
            token_endpoint: self.token_endpoint.clone(),
            events: p.events.clone(),
            clock: p.clock.clone(),
            settings: self.settings.refresh.clone(),
            token_calls: p.rate_budget.clone(),
        }
    }
}

/// An S3 client on `sdk`. Path-style addressing when an endpoint is set (an S3
/// stand-in on one host, such as moto, has no bucket subdomains); AWS's own
/// virtual-hosted style otherwise.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The shared AWS SDK configuration, from the standard environment, with bounded
/// call times. Each of the protocol's own attempts is cut off at its lease
/// deadline as well (see `refresh_protocol::Deadline`); these bounds keep one SDK
/// call, retries included, well inside a lease.
pub async fn sdk_config() -> aws_config::SdkConfig {
    // The operation timeout bounds how late a write abandoned by its caller may
    // land: takeovers wait it out (RefreshSettings::late_write_bound).
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(AWS_ATTEMPT_TIMEOUT)
        .operation_timeout(AWS_OPERATION_TIMEOUT)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}
