//! Headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium`
//! and `chromium-driver`, which `make test` installs): a real browser following
//! real redirects, keeping real cookies, clicking real buttons.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running `chromedriver` on a loopback port.
pub struct ChromeDriver {
    process: Child,
    base: String,
    http: reqwest::Client,
}

impl ChromeDriver {
    /// Starts `chromedriver` and waits until it is ready.
    ///
    /// # Panics
    /// If `chromedriver` is not installed or never becomes ready.
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed (make test installs chromium-driver)");
        // It says so on stdout once it listens.
        let stdout = process.stdout.take().expect("stdout");
        let started = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains("started successfully"))
        });
        let started = tokio::time::timeout(Duration::from_secs(30), started)
            .await
            .expect("chromedriver did not start in 30 s")
            .expect("join");
        assert!(started, "chromedriver exited before it started");
        Self {
            process,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// A fresh headless browser (empty profile, no background network: this
    /// machine reaches nothing but loopback) that asks for pages in English.
    pub async fn browser(&self) -> Browser {
        self.browser_speaking("en-US,en").await
    }

    /// A fresh headless browser whose `Accept-Language` is `languages` (as a
    /// person's language settings make it, e.g. `pt-BR,pt`).
    pub async fn browser_speaking(&self, languages: &str) -> Browser {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,700",
        ];
        let first = languages.split(',').next().unwrap_or(languages);
        let lang = format!("--lang={first}");
        let args: Vec<&str> = args.iter().copied().chain([lang.as_str()]).collect();
        let created = self
            .http
            .post(format!("{}/session", self.base))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": args,
                    "prefs": {"intl.accept_languages": languages},
                },
            }}}))
            .send()
            .await
            .expect("new session");
        let body: Value = created.json().await.expect("json");
        let id = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {body}"))
            .to_owned();
        Browser {
            session: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One browser window.
pub struct Browser {
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("webdriver {path}: {error}"))
    }

    /// A command whose WebDriver error is the caller's to judge.
    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("webdriver")
            .json()
            .await
            .expect("json");
        if answer["value"]["error"].is_string() {
            return Err(answer["value"].clone());
        }
        Ok(answer["value"].clone())
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Clicks the element `css` selects, and waits for the navigation it starts to
    /// land: ChromeDriver may answer the click before a form's POST, RD's
    /// redirect and the page it leads to are done, and classic WebDriver has no
    /// event to await, so the window's URL and `document.readyState` are polled
    /// (every 20 ms, for 15 s at most).
    pub async fn click(&self, css: &str) {
        let before = self.url().await;
        let element = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        let id = element[ELEMENT_KEY]
            .as_str()
            .expect("element id")
            .to_owned();
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if self.url().await != before && self.ready_state().await == "complete" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "clicking {css} led nowhere within 15 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The document's `readyState`; empty while a navigation leaves no document
    /// to ask (the script's context went away with the page).
    async fn ready_state(&self) -> String {
        self.script_text("return document.readyState")
            .await
            .unwrap_or_default()
    }

    /// The text `script` returns in the page, or the WebDriver error.
    async fn script_text(&self, script: &str) -> Result<String, Value> {
        let value = self
            .try_command(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({"script": script, "args": []})),
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Where the browser is now.
    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .expect("url")
            .to_owned()
    }

    /// The text a person sees on the page (`innerText`: rendered, not markup).
    pub async fn visible_text(&self) -> String {
        self.script_text("return document.body.innerText")
            .await
            .unwrap_or_else(|error| panic!("webdriver /execute/sync: {error}"))
    }

    /// Reloads the page, as a person pressing F5 does.
    pub async fn reload(&self) {
        self.command(reqwest::Method::POST, "/refresh", Some(json!({})))
            .await;
    }

    /// The computed value of the CSS `property` of the first element `css`
    /// selects: whether the page's style applied under its policy.
    pub async fn style_of(&self, css: &str, property: &str) -> String {
        let script = format!(
            "return getComputedStyle(document.querySelector({css:?})).getPropertyValue({property:?})"
        );
        self.script_text(&script)
            .await
            .unwrap_or_else(|error| panic!("webdriver /execute/sync: {error}"))
    }

    /// The page's `lang` attribute.
    pub async fn language(&self) -> String {
        self.script_text("return document.documentElement.lang")
            .await
            .unwrap_or_else(|error| panic!("webdriver /execute/sync: {error}"))
    }

    /// The page's title.
    pub async fn title(&self) -> String {
        self.command(reqwest::Method::GET, "/title", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Writes a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64"))
            .expect("png");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Closes the window.
    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}
