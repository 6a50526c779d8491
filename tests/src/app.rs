//! `TestApp`: the callback function's router over a fresh DynamoDB table and a
//! fresh Secrets Manager secret on moto, talking to its own RD Station sandbox
//! over loopback. Every request goes in as an API Gateway HTTP API v2 event.

use std::sync::Arc;

use axum::Router;
use connector::assembly::{Assembly, Parts, Settings};
use connector::clock::OffsetClock;
use connector::domain::{Connection, ConnectionId};
use connector::inbound::http::{api_proxy_router, oauth_callback_router};
use connector::outbound::credentials::SecretsManagerCredentials;
use connector::outbound::dynamodb::DynamoStore;
use connector::outbound::events::RecordingPublisher;
use connector::outbound::memory::MemoryRescueStore;
use connector::ports::ConnectionStore;
use connector::services::connect::{ConnectService, PublicBase};
use rd_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use serde_json::json;
use url::Url;

use crate::apigw::{self, Answer, EventRequest};
use crate::{logs, moto};
use connector::services::caller_policy::CallerPolicy;

/// Where tests pretend the service is deployed.
pub const PUBLIC_BASE_URL: &str = "https://connect.example.com";
/// The domain the API Gateway fixtures say requests arrived on.
pub const API_DOMAIN: &str = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com";
/// The origin tests may use for `return_url`.
pub const RETURN_ORIGIN: &str = "https://app.example.com";

/// A wired-up service for one test.
pub struct TestApp {
    /// Where the service says it is reachable (connect URLs start here).
    pub base_url: String,
    /// The RD Station sandbox on loopback.
    pub sandbox: RunningSandbox,
    /// The service as the Lambda builds it.
    pub service: ConnectService,
    /// The callback function's router.
    pub router: Router,
    /// The API function's router, on the same store and clock.
    pub api: Router,
    /// The DynamoDB store (on moto) behind the service.
    pub store: DynamoStore,
    /// The service's clock, which tests can move.
    pub clock: OffsetClock,
    /// The sandbox's app configuration (client ids and secrets).
    pub sandbox_config: SandboxConfig,
    /// The Secrets Manager secret holding the client credentials.
    pub secret_name: String,
    /// A browser-like HTTP client that does not follow redirects (for the
    /// sandbox's consent page).
    pub browser: reqwest::Client,
    /// The person's browser, as our routes see it (its cookies).
    pub person: Browser,
}

/// The JSON the credentials secret holds for `config`.
pub fn credentials_json(config: &SandboxConfig) -> String {
    json!({
        "marketing": {"client_id": config.marketing.client_id, "client_secret": config.marketing.client_secret},
        "crm": {"client_id": config.crm.client_id, "client_secret": config.crm.client_secret},
    })
    .to_string()
}

impl TestApp {
    /// A service with a fresh table and secret, and a sandbox that requires our
    /// exact redirect URI.
    pub async fn start() -> Self {
        Self::start_at(Some(PUBLIC_BASE_URL)).await
    }

    /// A service deployed without `PUBLIC_BASE_URL` (`None`): its base is the
    /// domain API Gateway says each request arrived on ([`API_DOMAIN`] in the
    /// fixtures), as on a first deploy; or with a configured base.
    pub async fn start_at(public_base_url: Option<&str>) -> Self {
        logs::install();
        let base_url =
            public_base_url.map_or_else(|| format!("https://{API_DOMAIN}"), str::to_owned);
        let redirect_uri = format!("{base_url}/oauth/callback");
        let mut sandbox_config = SandboxConfig::default();
        sandbox_config.marketing.redirect_uri = Some(redirect_uri.clone());
        sandbox_config.crm.redirect_uri = Some(redirect_uri.clone());
        let sandbox = Sandbox::new(sandbox_config.clone())
            .spawn_local()
            .await
            .expect("sandbox listens on loopback");
        let store = moto::fresh_store().await;
        let secret_name = moto::create_secret(&credentials_json(&sandbox_config)).await;
        let credentials =
            SecretsManagerCredentials::new(moto::secretsmanager().await, &secret_name);
        let clock = OffsetClock::new();
        let parts = Parts {
            connections: Arc::new(store.clone()),
            sessions: Arc::new(store.clone()),
            rescues: Arc::new(MemoryRescueStore::default()),
            credentials: Arc::new(credentials),
            events: Arc::new(RecordingPublisher::new()),
            clock: Arc::new(clock.clone()),
            rate_budget: Arc::new(connector::outbound::memory::MemoryStore::new()),
            run_lock: Arc::new(connector::outbound::memory::MemoryStore::new()),
            shard_leases: Arc::new(connector::outbound::memory::MemoryStore::new()),
            webhooks: Arc::new(store.clone()),
            tenants: Arc::new(store.clone()),
        };
        let settings = Settings {
            rdstation: crate::sandbox_endpoints(&sandbox),
            refresh: crate::refresh_app::test_settings(),
            public_base: public_base_url.map_or(PublicBase::RequestDomain, |url| {
                PublicBase::Fixed(Url::parse(url).expect("url"))
            }),
            allowed_return_origins: vec![Url::parse(RETURN_ORIGIN).expect("url").origin()],
            caller_policy: CallerPolicy::Iam {
                allowed_arns: Vec::new(),
            },
            proxy: connector::services::proxy::ProxySettings::default(),
            tenancy: Default::default(),
        };
        let assembly = Assembly::new(parts, settings).expect("client");
        let service = assembly.connect_service();
        let api = api_proxy_router(assembly.api_state().expect("API state"));
        let base = service
            .public_base
            .resolve(Some(API_DOMAIN))
            .expect("a base");
        assert_eq!(
            connector::services::connect::redirect_uri(&base),
            redirect_uri
        );
        let router =
            oauth_callback_router(service.clone(), connector::inbound::http::Pages::default());
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            base_url,
            sandbox,
            service,
            router,
            api,
            store,
            clock,
            sandbox_config,
            secret_name,
            browser,
            person: Browser::default(),
        }
    }

    /// Sends an event through the router.
    pub async fn send(&self, request: &EventRequest<'_>) -> Answer {
        apigw::send(&self.router, request).await
    }

    /// `POST /connect/sessions` as a signed caller would.
    pub async fn open_session(&self, body: serde_json::Value) -> Answer {
        let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
        request.body = Some(body.to_string().into_bytes());
        self.send(&request).await
    }

    /// Opens a session and returns its connect URL's path.
    pub async fn connect_path(
        &self,
        connection_id: &str,
        product: &str,
        return_url: Option<&str>,
    ) -> String {
        let mut body = json!({"connection_id": connection_id, "product": product});
        if let Some(url) = return_url {
            body["return_url"] = url.into();
        }
        self.session_path(body).await
    }

    /// Opens a session that may replace the existing connection `connection_id`.
    pub async fn reconnect_path(&self, connection_id: &str, product: &str) -> String {
        self.session_path(
            json!({"connection_id": connection_id, "product": product, "reconnect": true}),
        )
        .await
    }

    async fn session_path(&self, body: serde_json::Value) -> String {
        let answer = self.open_session(body).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        let connect_url = Url::parse(answer.json()["connect_url"].as_str().expect("connect_url"))
            .expect("connect_url is a URL");
        assert!(connect_url.as_str().starts_with(&self.base_url));
        connect_url.path().to_owned()
    }

    /// A person opens the connect link in their browser: the router's redirect to
    /// RD's consent page (the browser keeps the binding cookie it sets).
    pub async fn consent_url(&self, connect_path: &str) -> Url {
        self.consent_url_in(&self.person, connect_path).await
    }

    /// Opens the connect link in `browser`, expecting the redirect to RD.
    pub async fn consent_url_in(&self, browser: &Browser, connect_path: &str) -> Url {
        let answer = self.open_link_in(browser, connect_path).await;
        assert_eq!(answer.status, 302, "{}", answer.text());
        Url::parse(&answer.location()).expect("consent URL")
    }

    /// Opens the connect link in `browser`; the browser keeps any cookie set.
    pub async fn open_link_in(&self, browser: &Browser, connect_path: &str) -> Answer {
        let mut request = EventRequest::new(apigw::BROWSER, "GET", connect_path);
        request.cookies = browser.cookies();
        let answer = self.send(&request).await;
        browser.keep(&answer);
        answer
    }

    /// The person sees the sandbox's consent page and clicks `decision` ("allow" or
    /// "deny"); returns where RD sends the browser back to.
    pub async fn decide(&self, consent_url: &Url, decision: &str) -> Url {
        let page = self
            .browser
            .get(consent_url.clone())
            .send()
            .await
            .expect("consent page");
        assert_eq!(page.status(), 200);
        assert!(
            page.text()
                .await
                .expect("html")
                .contains("/consent/decision")
        );
        let query: std::collections::HashMap<String, String> =
            consent_url.query_pairs().into_owned().collect();
        let product = if consent_url.path() == "/auth/dialog" {
            "marketing"
        } else {
            "crm"
        };
        let answer = self
            .browser
            .post(self.sandbox.url("/consent/decision"))
            .form(&[
                ("product", product),
                ("client_id", &query["client_id"]),
                ("redirect_uri", &query["redirect_uri"]),
                ("state", &query["state"]),
                ("decision", decision),
            ])
            .send()
            .await
            .expect("decision");
        assert!(answer.status().is_redirection());
        let location = answer.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_owned();
        Url::parse(&location).expect("callback URL")
    }

    /// RD's redirect arrives at our callback, from the person's browser.
    pub async fn callback(&self, callback_url: &Url, accept_html: bool) -> Answer {
        self.callback_in(&self.person, callback_url, accept_html)
            .await
    }

    /// RD's redirect arrives at our callback, from `browser`.
    pub async fn callback_in(
        &self,
        browser: &Browser,
        callback_url: &Url,
        accept_html: bool,
    ) -> Answer {
        assert!(callback_url.as_str().starts_with(&self.base_url));
        let mut request = EventRequest::new(apigw::BROWSER, "GET", callback_url.path());
        request.cookies = browser.cookies();
        let query = callback_url.query().unwrap_or_default().to_owned();
        request.query = &query;
        if !accept_html {
            request.headers.push(("accept", "application/json"));
        }
        self.send(&request).await
    }

    /// `browser` follows a redirect our router answered (a `Location` on this
    /// service), keeping its cookies and asking for a page.
    pub async fn follow_in(&self, browser: &Browser, redirect: &Answer) -> Answer {
        let location = Url::parse(&redirect.location()).expect("location");
        assert!(location.as_str().starts_with(&self.base_url), "{location}");
        let mut request = EventRequest::new(apigw::BROWSER, "GET", location.path());
        request.cookies = browser.cookies();
        self.send(&request).await
    }

    /// A whole connect flow, approved; returns the callback's answer.
    pub async fn connect(&self, connection_id: &str, product: &str) -> Answer {
        let path = self.connect_path(connection_id, product, None).await;
        self.finish(&path).await
    }

    /// A whole connect flow for a session opened with `body`, approved.
    pub async fn connect_with(&self, body: serde_json::Value) -> Answer {
        let path = self.session_path(body).await;
        self.finish(&path).await
    }

    /// A whole flow that replaces the existing connection, approved.
    pub async fn reconnect(&self, connection_id: &str, product: &str) -> Answer {
        let path = self.reconnect_path(connection_id, product).await;
        self.finish(&path).await
    }

    /// A whole flow opened by `POST /connections/{id}/reconnect` (with `body`,
    /// if any), approved: the session's answer and the callback's.
    pub async fn reconnect_in_one_call(
        &self,
        connection_id: &str,
        body: Option<serde_json::Value>,
    ) -> (Answer, Answer) {
        let path = format!("/connections/{connection_id}/reconnect");
        let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", &path);
        request.body = body.map(|b| b.to_string().into_bytes());
        let opened = self.send(&request).await;
        assert_eq!(opened.status, 201, "{}", opened.text());
        let connect_url = Url::parse(opened.json()["connect_url"].as_str().expect("connect_url"))
            .expect("connect_url is a URL");
        let done = self.finish(connect_url.path()).await;
        (opened, done)
    }

    async fn finish(&self, path: &str) -> Answer {
        let consent = self.consent_url(path).await;
        let back = self.decide(&consent, "allow").await;
        self.callback(&back, false).await
    }

    /// The stored connection.
    pub async fn stored(&self, id: &str) -> Option<Connection> {
        self.store
            .get(&ConnectionId::in_default_tenant(id).expect("valid id"))
            .await
            .expect("store reads")
    }

    /// Every token and code the sandbox issued, and both client secrets.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = self.sandbox.sandbox.issued_secrets();
        secrets.push(self.sandbox_config.marketing.client_secret.clone());
        secrets.push(self.sandbox_config.crm.client_secret.clone());
        secrets
    }

    /// Asserts that no token or code the sandbox issued, nor either client secret,
    /// appears in the log captured so far.
    pub fn assert_no_secret_logged(&self) {
        assert!(
            !self.sandbox.sandbox.issued_secrets().is_empty(),
            "the sandbox issued nothing to look for"
        );
        logs::assert_none_logged(&self.secrets());
    }
}

/// A person's browser: the cookies our routes set on it.
#[derive(Debug, Default)]
pub struct Browser {
    jar: std::sync::Mutex<Vec<String>>,
}

impl Browser {
    /// The cookies it sends, as `name=value`.
    pub fn cookies(&self) -> Vec<String> {
        self.jar.lock().expect("lock").clone()
    }

    /// Keeps the cookies `answer` sets (replacing ones of the same name).
    pub fn keep(&self, answer: &Answer) {
        let mut jar = self.jar.lock().expect("lock");
        for value in answer.headers.get_all("set-cookie") {
            let text = value.to_str().expect("ascii cookie");
            let pair = text
                .split(';')
                .next()
                .expect("name=value")
                .trim()
                .to_owned();
            let name = pair.split('=').next().expect("name").to_owned();
            jar.retain(|c| !c.starts_with(&format!("{name}=")));
            jar.push(pair);
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        logs::record_secrets_for_suite_scan(&self.secrets());
    }
}
