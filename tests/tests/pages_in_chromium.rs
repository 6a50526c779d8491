//! The pages as a person sees them, in headless Chromium: the local start page
//! connects an account by clicking, every outcome of the consent flow shows its
//! page in Portuguese and in English (by the browser's `Accept-Language`) with
//! the operator's brand, a reloaded success page still shows the success, and a
//! mistyped address answers a page. The tests read the rendered text
//! (`innerText`) and computed styles under each page's strict policy, and write a
//! screenshot of each page to `target/screenshots/` for a reviewer.

use std::path::PathBuf;

use connector::assembly::{Assembly, Parts, Settings};
use connector::inbound::http::{Brand, Pages, SupportContact, connect_routes, finish};
use connector::services::caller_policy::CallerPolicy;
use connector::services::connect::{ConnectService, PublicBase};
use connector::services::proxy::ProxySettings;
use connector::services::refresh_protocol::RefreshSettings;
use integration_tests::local_run::LocalRun;
use integration_tests::webdriver::{Browser, ChromeDriver};
use rd_sandbox::{Fault, RunningSandbox, Sandbox, SandboxConfig, SandboxProduct};
use tokio::net::TcpListener;
use url::Url;

/// The brand the tests configure.
const NAME: &str = "Acme Vendas";
const SUPPORT: &str = "suporte@acme.com.br";
/// `#0a7b3e` as the browser computes it.
const ACCENT_RGB: &str = "rgb(10, 123, 62)";

fn brand() -> Brand {
    Brand {
        name: Some(NAME.to_owned()),
        support: Some(SupportContact::parse(SUPPORT).expect("support")),
        logo: None,
        accent: "#0a7b3e".to_owned(),
    }
}

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
            tenancy: Default::default(),
        },
    )
    .expect("assembly");
    let service = assembly.connect_service();
    let pages = Pages::new(brand());
    let app = finish(connect_routes(service.clone(), pages.clone()), pages);
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
            .open_session(
                connector::services::connect::SessionRequest {
                    tenant: &connector::domain::TenantId::default_tenant(),
                    connection_id: id,
                    product: connector::domain::Product::Crm,
                    return_url: None,
                    reconnect: false,
                    tags: None,
                },
                &self.base,
            )
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

/// What the person sees, after a screenshot for the reviewer: the title and the
/// text. Every page carries the brand (name, support contact, accent colour,
/// which applies only if the policy let the page's style through).
async fn seen(browser: &Browser, name: &str) -> (String, String) {
    let path = screenshot_path(name);
    browser.screenshot(&path).await;
    let size = std::fs::metadata(&path).expect("screenshot written").len();
    assert!(size > 1_000, "{name}: a {size}-byte screenshot is no page");
    let text = browser.visible_text().await;
    assert!(text.starts_with(NAME), "{name}: {text}");
    assert!(text.contains(SUPPORT), "{name}: {text}");
    assert_eq!(
        browser.style_of("header", "background-color").await,
        ACCENT_RGB,
        "{name}: the page's style did not apply"
    );
    (browser.title().await, text)
}

/// One language's words for the outcomes the test walks through.
struct Expected {
    accept: &'static str,
    lang: &'static str,
    connected: &'static str,
    denied: &'static str,
    unavailable: &'static str,
    expired: &'static str,
    unknown_sign_in: &'static str,
}

const PORTUGUESE: Expected = Expected {
    accept: "pt-BR,pt",
    lang: "pt-BR",
    connected: "A conta do RD Station CRM agora está conectada como",
    denied: "O acesso não foi autorizado no RD Station",
    unavailable: "O RD Station não conseguiu concluir a conexão.",
    expired: "O RD Station informou que a autorização expirou ou já foi usada.",
    unknown_sign_in: "Não reconhecemos este acesso",
};

const ENGLISH: Expected = Expected {
    accept: "en-US,en",
    lang: "en",
    connected: "The RD Station CRM account is now connected as",
    denied: "Access was not granted on RD Station",
    unavailable: "RD Station could not complete the connection.",
    expired: "RD Station says the authorization expired or was already used.",
    unknown_sign_in: "We could not match this sign-in to a connection",
};

#[tokio::test]
async fn a_person_sees_each_outcome_of_the_consent_flow_in_their_language_and_brand() {
    let site = site().await;
    let driver = ChromeDriver::start().await;
    for words in [PORTUGUESE, ENGLISH] {
        let lang = words.lang;
        let open = |id: &str| format!("chromium-{lang}-{id}");

        // Connected: link → RD's consent page → Allow → our page, which a reload
        // shows again (the code and state are gone from the address).
        let browser = driver.browser_speaking(words.accept).await;
        browser.goto(&site.link(&open("ok")).await).await;
        assert!(
            browser
                .url()
                .await
                .starts_with(site.sandbox.base_url.as_str())
        );
        browser.click("button[value=allow]").await;
        let landed = browser.url().await;
        assert!(
            landed.starts_with(&format!("{}connect/", site.base)),
            "{landed}"
        );
        assert!(
            !landed.contains("code=") && !landed.contains("state="),
            "{landed}"
        );
        let (title, text) = seen(&browser, &format!("connected-{lang}")).await;
        assert!(title.ends_with(NAME), "{title}");
        assert_eq!(browser.language().await, lang);
        assert!(
            text.contains(&format!(
                "{} \u{201c}{}\u{201d}.",
                words.connected,
                open("ok")
            )),
            "{text}"
        );
        browser.reload().await;
        let (_, reloaded) = seen(&browser, &format!("connected-reloaded-{lang}")).await;
        assert_eq!(reloaded, text, "a reload shows the same success");
        browser.close().await;

        // Denied on RD's page.
        let browser = driver.browser_speaking(words.accept).await;
        browser.goto(&site.link(&open("denied")).await).await;
        browser.click("button[value=deny]").await;
        let (_, text) = seen(&browser, &format!("denied-{lang}")).await;
        assert!(text.contains(words.denied), "{text}");
        browser.close().await;

        // RD's token endpoint fails when the code is exchanged.
        let browser = driver.browser_speaking(words.accept).await;
        browser.goto(&site.link(&open("unavailable")).await).await;
        site.sandbox.sandbox.inject_fault(Fault::ServerError, 10);
        browser.click("button[value=allow]").await;
        // The click may return before the redirect to our callback has been
        // served: the faults stay until the result page is there.
        let (_, text) = seen(&browser, &format!("rd-unavailable-{lang}")).await;
        site.sandbox.sandbox.clear_faults();
        assert!(text.contains(words.unavailable), "{text}");
        browser.close().await;

        // The code expired before it was exchanged: the browser reaches our
        // callback only after RD's code lifetime has passed.
        let browser = driver.browser_speaking(words.accept).await;
        browser.goto(&site.link(&open("expired")).await).await;
        let consent = Url::parse(&browser.url().await).expect("consent url");
        let query = |name: &str| {
            consent
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .expect(name)
        };
        let (redirect_uri, state) = (query("redirect_uri"), query("state"));
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
        let (_, text) = seen(&browser, &format!("expired-code-{lang}")).await;
        assert!(text.contains(words.expired), "{text}");
        browser.close().await;

        // A callback this browser did not start (no binding cookie, unknown state).
        let browser = driver.browser_speaking(words.accept).await;
        browser
            .goto(&format!(
                "{}oauth/callback?code=x&state=not-ours",
                site.base
            ))
            .await;
        let (_, text) = seen(&browser, &format!("invalid-state-{lang}")).await;
        assert!(text.contains(words.unknown_sign_in), "{text}");
        browser.close().await;
    }
}

#[tokio::test]
async fn the_local_start_page_connects_an_account_by_clicking() {
    let run = LocalRun::start(&[
        ("BRAND_NAME", NAME),
        ("BRAND_SUPPORT_CONTACT", SUPPORT),
        ("BRAND_ACCENT_COLOR", "#0A7B3E"),
    ]);
    let driver = ChromeDriver::start().await;
    // A browser that names neither language gets Portuguese.
    let browser = driver.browser_speaking("de-DE,de").await;
    browser.goto(run.url("/").as_str()).await;
    let (_, text) = seen(&browser, "local-start-page").await;
    assert!(
        text.contains("Conecte uma conta no sandbox do RD Station"),
        "{text}"
    );
    assert_eq!(browser.language().await, "pt-BR");

    // The form's submit, under the page's form-action policy, reaches RD's
    // consent page.
    browser.click("button[type=submit]").await;
    assert!(
        browser.visible_text().await.contains("asks for access"),
        "{}",
        browser.url().await
    );
    browser.click("button[value=allow]").await;
    let (_, text) = seen(&browser, "local-connected").await;
    assert!(
        text.contains(
            "A conta do RD Station CRM agora está conectada como \u{201c}demo-crm\u{201d}."
        ),
        "{text}"
    );
    browser.reload().await;
    assert_eq!(seen(&browser, "local-connected-reloaded").await.1, text);

    // A mistyped address answers a page, in the brand, not raw JSON.
    browser.goto(run.url("/conect/typo").as_str()).await;
    let (title, text) = seen(&browser, "local-not-found").await;
    assert!(title.starts_with("Página não encontrada"), "{title}");
    assert!(text.contains("Não há nada neste endereço."), "{text}");
    browser.close().await;
}
