//! A fault-injecting HTTP proxy between the service's DynamoDB client and moto: it
//! passes requests on, or — while a fault stretch is on, for a share of requests
//! drawn from a seeded generator — answers as DynamoDB does when it is unwell:
//! `ThrottlingException`, `ProvisionedThroughputExceededException`, a 500, a slow
//! answer, or moto's answer dropped after moto applied the write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What DynamoDB does wrong, one request at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AwsFault {
    /// 400 `ThrottlingException`, not applied.
    Throttling,
    /// 400 `ProvisionedThroughputExceededException`, not applied.
    ThroughputExceeded,
    /// 500, not applied.
    ServerError,
    /// Applied, answered after a delay.
    Slow,
    /// Applied by moto, then the answer is lost (a 500 in its place).
    AnswerDropped,
}

/// Every kind, for reports.
pub const ALL_FAULTS: [AwsFault; 5] = [
    AwsFault::Throttling,
    AwsFault::ThroughputExceeded,
    AwsFault::ServerError,
    AwsFault::Slow,
    AwsFault::AnswerDropped,
];

struct Plan {
    rng: StdRng,
    /// The fault of the current stretch and the share of requests it hits.
    stretch: Option<(AwsFault, f64)>,
}

/// Counts of what the proxy did.
#[derive(Default)]
pub struct AwsFaultCounts {
    /// Requests passed on untouched.
    pub passed: AtomicU64,
    counts: Mutex<std::collections::HashMap<AwsFault, u64>>,
    operations: Mutex<std::collections::HashMap<String, u64>>,
}

impl AwsFaultCounts {
    /// Requests that met `fault`.
    pub fn of(&self, fault: AwsFault) -> u64 {
        self.counts
            .lock()
            .expect("lock")
            .get(&fault)
            .copied()
            .unwrap_or(0)
    }

    /// Requests for the DynamoDB operation `name` (`Scan`, `Query`, …), faulted
    /// or not.
    pub fn operation(&self, name: &str) -> u64 {
        self.operations
            .lock()
            .expect("lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn saw(&self, headers: &HeaderMap) {
        // `X-Amz-Target: DynamoDB_20120810.Scan`
        if let Some(operation) = headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.rsplit('.').next())
        {
            *self
                .operations
                .lock()
                .expect("lock")
                .entry(operation.to_owned())
                .or_default() += 1;
        }
    }

    fn add(&self, fault: AwsFault) {
        *self.counts.lock().expect("lock").entry(fault).or_default() += 1;
    }
}

/// The proxy, on a loopback port.
#[derive(Clone)]
pub struct AwsFaultProxy {
    /// Its URL: give it to a client as the endpoint.
    pub endpoint: String,
    plan: Arc<Mutex<Plan>>,
    upstream: String,
    http: reqwest::Client,
    /// What it did.
    pub counts: Arc<AwsFaultCounts>,
    slow: Duration,
}

impl AwsFaultProxy {
    /// A proxy to `upstream` (moto's URL), drawing from `seed`; a slow answer waits `slow`.
    pub async fn start(upstream: &str, seed: u64, slow: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let proxy = Self {
            endpoint: format!("http://{}", listener.local_addr().expect("addr")),
            plan: Arc::new(Mutex::new(Plan {
                rng: StdRng::seed_from_u64(seed),
                stretch: None,
            })),
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            counts: Arc::default(),
            slow,
        };
        let app = Router::new().fallback(forward).with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        proxy
    }

    /// From now on, `share` (0-1) of requests meet `fault`; `None` heals.
    pub fn stretch(&self, stretch: Option<(AwsFault, f64)>) {
        self.plan.lock().expect("lock").stretch = stretch;
    }

    fn draw(&self) -> Option<AwsFault> {
        let mut plan = self.plan.lock().expect("lock");
        let (fault, share) = plan.stretch?;
        (plan.rng.random::<f64>() < share).then_some(fault)
    }

    async fn pass_on(
        &self,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.upstream))
            .body(body);
        for (name, value) in headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        match request.send().await {
            Ok(answer) => {
                let status = answer.status();
                let headers = answer.headers().clone();
                let body = answer.bytes().await.unwrap_or_default();
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status;
                for (name, value) in &headers {
                    if name != "content-length" && name != "transfer-encoding" {
                        response.headers_mut().insert(name, value.clone());
                    }
                }
                response
            }
            Err(_) => StatusCode::BAD_GATEWAY.into_response(),
        }
    }
}

fn dynamodb_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
        .headers_mut()
        .insert("x-amzn-errortype", kind.parse().expect("header"));
    response
}

async fn forward(
    State(proxy): State<AwsFaultProxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    proxy.counts.saw(&headers);
    let Some(fault) = proxy.draw() else {
        proxy.counts.passed.fetch_add(1, Ordering::Relaxed);
        return proxy.pass_on(method, &uri, &headers, body).await;
    };
    proxy.counts.add(fault);
    match fault {
        AwsFault::Throttling => dynamodb_error(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        ),
        AwsFault::ThroughputExceeded => dynamodb_error(
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        ),
        AwsFault::ServerError => dynamodb_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error",
        ),
        AwsFault::Slow => {
            tokio::time::sleep(proxy.slow).await;
            proxy.pass_on(method, &uri, &headers, body).await
        }
        AwsFault::AnswerDropped => {
            let _applied = proxy.pass_on(method, &uri, &headers, body).await;
            dynamodb_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "Internal server error",
            )
        }
    }
}
