//! `RefreshApp`: the refresh engine over DynamoDB and Secrets Manager on moto
//! (behind a counting, fault-injecting wrapper), an RD Station sandbox on loopback,
//! and a recording event publisher; with clocks that tests move together.

use std::sync::Arc;
use std::time::Duration;

use connector::assembly::{Assembly, Parts, Settings};
use connector::clock::{Clock, OffsetClock};
use connector::domain::{Connection, ConnectionId, Product, TenantId, TokenPair};
use connector::outbound::credentials::SecretsManagerCredentials;
use connector::outbound::dynamodb::DynamoStore;
use connector::outbound::events::RecordingPublisher;
use connector::outbound::memory::MemoryStore;
use connector::outbound::rescue_store::S3RescueStore;
use connector::ports::{ClientCredentials, ConnectionStore, EventKind, ServiceEvent};
use connector::secret::{AccessToken, AuthCode, ClientSecret, ExposeSecret, RefreshToken};
use connector::services::caller_policy::CallerPolicy;
use connector::services::refresh_protocol::{
    LeaseTiming, RefreshEngine, RefreshFailure, RefreshRequest, RefreshSettings, Refreshed,
};
use connector::services::scheduled_refresh::{self, RunLimits, RunSummary};
use rd_sandbox::{RunningSandbox, Sandbox, SandboxConfig, SandboxProduct};
use url::Url;

use crate::instrumented::{InstrumentedRescues, InstrumentedStore, SlowCredentials};
use crate::{logs, moto};

const REDIRECT: &str = "https://connect.example.com/oauth/callback";

/// The refresh protocol wired to moto and a sandbox.
pub struct RefreshApp {
    /// The sandbox.
    pub sandbox: RunningSandbox,
    /// How the services were assembled (the proxy's state comes from here).
    pub assembly: Assembly,
    /// The engine under test.
    pub engine: RefreshEngine,
    /// The store behind it.
    pub store: InstrumentedStore,
    /// The rescue store behind it (S3 on moto).
    pub rescues: InstrumentedRescues,
    /// The credentials behind it (Secrets Manager on moto).
    pub credentials: SlowCredentials,
    /// The events it published.
    pub events: Arc<RecordingPublisher>,
    /// The service clock.
    pub clock: OffsetClock,
    /// The sandbox's apps.
    pub sandbox_config: SandboxConfig,
    /// The credentials secret on moto.
    pub secret_name: String,
    /// The connections table on moto.
    pub table_name: String,
    /// The rescue bucket on moto.
    pub bucket: String,
}

/// Protocol timing for tests: T = 500 ms, commit budget 700 ms, skew allowance
/// 200 ms, L = 2 s (short, so held calls and dead holders play out quickly), and
/// accepted by the same check the service applies; a dead holder's late writes
/// are waited out for 1 s after its lease; RD-like backoff otherwise.
pub fn test_settings() -> RefreshSettings {
    settings_for(LeaseTiming {
        token_timeout: Duration::from_millis(500),
        commit_budget: Duration::from_millis(700),
        lease: Duration::from_secs(2),
        clock_skew: Duration::from_millis(200),
    })
}

/// [`test_settings`] with a 2 s commit budget and a 3.5 s lease, for tests that
/// crowd moto (the soak, fifty callers of one connection): moto serves one request
/// at a time and parses an `UpdateItem` in tens of milliseconds, so the harness's
/// own queueing would time commits out of the 700 ms budget (DynamoDB serves them
/// side by side). What those tests prove is the single spend, not the budget.
pub fn crowd_settings() -> RefreshSettings {
    settings_for(LeaseTiming {
        token_timeout: Duration::from_millis(500),
        commit_budget: Duration::from_secs(2),
        lease: Duration::from_millis(3_500),
        clock_skew: Duration::from_millis(200),
    })
}

/// Settings with `timing` (which the service's own check must accept) and the
/// tests' [`LATE_WRITE_BOUND`].
///
/// # Panics
/// If the service would refuse `timing`.
pub fn settings_for(timing: LeaseTiming) -> RefreshSettings {
    let mut settings = RefreshSettings::new(timing).expect("a timing the service accepts");
    settings.late_write_bound = LATE_WRITE_BOUND;
    settings
}

/// How long after a dead holder's lease its writes may still land, in tests.
pub const LATE_WRITE_BOUND: Duration = Duration::from_secs(1);

/// The sandbox product matching a service product.
pub fn sandbox_product(product: Product) -> SandboxProduct {
    match product {
        Product::Marketing => SandboxProduct::Marketing,
        Product::Crm => SandboxProduct::Crm,
    }
}

impl RefreshApp {
    /// A fresh table, secret and sandbox, with [`test_settings`].
    pub async fn start() -> Self {
        Self::start_with(test_settings()).await
    }

    /// A fresh table, secret and sandbox, with `settings`.
    pub async fn start_with(settings: RefreshSettings) -> Self {
        Self::start_on(settings, moto::fresh_store().await).await
    }

    /// A fresh secret and sandbox, with `settings`, over `table` (a store whose
    /// client may reach DynamoDB through a fault-injecting proxy).
    pub async fn start_on(settings: RefreshSettings, table: DynamoStore) -> Self {
        logs::install();
        let sandbox_config = SandboxConfig::default();
        let sandbox = Sandbox::new(sandbox_config.clone())
            .spawn_local()
            .await
            .expect("sandbox");
        let table = table.with_due_policy(settings.due.clone());
        let table_name = table.table().to_owned();
        let store = InstrumentedStore::new(table.clone());
        let rescue_store = moto::fresh_rescue_store().await;
        let bucket = rescue_store.bucket().to_owned();
        let rescues = InstrumentedRescues::new(rescue_store);
        let secret_name = moto::create_secret(&crate::app::credentials_json(&sandbox_config)).await;
        let credentials = SlowCredentials::new(SecretsManagerCredentials::new(
            moto::secretsmanager().await,
            &secret_name,
        ));
        let clock = OffsetClock::new();
        let events = Arc::new(RecordingPublisher::new());
        let parts = Parts {
            connections: Arc::new(store.clone()),
            sessions: Arc::new(MemoryStore::new()),
            rescues: Arc::new(rescues.clone()),
            credentials: Arc::new(credentials.clone()),
            events: events.clone(),
            clock: Arc::new(clock.clone()),
            rate_budget: Arc::new(table.clone()),
            run_lock: Arc::new(table.clone()),
            shard_leases: Arc::new(table.clone()),
            webhooks: Arc::new(table.clone()),
            tenants: Arc::new(table),
        };
        let assembly = Assembly::new(
            parts,
            Settings {
                rdstation: crate::sandbox_endpoints(&sandbox),
                refresh: settings,
                public_base: connector::services::connect::PublicBase::Fixed(
                    Url::parse("https://connect.example.com").expect("url"),
                ),
                allowed_return_origins: Vec::new(),
                caller_policy: CallerPolicy::Iam {
                    allowed_arns: Vec::new(),
                },
                proxy: connector::services::proxy::ProxySettings::default(),
                tenancy: Default::default(),
            },
        )
        .expect("client");
        let engine = assembly.refresh_engine();
        Self {
            sandbox,
            assembly,
            engine,
            store,
            rescues,
            credentials,
            events,
            clock,
            sandbox_config,
            secret_name,
            table_name,
            bucket,
        }
    }

    /// Another instance of the service over the same table, bucket and secret, as
    /// a second Lambda environment would be: SDK clients, credential
    /// cache and engine of its own (no test instrumentation), the same clock and
    /// event recorder.
    pub async fn second_instance(&self) -> RefreshEngine {
        let dynamodb = aws_sdk_dynamodb::Client::new(moto::sdk_config().await);
        self.instance_on(dynamodb).await.refresh_engine()
    }

    /// Another instance (see [`RefreshApp::second_instance`]) whose DynamoDB
    /// client is `dynamodb` (one reaching moto through a fault-injecting proxy).
    pub async fn instance_on(&self, dynamodb: aws_sdk_dynamodb::Client) -> Assembly {
        let sdk = moto::sdk_config().await;
        let store = Arc::new(
            DynamoStore::new(dynamodb, &self.table_name)
                .with_due_policy(self.assembly.settings().refresh.due.clone()),
        );
        let parts = Parts {
            connections: store.clone(),
            sessions: Arc::new(MemoryStore::new()),
            rescues: Arc::new(S3RescueStore::new(
                connector::assembly::s3_client(sdk),
                &self.bucket,
            )),
            credentials: Arc::new(SecretsManagerCredentials::new(
                aws_sdk_secretsmanager::Client::new(sdk),
                &self.secret_name,
            )),
            events: self.events.clone(),
            clock: Arc::new(self.clock.clone()),
            rate_budget: store.clone(),
            run_lock: store.clone(),
            shard_leases: store.clone(),
            webhooks: store.clone(),
            tenants: store,
        };
        Assembly::new(parts, self.assembly.settings().clone()).expect("client")
    }

    /// Connects `id` for `product` as the connect flow would: a code from the
    /// sandbox, exchanged, stored as a new connection.
    pub async fn connect(&self, id: &str, product: Product) -> Connection {
        self.connect_in(&TenantId::default_tenant(), id, product)
            .await
    }

    /// A connection `id` of `tenant`, made as [`RefreshApp::connect`] makes one.
    pub async fn connect_in(&self, tenant: &TenantId, id: &str, product: Product) -> Connection {
        let app = match product {
            Product::Marketing => &self.sandbox_config.marketing,
            Product::Crm => &self.sandbox_config.crm,
        };
        let credentials = ClientCredentials {
            client_id: app.client_id.clone(),
            client_secret: ClientSecret::new(app.client_secret.clone()),
        };
        let code = AuthCode::new(
            self.sandbox
                .sandbox
                .approve_consent(sandbox_product(product), REDIRECT),
        );
        let issued = self
            .engine
            .token_endpoint
            .exchange_code(product, &credentials, &code, REDIRECT)
            .await
            .expect("exchange");
        let now = self.clock.now();
        let pair = issued.into_pair(product, None, now).expect("pair");
        let connection = Connection::connected(
            ConnectionId::parse_in(tenant, id).expect("valid"),
            product,
            pair,
            now,
        );
        self.store.create(&connection).await.expect("stored")
    }

    /// A person connects `id` again (a new grant at the sandbox) while whatever is
    /// under way goes on: the stored connection gets the new pair, as the connect
    /// flow's reconnect writes it. Returns the new pair.
    pub async fn reconnect_now(&self, id: &str) -> TokenPair {
        let current = self.stored(id).await;
        let (access, refresh_token, expires_in) = self
            .sandbox
            .sandbox
            .issue_pair(sandbox_product(current.product));
        let now = self.clock.now();
        let fresh = TokenPair {
            access_token: AccessToken::new(access),
            refresh_token: RefreshToken::new(refresh_token),
            access_expires_at: now.plus_seconds(expires_in),
        };
        self.store
            .update(&current.reconnected(fresh.clone(), now))
            .await
            .expect("reconnected");
        fresh
    }

    /// Moves the service's and the sandbox's clocks forward together.
    pub fn advance(&self, seconds: i64) {
        self.clock.advance(seconds);
        self.sandbox.sandbox.advance_clock(seconds);
    }

    /// The stored connection.
    pub async fn stored(&self, id: &str) -> Connection {
        self.store
            .get(&ConnectionId::in_default_tenant(id).expect("valid"))
            .await
            .expect("read")
            .expect("present")
    }

    /// One refresh through the protocol.
    pub async fn refresh(
        &self,
        id: &str,
        request: RefreshRequest,
    ) -> Result<Refreshed, RefreshFailure> {
        self.engine
            .refresh(
                &ConnectionId::in_default_tenant(id).expect("valid"),
                request,
            )
            .await
    }

    /// Starts a refresh of `id` in a task, with RD answering after `latency`, and
    /// returns once RD has received the token call (so a test can act mid-call).
    pub async fn refresh_until_rd_is_called(
        &self,
        id: &str,
        latency: Duration,
    ) -> tokio::task::JoinHandle<Result<Refreshed, RefreshFailure>> {
        self.sandbox.sandbox.set_token_latency(latency);
        let calls = self.sandbox.sandbox.stats().token_calls;
        let engine = self.engine.clone();
        let id = ConnectionId::in_default_tenant(id).expect("valid");
        let task =
            tokio::spawn(async move { engine.refresh(&id, RefreshRequest::default()).await });
        self.sandbox.sandbox.wait_for_token_calls(calls + 1).await;
        task
    }

    /// One refresher run with concurrency 32 and no deadline.
    pub async fn run(&self) -> RunSummary {
        scheduled_refresh::run(
            &self.engine,
            &RunLimits {
                concurrency: 32,
                finish_by_ms: None,
                counted_tenants: vec![TenantId::default_tenant()],
            },
        )
        .await
    }

    /// Whether the stored access token of `id` works on the sandbox's API.
    pub async fn usable(&self, id: &str) -> bool {
        let c = self.stored(id).await;
        self.sandbox.sandbox.access_token_is_valid(
            sandbox_product(c.product),
            c.tokens.access_token.expose_secret(),
        )
    }

    /// Events of one kind published so far.
    pub fn events_of(&self, kind: EventKind) -> Vec<ServiceEvent> {
        self.events
            .events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    /// Every token and code the sandbox issued, and both client secrets.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = self.sandbox.sandbox.issued_secrets();
        secrets.push(self.sandbox_config.marketing.client_secret.clone());
        secrets.push(self.sandbox_config.crm.client_secret.clone());
        secrets
    }
}

impl Drop for RefreshApp {
    fn drop(&mut self) {
        logs::record_secrets_for_suite_scan(&self.secrets());
    }
}
