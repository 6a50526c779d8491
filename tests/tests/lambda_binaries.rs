//! The three functions' real binaries, run as Lambda runs them: under a Runtime
//! API emulator on loopback, with real API Gateway v2 and EventBridge events,
//! against moto and the RD Station sandbox.

use std::time::Duration;

use integration_tests::apigw::{self, EventRequest};
use integration_tests::runtime_api::{Outcome, RuntimeApi, artifact, function_command};
use rd_sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use std::process::Child;

const PUBLIC_BASE_URL: &str = "https://connect.example.com";

struct Function {
    api: RuntimeApi,
    process: Child,
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Starts `name`'s binary with a deployed function's environment on moto.
async fn start(name: &str) -> (Function, rd_sandbox::RunningSandbox) {
    start_with(name, &[]).await
}

/// The same, with `settings` added to the environment.
async fn start_with(
    name: &str,
    settings: &[(&str, &str)],
) -> (Function, rd_sandbox::RunningSandbox) {
    let sandbox = Sandbox::new(SandboxConfig::default())
        .spawn_local()
        .await
        .expect("sandbox");
    let api = RuntimeApi::start().await;
    let mut command = function_command(&artifact(name), name, &api, &sandbox).await;
    command
        .env("PUBLIC_BASE_URL", PUBLIC_BASE_URL)
        .env("RUST_LOG", "info");
    for (variable, value) in settings {
        command.env(variable, value);
    }
    let process = command.spawn().expect("the function starts");
    (Function { api, process }, sandbox)
}

async fn invoke(function: &Function, event: Value) -> Value {
    match function.api.invoke(&event, Duration::from_secs(30)).await {
        Outcome::Response(body) => body,
        Outcome::Error(error) => panic!("the function reported an error: {error}"),
    }
}

fn body_of(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().expect("a body")).expect("JSON body")
}

#[tokio::test]
async fn the_oauth_callback_binary_opens_a_session_for_an_iam_caller() {
    let (function, _sandbox) = start("oauth-callback").await;
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
    request.body = Some(
        json!({"connection_id": "from-binary", "product": "crm"})
            .to_string()
            .into_bytes(),
    );
    let response = invoke(&function, request.event()).await;
    assert_eq!(response["statusCode"], 201, "{response}");
    let body = body_of(&response);
    assert!(
        body["connect_url"]
            .as_str()
            .expect("connect_url")
            .starts_with(&format!("{PUBLIC_BASE_URL}/connect/"))
    );
    // Tags in the body: taken, or refused with a clear 400.
    let mut tagged = request.clone();
    tagged.body = Some(
        json!({"connection_id": "tagged", "product": "crm", "tags": {"customer": "42"}})
            .to_string()
            .into_bytes(),
    );
    let response = invoke(&function, tagged.event()).await;
    assert_eq!(response["statusCode"], 201, "{response}");
    tagged.body = Some(
        json!({"connection_id": "tagged", "product": "crm", "tags": {"a b": "x"}})
            .to_string()
            .into_bytes(),
    );
    let response = invoke(&function, tagged.event()).await;
    assert_eq!(response["statusCode"], 400, "{response}");
    assert_eq!(body_of(&response)["code"], "invalid_tags");
    // The one-call reconnect of a connection that does not exist: the real
    // artifact routes it to the handler, which answers the API's 404.
    let reconnect = EventRequest::new(
        apigw::IAM_AUTHORIZED,
        "POST",
        "/connections/never-made/reconnect",
    );
    let response = invoke(&function, reconnect.event()).await;
    assert_eq!(response["statusCode"], 404, "{response}");
    assert_eq!(body_of(&response)["code"], "connection_not_found");
    // The same function, without an IAM identity.
    let mut anonymous = request.clone();
    anonymous.fixture = apigw::BROWSER;
    anonymous.headers.push(("content-type", "application/json"));
    let response = invoke(&function, anonymous.event()).await;
    assert_eq!(response["statusCode"], 403, "{response}");
}

#[tokio::test]
async fn the_api_proxy_binary_answers_the_connections_api() {
    let (function, sandbox) = start("api-proxy").await;
    let request = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/connections/nobody");
    let response = invoke(&function, request.event()).await;
    assert_eq!(response["statusCode"], 404, "{response}");
    assert_eq!(body_of(&response)["code"], "connection_not_found");
    let request = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/proxy/nobody/auth/token");
    let response = invoke(&function, request.event()).await;
    assert_eq!(response["statusCode"], 403, "{response}");
    assert_eq!(sandbox.sandbox.stats().token_calls, 0);
}

/// Tenants as the deployed api-proxy reads them: an operator (OPERATOR_ARNS)
/// adds a tenant with a PUT body; the caller mapped to it acts in it, names no
/// other in the tenant header, and a principal mapped to none is refused.
#[tokio::test]
async fn the_api_proxy_binary_acts_in_the_callers_tenant() {
    const OPERATOR: &str = "arn:aws:iam::123456789012:role/ops";
    const ACME: &str = "arn:aws:sts::123456789012:assumed-role/acme-worker/s1";
    let (function, _sandbox) = start_with(
        "api-proxy",
        &[("OPERATOR_ARNS", OPERATOR), ("TENANT_CACHE_SECONDS", "0")],
    )
    .await;
    let answer = |response: Value| {
        let status = response["statusCode"].as_i64().expect("status");
        (status, body_of(&response))
    };
    let mut put = EventRequest::new(apigw::IAM_AUTHORIZED, "PUT", "/tenants/acme").by(OPERATOR);
    put.body = Some(json!({"principals": [ACME]}).to_string().into_bytes());
    let (status, body) = answer(invoke(&function, put.event()).await);
    assert_eq!(
        (status, &body["principals"]),
        (200, &json!([ACME])),
        "{body}"
    );
    // The same write from the tenant's own caller is refused.
    let (status, body) = answer(invoke(&function, put.clone().by(ACME).event()).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("operator_only"))
    );

    let list = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/connections");
    let (status, body) = answer(invoke(&function, list.clone().by(ACME).event()).await);
    assert_eq!((status, &body["connections"]), (200, &json!([])), "{body}");
    let mut elsewhere = list.clone().by(ACME);
    elsewhere.headers.push(("x-rdconn-tenant", "beta"));
    let (status, body) = answer(invoke(&function, elsewhere.event()).await);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("operator_only"))
    );
    // The fixture's principal is mapped to no tenant now that one exists.
    let (status, body) = answer(invoke(&function, list.event()).await);
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let tenants = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/tenants").by(OPERATOR);
    let (status, body) = answer(invoke(&function, tenants.event()).await);
    assert_eq!(status, 200);
    assert_eq!(
        body["tenants"],
        json!([{"tenant": "acme", "principals": [ACME]}])
    );
}

#[tokio::test]
async fn the_token_refresher_binary_runs_on_a_scheduled_event() {
    let (function, _sandbox) = start("token-refresher").await;
    let event: Value =
        serde_json::from_str(include_str!("../fixtures/eventbridge/scheduled-event.json"))
            .expect("event");
    let summary = invoke(&function, event).await;
    assert_eq!(summary["due"], 0, "{summary}");
    assert_eq!(summary["shards"], 16);
    assert_eq!(summary["shard_errors"], 0);
}

/// What the api-proxy binary answers to `GET {path}?{query}` from an IAM caller.
async fn proxy_answer(function: &Function, path: &str, query: &str) -> (i64, String) {
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", path);
    request.query = query;
    let response = match function
        .api
        .invoke(&request.event(), Duration::from_secs(30))
        .await
    {
        Outcome::Response(body) => body,
        Outcome::Error(error) => panic!("{path}?{query}: the function failed: {error}"),
    };
    let status = response["statusCode"].as_i64().expect("a status");
    let code = body_of(&response)["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

/// The path is checked as the caller sent it (API Gateway's `rawPath`), before
/// anything resolves it: `lambda_http`'s conversion turned `A/%2e%2e/B` into `B`
/// and backslashes into slashes, and panicked on a `"` in the query.
/// (Checked against the previous `lambda_http::run` adapter: the dot-segment and
/// backslash cases reached connection `B`'s lookup (404), the quoted query failed
/// the invocation, and RD's `email:` route was refused as `invalid_path`.)
#[tokio::test]
async fn the_api_proxy_binary_checks_the_path_the_caller_sent() {
    let (function, sandbox) = start("api-proxy").await;
    for path in [
        "/proxy/A/%2e%2e/B/crm/v2/contacts",
        "/proxy/A/%2E%2E/B/crm/v2/contacts",
        "/proxy/A/../B/crm/v2/contacts",
        "/proxy/A/./crm/v2/contacts",
        "/proxy/A/crm\\v2\\contacts",
        "/proxy/A/crm%5Cv2%5Ccontacts",
    ] {
        assert_eq!(
            proxy_answer(&function, path, "").await,
            (400, "invalid_path".to_owned()),
            "{path}"
        );
    }
    for path in ["/proxy/A/%61uth/token", "/proxy/A/crm/OAuth/token"] {
        assert_eq!(
            proxy_answer(&function, path, "").await,
            (403, "oauth_endpoint_refused".to_owned()),
            "{path}"
        );
    }
    // Paths and queries RD's routes use pass the check and reach the connection's
    // lookup (there is no connection `A`).
    for (path, query) in [
        ("/proxy/A/platform/contacts/email:someone@example.com", ""),
        ("/proxy/A/platform/contacts/email:someone%40example.com", ""),
        ("/proxy/A/platform/contacts/email:some+one@example.com", ""),
        ("/proxy/A/crm/v2/contacts", "q=\"ana\"&f=<b>"),
        ("/proxy/A/crm/v2/contacts", "page[number]=2&q=ana%20lima"),
    ] {
        assert_eq!(
            proxy_answer(&function, path, query).await,
            (404, "connection_not_found".to_owned()),
            "{path}?{query}"
        );
    }
    assert_eq!(sandbox.sandbox.stats().token_calls, 0);
}

/// The api-proxy binary as the template configures it at `LogLevel: warn`
/// (Lambda's JSON format, its filter at INFO, `RUST_LOG=warn`): each proxied
/// request prints its metrics as one EMF line on stdout, with no `level` (Lambda
/// reads it as INFO, which its filter passes), and the process keeps its own INFO
/// lines to itself.
#[tokio::test]
async fn the_api_proxy_binary_prints_a_metric_line_per_request() {
    let sandbox = Sandbox::new(SandboxConfig::default())
        .spawn_local()
        .await
        .expect("sandbox");
    let api = RuntimeApi::start().await;
    let process = function_command(&artifact("api-proxy"), "api-proxy", &api, &sandbox)
        .await
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the function starts");
    let mut function = Function { api, process };
    let (status, code) = proxy_answer(&function, "/proxy/nobody/crm/v2/contacts", "").await;
    assert_eq!((status, code.as_str()), (404, "connection_not_found"));
    let mut stdout = function.process.stdout.take().expect("stdout");
    let _ = function.process.kill();
    let _ = function.process.wait();
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut printed).expect("stdout");
    let documents: Vec<Value> = printed
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|doc| doc.get("_aws").is_some())
        .collect();
    assert_eq!(documents.len(), 1, "one metric line per request: {printed}");
    let doc = &documents[0];
    let declared = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(declared["Namespace"], connector::metrics::PROXY_NAMESPACE);
    assert_eq!(declared["Dimensions"], json!([[]]));
    assert_eq!(doc["requests"], 1.0);
    assert_eq!(doc["failed"], 0.0, "a 404 to the caller is not our failure");
    assert!(doc["latency_ms"].is_number(), "{doc}");
    assert!(doc.get("level").is_none(), "{doc}");
    assert!(
        !printed.contains("proxied request not forwarded"),
        "RUST_LOG=warn keeps INFO lines out: {printed}"
    );
}
