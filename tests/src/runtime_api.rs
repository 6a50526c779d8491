//! A Lambda Runtime API on loopback, enough to run a function's real binary as
//! Lambda does: it hands out one event per `GET .../invocation/next` (with the
//! request id, deadline and function ARN headers) and collects what the function
//! posts to `.../response` or `.../error`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, watch};

/// The function's deployable artifact from `sam build` when `LAMBDA_ARTIFACTS`
/// names its build directory (`make test` sets it: the very `bootstrap` a deploy
/// uploads), else `target/<profile>/<name>` beside this test's executable.
pub fn artifact(name: &str) -> std::path::PathBuf {
    if let Some(artifacts) = std::env::var_os("LAMBDA_ARTIFACTS") {
        let function = match name {
            "oauth-callback" => "OAuthCallbackFunction",
            "api-proxy" => "ApiProxyFunction",
            "token-refresher" => "TokenRefresherFunction",
            "webhook-sender" => "WebhookSenderFunction",
            other => panic!("no function builds {other}"),
        };
        let path = std::path::PathBuf::from(artifacts)
            .join(function)
            .join("bootstrap");
        assert!(path.exists(), "{} is not built (sam build)", path.display());
        return path;
    }
    crate::local_run::workspace_binary(name)
}

/// A command that runs a function's `binary` as Lambda would under `api`, with
/// a deployed function's environment: a fresh table, secret (the sandbox's app
/// credentials) and rescue bucket on moto, and `rd` as RD Station. Callers add
/// what differs (`PUBLIC_BASE_URL`, log level, where output goes) and spawn it.
pub async fn function_command(
    binary: &std::path::Path,
    name: &str,
    api: &RuntimeApi,
    rd: &rd_sandbox::RunningSandbox,
) -> std::process::Command {
    let table = crate::moto::unique_name("connections");
    connector::outbound::dynamodb::schema::create_table(&crate::moto::dynamodb().await, &table)
        .await
        .expect("table");
    let secret = crate::moto::create_secret(&crate::app::credentials_json(
        &rd_sandbox::SandboxConfig::default(),
    ))
    .await;
    let bucket = crate::moto::create_bucket().await;
    deployed_command(binary, name, api, rd, &table, &secret, &bucket)
}

/// A command that runs a function's `binary` as Lambda would under `api`, over
/// the given `table`, `secret` and rescue `bucket`, with `rd` as RD Station.
pub fn deployed_command(
    binary: &std::path::Path,
    name: &str,
    api: &RuntimeApi,
    rd: &rd_sandbox::RunningSandbox,
    table: &str,
    secret: &str,
    bucket: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new(binary);
    command
        .env("AWS_LAMBDA_RUNTIME_API", &api.address)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("CONNECTIONS_TABLE", table)
        .env("CLIENT_CREDENTIALS_SECRET", secret)
        .env("RESCUE_BUCKET", bucket)
        .env("RDSTATION_API_URL", rd.base_url.as_str())
        .env(
            "RDSTATION_MARKETING_AUTHORIZE_URL",
            rd.url("/auth/dialog").as_str(),
        )
        .env(
            "RDSTATION_CRM_AUTHORIZE_URL",
            rd.url("/oauth/authorize").as_str(),
        );
    command
}

/// What a function answered to one invocation.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Posted to `/response`.
    Response(serde_json::Value),
    /// Posted to `/error`.
    Error(serde_json::Value),
}

#[derive(Default)]
struct Inner {
    /// The function's timeout: each invocation's deadline is this after it starts.
    timeout_ms: std::sync::atomic::AtomicU64,
    events: Mutex<VecDeque<(String, String)>>,
    arrived: Notify,
    outcomes: Mutex<Vec<(String, Outcome)>>,
}

/// The emulator; cheap to clone.
#[derive(Clone)]
pub struct RuntimeApi {
    inner: Arc<Inner>,
    done: Arc<watch::Sender<usize>>,
    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
}

impl RuntimeApi {
    /// Starts on a free loopback port, for a function whose timeout is 30 s.
    pub async fn start() -> Self {
        Self::with_timeout(Duration::from_secs(30)).await
    }

    /// Starts on a free loopback port, for a function whose timeout is `timeout`
    /// (each invocation's deadline).
    pub async fn with_timeout(timeout: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback");
        let address = listener.local_addr().expect("address").to_string();
        let api = Self {
            inner: Arc::default(),
            done: Arc::new(watch::channel(0).0),
            address,
        };
        api.inner.timeout_ms.store(
            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(fail))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        api
    }

    /// Queues `event` and waits (up to `timeout`) for the function's answer to
    /// it (several invocations may be under way at once, as with more than one
    /// process polling this emulator).
    pub async fn invoke(&self, event: &serde_json::Value, timeout: Duration) -> Outcome {
        let id = format!("req-{:08x}", rand::random::<u32>());
        // Subscribed before the event is queued: no answer can be missed.
        let mut done = self.done.subscribe();
        self.inner
            .events
            .lock()
            .expect("lock")
            .push_back((id.clone(), event.to_string()));
        self.inner.arrived.notify_one();
        let answer = async {
            loop {
                let found = self
                    .inner
                    .outcomes
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|(r, _)| *r == id)
                    .map(|(_, o)| o.clone());
                if let Some(outcome) = found {
                    return outcome;
                }
                done.changed().await.expect("emulator alive");
            }
        };
        tokio::time::timeout(timeout, answer)
            .await
            .expect("the function answered in time")
    }

    fn record(&self, id: String, outcome: Outcome) {
        self.inner
            .outcomes
            .lock()
            .expect("lock")
            .push((id, outcome));
        self.done.send_modify(|n| *n += 1);
    }
}

async fn next(State(api): State<RuntimeApi>) -> Response {
    loop {
        let notified = api.inner.arrived.notified();
        let queued = api.inner.events.lock().expect("lock").pop_front();
        if let Some((id, body)) = queued {
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| {
                    d.as_millis()
                        + u128::from(
                            api.inner
                                .timeout_ms
                                .load(std::sync::atomic::Ordering::Relaxed),
                        )
                })
                .unwrap_or_default();
            let mut headers = HeaderMap::new();
            let mut put = |name: &'static str, value: String| {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(name, v);
                }
            };
            put("lambda-runtime-aws-request-id", id);
            put("lambda-runtime-deadline-ms", deadline.to_string());
            put(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:under-test".to_owned(),
            );
            put(
                "lambda-runtime-trace-id",
                "Root=1-6740c4e1-0a1b2c3d4e5f60718293a4b5".to_owned(),
            );
            put("content-type", "application/json".to_owned());
            return (StatusCode::OK, headers, body).into_response();
        }
        notified.await;
    }
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| String::from_utf8_lossy(body).into())
}

async fn respond(State(api): State<RuntimeApi>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    api.record(id, Outcome::Response(json(&body)));
    StatusCode::ACCEPTED
}

async fn fail(State(api): State<RuntimeApi>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    api.record(id, Outcome::Error(json(&body)));
    StatusCode::ACCEPTED
}

async fn init_error(State(api): State<RuntimeApi>, body: Bytes) -> StatusCode {
    // No invocation waits on it; the test that started the function times out
    // and this line in its output says why.
    eprintln!(
        "the function failed to start: {}",
        String::from_utf8_lossy(&body)
    );
    api.record("init".to_owned(), Outcome::Error(json(&body)));
    StatusCode::ACCEPTED
}
