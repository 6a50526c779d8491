//! `make run`'s binary, started as a person would start it (with the environment
//! choosing what it talks to), and a person's walk through it over real HTTP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

/// A workspace binary built by `make test` (`target/<profile>/<name>`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; `make test` builds it first",
        path.display()
    );
    path
}

/// A running local run: its base URL and what its banner said.
pub struct LocalRun {
    /// Where it serves, e.g. `http://127.0.0.1:40123`.
    pub base: Url,
    /// The banner's lines.
    pub banner: Vec<String>,
    process: Child,
    output: mpsc::Receiver<String>,
}

impl LocalRun {
    /// Starts the binary on free ports with `env` added to this process's
    /// environment, and waits for its banner.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(workspace_binary("local-run"));
        command
            .env("PORT", "0")
            .env("SANDBOX_PORT", "0")
            .env("REFRESH_INTERVAL_SECONDS", "3600")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = command.spawn().expect("start local-run");
        let stdout = process.stdout.take().expect("stdout");
        let (lines, output) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let base = loop {
            let line = output
                .recv_timeout(Duration::from_secs(60))
                .expect("the banner (did the run fail to start?)");
            banner.push(line.clone());
            if let Some(url) = line.trim().strip_prefix("Open:") {
                break Url::parse(url.trim()).expect("the banner's URL");
            }
        };
        // The rest of the banner, up to its closing line.
        while let Ok(line) = output.recv_timeout(Duration::from_secs(10)) {
            let done = line.starts_with("Stop with");
            banner.push(line);
            if done {
                break;
            }
        }
        Self {
            base,
            banner,
            process,
            output,
        }
    }

    /// The banner line that starts with `label` (e.g. `"Store:"`).
    pub fn banner_line(&self, label: &str) -> &str {
        self.banner
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .map_or("", String::as_str)
    }

    /// `path` on the run.
    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("url")
    }

    /// Sends SIGTERM, as a process manager (or Ctrl-C) would, and waits for the exit.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        let pid = self.process.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = self.process.wait().expect("exit status");
        // Every line up to the end of its output: the reader thread may still
        // be passing the last ones on when the process has exited (taking only
        // what had arrived missed a "Stopped." printed last).
        let mut rest = Vec::new();
        while let Ok(line) = self.output.recv_timeout(Duration::from_secs(10)) {
            rest.push(line);
        }
        (status, rest)
    }
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A client that follows no redirects, like a test of each hop.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A person connects `connection_id` through the run at `base`: opens a connect
/// session, then [`consent_through`] its link. Returns the callback's JSON.
pub async fn connect(base: &Url, connection_id: &str, product: &str) -> Value {
    let opened = client()
        .post(base.join("/connect/sessions").expect("url"))
        .json(&json!({"connection_id": connection_id, "product": product}))
        .send()
        .await
        .expect("open session");
    assert_eq!(opened.status(), StatusCode::CREATED);
    let body: Value = opened.json().await.expect("json");
    let link = body["connect_url"]
        .as_str()
        .expect("connect_url")
        .to_owned();
    consent_through(base, &link, product).await
}

/// A person opens the connect `link`, agrees on RD's consent page (wherever the
/// run's RD is) and lands on the run's callback, which answers 200 with JSON.
pub async fn consent_through(base: &Url, link: &str, product: &str) -> Value {
    let http = client();
    let redirect = http.get(link).send().await.expect("connect link");
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let cookie = redirect.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let consent =
        Url::parse(redirect.headers()["location"].to_str().expect("ascii")).expect("consent URL");
    let page = http
        .get(consent.clone())
        .send()
        .await
        .expect("consent page");
    assert_eq!(page.status(), StatusCode::OK);
    let query: HashMap<String, String> = consent.query_pairs().into_owned().collect();
    let decided = http
        .post(consent.join("/consent/decision").expect("url"))
        .form(&[
            ("product", product),
            ("client_id", &query["client_id"]),
            ("redirect_uri", &query["redirect_uri"]),
            ("state", &query["state"]),
            ("decision", "allow"),
        ])
        .send()
        .await
        .expect("decision");
    assert!(decided.status().is_redirection());
    let callback = decided.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(callback.starts_with(base.as_str().trim_end_matches('/')));
    let landed = http
        .get(&callback)
        .header("cookie", cookie)
        .header("accept", "application/json")
        .send()
        .await
        .expect("callback");
    assert_eq!(landed.status(), StatusCode::OK);
    landed.json().await.expect("json")
}
