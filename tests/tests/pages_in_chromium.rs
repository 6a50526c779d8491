//! The consent flow's result pages as a person sees them: headless Chromium opens
//! the connect link, follows the redirect to the RD Station sandbox's consent page,
//! clicks, and lands on our page. The test reads the rendered text (`innerText`,
//! under the page's strict CSP) and writes a screenshot of each page to
//! `target/screenshots/` for a reviewer.

use std::path::PathBuf;

use connector::assembly::{Assembly, Parts, Settings};
use connector::inbound::http::{connect_routes, finish};
use connector::services::caller_policy::CallerPolicy;
use connector::services::connect::{ConnectService, PublicBase};
use connector::services::proxy::ProxySettings;
use connector::services::refresh_protocol::RefreshSettings;
use integration_tests::webdriver::{Browser, ChromeDriver};
use rd_sandbox::{Fault, RunningSandbox, Sandbox, SandboxConfig, SandboxProduct};
use tokio::net::TcpListener;
use url::Url;

/// The connect routes on a loopback port, with the sandbox as RD.
struct Site {
    base: Url,
    service: ConnectService,
    sandbox: RunningSandbox,
}

async fn site() -> Site {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base =
        Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    let config = SandboxConfig::default();
    let sandbox = Sandbox::new(config.clone())
        .spawn_local()
        .await
        .expect("sandbox");
    let assembly = Assembly::new(
        Parts::in_memory(integration_tests::sandbox_credentials(&config)),
        Settings {
            rdstation: integration_tests::sandbox_endpoints(&sandbox),
            refresh: RefreshSettings::default(),
            public_base: PublicBase::Fixed(base.clone()),
            allowed_return_origins: Vec::new(),
            caller_policy: CallerPolicy::LocalUnauthenticated,
            proxy: ProxySettings::default(),
        },
    )
    .expect("assembly");
    let service = assembly.connect_service();
    let app = finish(connect_routes(service.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Site {
        base,
        service,
        sandbox,
    }
}

impl Site {
    /// A fresh connect link for `id`.
    async fn link(&self, id: &str) -> String {
        let (_, url) = self
            .service
            .open_session(id, connector::domain::Product::Crm, None, false, &self.base)
            .await
            .expect("session");
        url.to_string()
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("target/screenshots")
        .join(format!("{name}.png"))
}

/// What the person sees, after a screenshot for the reviewer.
async fn seen(browser: &Browser, name: &str) -> (String, String) {
    let path = screenshot_path(name);
    browser.screenshot(&path).await;
    let size = std::fs::metadata(&path).expect("screenshot written").len();
    assert!(size > 1_000, "{name}: a {size}-byte screenshot is no page");
    (browser.title().await, browser.visible_text().await)
}

#[tokio::test]
async fn a_person_sees_each_outcome_of_the_consent_flow_in_a_real_browser() {
    let site = site().await;
    let driver = ChromeDriver::start().await;

    // Connected: link → RD's consent page → Allow → our page.
    let browser = driver.browser().await;
    browser.goto(&site.link("chromium-ok").await).await;
    assert!(
        browser
            .url()
            .await
            .starts_with(site.sandbox.base_url.as_str())
    );
    assert!(browser.visible_text().await.contains("asks for access"));
    browser.click("button[value=allow]").await;
    assert!(
        browser
            .url()
            .await
            .starts_with(&format!("{}oauth/callback", site.base))
    );
    let (title, text) = seen(&browser, "connected").await;
    assert_eq!(title, "RD Station connected");
    assert!(
        text.contains("The RD Station CRM account is connected as \"chromium-ok\""),
        "{text}"
    );
    assert!(!text.contains("code=") && !text.contains("state="));
    browser.close().await;

    // Denied on RD's page.
    let browser = driver.browser().await;
    browser.goto(&site.link("chromium-denied").await).await;
    browser.click("button[value=deny]").await;
    let (title, text) = seen(&browser, "denied").await;
    assert_eq!(title, "Connection not completed");
    assert!(
        text.contains("Access was not granted on RD Station"),
        "{text}"
    );
    browser.close().await;

    // RD's token endpoint fails when the code is exchanged.
    let browser = driver.browser().await;
    browser.goto(&site.link("chromium-unavailable").await).await;
    site.sandbox.sandbox.inject_fault(Fault::ServerError, 10);
    browser.click("button[value=allow]").await;
    // The click may return before the redirect to our callback has been served:
    // the faults stay until the result page is there.
    let (_, text) = seen(&browser, "rd-unavailable").await;
    site.sandbox.sandbox.clear_faults();
    assert!(
        text.contains("RD Station could not complete the connection; try again in a few minutes."),
        "{text}"
    );
    browser.close().await;

    // The code expired before it was exchanged: the browser reaches our callback
    // only after RD's code lifetime has passed.
    let browser = driver.browser().await;
    browser.goto(&site.link("chromium-expired").await).await;
    let consent = Url::parse(&browser.url().await).expect("consent url");
    let redirect_uri = consent
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .expect("redirect_uri");
    let state = consent
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let code = site
        .sandbox
        .sandbox
        .approve_consent(SandboxProduct::Crm, &redirect_uri);
    site.sandbox
        .sandbox
        .advance_clock(rd_sandbox::CRM_CODE_TTL + 1);
    let mut callback = Url::parse(&redirect_uri).expect("redirect uri");
    callback
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    browser.goto(callback.as_str()).await;
    let (_, text) = seen(&browser, "expired-code").await;
    assert!(
        text.contains("RD Station says the authorization expired or was already used"),
        "{text}"
    );
    browser.close().await;

    // A callback this browser did not start (no binding cookie, unknown state).
    let browser = driver.browser().await;
    browser
        .goto(&format!(
            "{}oauth/callback?code=x&state=not-ours",
            site.base
        ))
        .await;
    let (_, text) = seen(&browser, "invalid-state").await;
    assert!(
        text.contains(
            "this sign-in is unknown, expired, already used or was started in another browser"
        ),
        "{text}"
    );
    browser.close().await;
}
