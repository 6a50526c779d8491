//! Each function's deployable artifact, under the Lambda Runtime API emulator,
//! against a moto that enforces IAM (`iam_moto`): the function runs as a user
//! allowed exactly the actions its role in the SAM-transformed template allows,
//! through its happy path and its fault paths. Anything the code calls that the
//! role does not grant is refused by moto with `AccessDenied` naming the action,
//! and the run fails with the function's log lines that say so.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use connector::clock::{Clock, SystemClock, Timestamp};
use connector::domain::{
    Connection, ConnectionId, ConnectionStatus, Product, TenantId, TokenPair, Webhook,
    WebhookScope, Webhooks,
};
use connector::outbound::dynamodb::DynamoStore;
use connector::outbound::legacy_rescue_queue::SqsLegacyRescueQueue;
use connector::outbound::rescue_store::S3RescueStore;
use connector::ports::{ConnectionStore, RescueStore, RescuedPair, WebhookRegistry};
use connector::secret::{AccessToken, ExposeSecret, RefreshToken};
use integration_tests::apigw::{self, Answer, EventRequest};
use integration_tests::app::Browser;
use integration_tests::delivery_queues::lambda_event;
use integration_tests::iam_moto::{Deployed, IamMoto};
use integration_tests::runtime_api::{Outcome, RuntimeApi, artifact, deployed_command};
use integration_tests::sam_template::{role_actions, transformed};
use integration_tests::webhook_receiver::Receiver;
use rd_sandbox::{RunningSandbox, Sandbox, SandboxConfig, SandboxProduct};
use serde_json::{Value, json};

const PUBLIC_BASE_URL: &str = "https://connect.example.com";

/// One function running as its role on an IAM-enforcing moto.
struct Run {
    moto: IamMoto,
    deployed: Deployed,
    sandbox: RunningSandbox,
    api: RuntimeApi,
    process: Child,
    log: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        integration_tests::logs::record_secrets_for_suite_scan(
            &self.sandbox.sandbox.issued_secrets(),
        );
    }
}

impl Run {
    /// Starts `function` (its Lambda timeout `timeout`) as a user allowed what
    /// `role` allows.
    async fn start(function: &str, role: &str, timeout: Duration) -> Self {
        Self::start_with(function, role, timeout, &[]).await
    }

    /// [`Run::start`], with `extra_env` set on the function too.
    async fn start_with(
        function: &str,
        role: &str,
        timeout: Duration,
        extra_env: &[(&str, String)],
    ) -> Self {
        let config = SandboxConfig::default();
        let sandbox = Sandbox::new(config.clone())
            .spawn_local()
            .await
            .expect("sandbox");
        let moto = IamMoto::start().await;
        let deployed = moto
            .deploy(&integration_tests::app::credentials_json(&config))
            .await;
        let actions = role_actions(&transformed(), role);
        let key = moto.user_allowed(function, &actions).await;
        moto.enforce().await;
        let api = RuntimeApi::with_timeout(timeout).await;
        let dir = std::env::var_os("TEST_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let log =
            dir.join(integration_tests::moto::unique_name(&format!("iam-{function}")) + ".log");
        let out = std::fs::File::create(&log).expect("log file");
        let mut command = deployed_command(
            &artifact(function),
            function,
            &api,
            &sandbox,
            &deployed.table,
            &deployed.secret,
            &deployed.bucket,
        );
        if function == "webhook-sender" {
            command.env("WEBHOOK_QUEUE_URL", &deployed.webhook_queue);
        }
        command.envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())));
        if function == "token-refresher" {
            // As the template sets them: the refresher alone reads the old
            // queue, and hands its shards to its workers on the work queue.
            command
                .env("LEGACY_RESCUE_QUEUE_URL", &deployed.legacy_queue)
                .env("REFRESH_WORK_QUEUE_URL", &deployed.work_queue);
        }
        let process = command
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", &key.id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_REGION", "us-east-1")
            .env("EVENT_BUS_NAME", &deployed.bus)
            .env("PUBLIC_BASE_URL", PUBLIC_BASE_URL)
            // An operator, and the tenants read on every request: each
            // function's reads of them run under its role too.
            .env("OPERATOR_ARNS", OPERATOR)
            .env("TENANT_CACHE_SECONDS", "0")
            // A cap no run here reaches: each refresh counts its token call on
            // the shared item under the function's role.
            .env("TOKEN_CALLS_PER_SECOND", "1000")
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log file"))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("the function starts");
        Self {
            moto,
            deployed,
            sandbox,
            api,
            process,
            log,
        }
    }

    /// The store, as the admin sees it.
    fn store(&self) -> DynamoStore {
        DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.moto.sdk(&self.moto.admin)),
            &self.deployed.table,
        )
    }

    /// The rescue store, as the admin sees it.
    fn rescues(&self) -> S3RescueStore {
        S3RescueStore::new(
            connector::assembly::s3_client(&self.moto.sdk(&self.moto.admin)),
            &self.deployed.bucket,
        )
    }

    /// The rescue queue of earlier versions, as the admin sees it.
    fn legacy_queue(&self) -> SqsLegacyRescueQueue {
        SqsLegacyRescueQueue::new(
            aws_sdk_sqs::Client::new(&self.moto.sdk(&self.moto.admin)),
            &self.deployed.legacy_queue,
        )
    }

    async fn invoke(&self, event: Value) -> Value {
        match self.api.invoke(&event, Duration::from_secs(60)).await {
            Outcome::Response(body) => body,
            Outcome::Error(error) => panic!("the function failed: {error}"),
        }
    }

    /// An API Gateway request, answered.
    async fn send(&self, request: &EventRequest<'_>) -> Answer {
        let answer = self.invoke(request.event()).await;
        let answer =
            apigw::answer_of(serde_json::from_value(answer).expect("an API Gateway answer"));
        apigw::check_described(request, &answer);
        answer
    }

    /// A connection stored as the connect flow would store it, with a pair the
    /// sandbox issued; its access token expires `expires_in` from now.
    async fn seed(&self, id: &str, product: Product, expires_in: i64) -> Connection {
        let sandbox_product = match product {
            Product::Marketing => SandboxProduct::Marketing,
            Product::Crm => SandboxProduct::Crm,
        };
        let (access, refresh, _) = self.sandbox.sandbox.issue_pair(sandbox_product);
        let now = SystemClock.now();
        // Connected ten minutes ago: a 401 to its token is not to a pair just issued.
        let connection = Connection::connected(
            ConnectionId::in_default_tenant(id).expect("valid"),
            product,
            TokenPair {
                access_token: AccessToken::new(access),
                refresh_token: RefreshToken::new(refresh),
                access_expires_at: Timestamp(now.0 + expires_in),
            },
            Timestamp(now.0 - 600),
        );
        self.store().create(&connection).await.expect("seeded")
    }

    /// A CRM connection marked `possibly_lost` (`commit_failed`), as seeded
    /// before the mark: the pair a rescued one would replace.
    async fn seed_possibly_lost(&self, id: &str) -> Connection {
        let seeded = self.seed(id, Product::Crm, 7_200).await;
        let marked = Connection {
            status: ConnectionStatus::PossiblyLost,
            status_reason: Some("commit_failed".to_owned()),
            ..seeded.clone()
        };
        self.store().update(&marked).await.expect("marked");
        seeded
    }

    /// Fails naming every refusal the function met.
    fn assert_nothing_refused(&self) {
        let log = std::fs::read_to_string(&self.log).expect("the function's log");
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("AccessDenied")
                    || l.contains("not authorized to perform")
                    || l.contains("InvalidClientTokenId")
                    || l.contains("SignatureDoesNotMatch")
            })
            .collect();
        assert!(
            refused.is_empty(),
            "the role refused what the code calls:\n{}",
            refused.join("\n")
        );
    }
}

/// A pair the sandbox issued (`access`, `refresh`), rescued for connection `id`
/// in exchange for the pair `spent` holds.
fn rescued_pair(id: &str, spent: &Connection, access: String, refresh: String) -> RescuedPair {
    RescuedPair {
        connection_id: ConnectionId::in_default_tenant(id).expect("valid"),
        lease_id: "lease".to_owned(),
        tokens: TokenPair {
            access_token: AccessToken::new(access),
            refresh_token: RefreshToken::new(refresh),
            access_expires_at: Timestamp(SystemClock.now().0 + 7_200),
        },
        spent_refresh_token: spent.tokens.refresh_token.fingerprint(),
        replaced_access_token: spent.tokens.access_token.fingerprint(),
        rescued_at: SystemClock.now(),
    }
}

fn iam(method: &'static str, path: &str) -> EventRequest<'static> {
    EventRequest::new(
        apigw::IAM_AUTHORIZED,
        method,
        Box::leak(path.to_owned().into_boxed_str()),
    )
}

/// The operator principal the functions are given.
const OPERATOR: &str = "arn:aws:iam::123456789012:role/ops";
/// The signed fixture's principal.
const CALLER: &str = "arn:aws:sts::123456789012:assumed-role/integration-worker/session";

#[tokio::test]
async fn the_api_function_runs_on_exactly_its_role() {
    // Loopback endpoints allowed, as in `make run`: no name resolves here.
    let run = Run::start_with(
        "api-proxy",
        "ApiProxyFunctionRole",
        Duration::from_secs(29),
        &[("WEBHOOK_ALLOW_LOOPBACK", "true".to_owned())],
    )
    .await;
    run.seed("crm-live", Product::Crm, 7_200).await;
    run.seed("mkt-gone", Product::Marketing, 86_400).await;
    let revoked = run.seed("crm-revoked", Product::Crm, -10).await;
    assert!(
        run.sandbox
            .sandbox
            .revoke(revoked.tokens.refresh_token.expose_secret())
    );

    // A proxied call (token read, budget written), then RD's 401 (a refresh).
    let echo = "/proxy/crm-live/crm/v2/echo";
    assert_eq!(run.send(&iam("GET", echo)).await.status, 200);
    run.sandbox.sandbox.advance_clock(7_300);
    let tokens = run.sandbox.sandbox.stats().token_calls;
    let answer = run.send(&iam("GET", echo)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(run.sandbox.sandbox.stats().token_calls, tokens + 1);
    // A dead grant: needs_reauth, and its event.
    let answer = run
        .send(&iam("GET", "/proxy/crm-revoked/crm/v2/echo"))
        .await;
    assert_eq!(answer.status, 409, "{}", answer.text());
    // The connections API: pages, the attention index, a setting, a forced
    // refresh, a delete with RD's revoke.
    let mut seen = 0;
    let mut query = "limit=1".to_owned();
    loop {
        let mut request = iam("GET", "/connections");
        request.query = Box::leak(query.clone().into_boxed_str());
        let page = run.send(&request).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let json = page.json();
        seen += json["connections"].as_array().expect("a list").len();
        match json["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, 3);
    let mut attention = iam("GET", "/connections");
    attention.query = "status=needs_reauth";
    assert_eq!(
        run.send(&attention).await.json()["connections"][0]["connection_id"],
        "crm-revoked"
    );
    let mut patch = iam("PATCH", "/connections/crm-live");
    patch.headers.push(("content-type", "application/json"));
    patch.body = Some(
        json!({"rate_limit_per_minute": 60})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(run.send(&patch).await.status, 200);
    assert_eq!(
        run.send(&iam("POST", "/connections/crm-live/refresh"))
            .await
            .status,
        200
    );
    let deleted = run.send(&iam("DELETE", "/connections/mkt-gone")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["revoked_at_rd"], "revoked");

    // A possibly lost connection whose pair waits: a forced refresh looks it up,
    // restores it and deletes it.
    let lost = run.seed_possibly_lost("crm-lost").await;
    let (access, refresh, _) = run.sandbox.sandbox.issue_pair(SandboxProduct::Crm);
    run.rescues()
        .put_rescue(&rescued_pair("crm-lost", &lost, access, refresh))
        .await
        .expect("saved");
    let restored = run
        .send(&iam("POST", "/connections/crm-lost/refresh"))
        .await;
    assert_eq!(restored.status, 200, "{}", restored.text());
    assert_eq!(restored.json()["outcome"], "restored_from_rescue");
    assert!(
        run.rescues()
            .list_rescues(None)
            .await
            .expect("listable")
            .keys
            .is_empty()
    );

    // A commit that fails (the connection deleted while RD answers): the pair
    // goes to the rescue store.
    run.sandbox
        .sandbox
        .set_token_latency(Duration::from_millis(500));
    let calls = run.sandbox.sandbox.stats().token_calls;
    let refresh = iam("POST", "/connections/crm-live/refresh").event();
    let api = run.api.clone();
    let forced = tokio::spawn(async move { api.invoke(&refresh, Duration::from_secs(60)).await });
    run.sandbox.sandbox.wait_for_token_calls(calls + 1).await;
    run.store()
        .delete(&ConnectionId::in_default_tenant("crm-live").expect("valid"))
        .await
        .expect("deleted");
    let _ = forced.await.expect("answered");
    let waiting = run.rescues().list_rescues(None).await.expect("listable");
    assert_eq!(waiting.keys.len(), 1, "the rotated pair was put aside");

    // An import (a conditional put, then its refresh), and one of a dead
    // token (its conditional delete).
    let (_, held, _) = run.sandbox.sandbox.issue_pair(SandboxProduct::Crm);
    for (name, token, status) in [
        ("crm-imported", held.as_str(), 201),
        ("crm-dead", "never-issued", 422),
    ] {
        let mut import = iam("POST", "/connections/import");
        import.body = Some(
            json!({"connection_id": name, "product": "crm", "refresh_token": token})
                .to_string()
                .into_bytes(),
        );
        let answer = run.send(&import).await;
        assert_eq!(answer.status, status, "{}", answer.text());
    }

    // Tenants, written by an operator: today's caller kept in the default
    // tenant, a second tenant beside it.
    for (tenant, principal) in [
        ("default", CALLER),
        ("acme", "arn:aws:iam::123456789012:user/acme"),
    ] {
        let mut put = iam(
            "PUT",
            Box::leak(format!("/tenants/{tenant}").into_boxed_str()),
        )
        .by(OPERATOR);
        put.body = Some(json!({"principals": [principal]}).to_string().into_bytes());
        let answer = run.send(&put).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let listed = run.send(&iam("GET", "/connections")).await;
    assert_eq!(listed.status, 200, "{}", listed.text());

    // A webhook endpoint registered, listed, its secret rotated, removed.
    let mut register = iam("POST", "/webhooks");
    register.body = Some(br#"{"url": "https://127.0.0.1:9/hook"}"#.to_vec());
    let registered = run.send(&register).await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    let id = registered.json()["webhook_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert_eq!(run.send(&iam("GET", "/webhooks")).await.status, 200);
    let rotate = format!("/webhooks/{id}/rotate-secret");
    let rotated = run.send(&iam("POST", &rotate)).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let remove = format!("/webhooks/{id}");
    let removed = run.send(&iam("DELETE", &remove)).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    run.assert_nothing_refused();
}

#[tokio::test]
async fn the_refresher_runs_on_exactly_its_role() {
    let run = Run::start(
        "token-refresher",
        "TokenRefresherFunctionRole",
        Duration::from_secs(300),
    )
    .await;
    // Due: its access token expires within the refresh margin.
    run.seed("due", Product::Crm, 60).await;
    // Possibly lost, with its rotated pair waiting: restored.
    let lost = run.seed_possibly_lost("lost").await;
    let (access, refresh, _) = run.sandbox.sandbox.issue_pair(SandboxProduct::Crm);
    let pair =
        |id: &str, spent: &Connection| rescued_pair(id, spent, access.clone(), refresh.clone());
    // Its pair waits on the queue of earlier versions: moved, then restored.
    run.legacy_queue()
        .send_as_earlier_versions_did(&pair("lost", &lost))
        .await
        .expect("queued");
    // A pair whose connection cannot be read (a corrupt item): left in the store.
    aws_sdk_dynamodb::Client::new(&run.moto.sdk(&run.moto.admin))
        .put_item()
        .table_name(&run.deployed.table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("CONN#corrupt".to_owned()),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("CONN".to_owned()),
        )
        .item(
            "kind",
            aws_sdk_dynamodb::types::AttributeValue::S("connection".to_owned()),
        )
        .send()
        .await
        .expect("put");
    run.rescues()
        .put_rescue(&pair("corrupt", &lost))
        .await
        .expect("saved");

    let event: Value =
        serde_json::from_str(include_str!("../fixtures/eventbridge/scheduled-event.json"))
            .expect("event");
    let summary = run.invoke(event).await;
    assert_eq!(summary["moved_from_legacy_queue"], 1, "{summary}");
    assert_eq!(summary["restored_from_rescue"], 1, "{summary}");
    assert_eq!(summary["shards_handed_out"], 16, "{summary}");
    // Lambda's poller (not the role) receives the shards; each worker
    // invocation reads its shard and refreshes under the role.
    let sqs = aws_sdk_sqs::Client::new(&run.moto.sdk(&run.moto.admin));
    let mut received = std::collections::HashMap::new();
    while received.len() < 16 {
        let output = sqs
            .receive_message()
            .queue_url(&run.deployed.work_queue)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("received");
        for message in output.messages() {
            received.insert(
                message.message_id().expect("id").to_owned(),
                message.body().expect("body").to_owned(),
            );
        }
    }
    let mut refreshed = 0;
    for (id, body) in &received {
        let worked = run
            .invoke(integration_tests::work_queue::sqs_event(id, body))
            .await;
        assert_eq!(worked["shard_errors"], 0, "{worked}");
        assert_eq!(worked["shard_leased_elsewhere"], 0, "{worked}");
        refreshed += worked["refreshed"].as_u64().expect("refreshed");
    }
    assert_eq!(refreshed, 1);
    let restored = run
        .store()
        .get(&ConnectionId::in_default_tenant("lost").expect("valid"))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(restored.status, ConnectionStatus::Active);
    let log = std::fs::read_to_string(&run.log).expect("log");
    assert!(
        log.contains("could not restore a rescued pair"),
        "the corrupt connection's pair met its fault path"
    );
    run.assert_nothing_refused();
}

#[tokio::test]
async fn the_callback_function_runs_on_exactly_its_role() {
    let run = Run::start(
        "oauth-callback",
        "OAuthCallbackFunctionRole",
        Duration::from_secs(29),
    )
    .await;
    let mut open = iam("POST", "/connect/sessions");
    open.body = Some(
        json!({"connection_id": "via-consent", "product": "crm"})
            .to_string()
            .into_bytes(),
    );
    let opened = run.send(&open).await;
    assert_eq!(opened.status, 201, "{}", opened.text());
    let connect_url =
        url::Url::parse(opened.json()["connect_url"].as_str().expect("url")).expect("a URL");
    let browser = Browser::default();
    let mut link = EventRequest::new(apigw::BROWSER, "GET", connect_url.path());
    link.cookies = browser.cookies();
    let redirected = run.send(&link).await;
    assert_eq!(redirected.status, 302, "{}", redirected.text());
    browser.keep(&redirected);
    let consent = url::Url::parse(&redirected.location()).expect("consent URL");
    let query: std::collections::HashMap<String, String> =
        consent.query_pairs().into_owned().collect();
    let code = run
        .sandbox
        .sandbox
        .approve_consent(SandboxProduct::Crm, &query["redirect_uri"]);
    let back = format!(
        "code={code}&state={}",
        url::form_urlencoded::byte_serialize(query["state"].as_bytes()).collect::<String>()
    );
    let mut callback = EventRequest::new(apigw::BROWSER, "GET", "/oauth/callback");
    callback.cookies = browser.cookies();
    callback.query = &back;
    callback.headers.push(("accept", "application/json"));
    let answer = run.send(&callback).await;
    assert!(answer.status < 400, "{}: {}", answer.status, answer.text());
    let stored = run
        .store()
        .get(&ConnectionId::in_default_tenant("via-consent").expect("valid"))
        .await
        .expect("read")
        .expect("connected");
    assert_eq!(stored.status, ConnectionStatus::Active);
    run.assert_nothing_refused();
}

#[tokio::test]
async fn the_webhook_sender_runs_on_exactly_its_role() {
    let receiver = Receiver::start().await;
    let ca = std::env::temp_dir().join(integration_tests::moto::unique_name("webhook-ca") + ".pem");
    std::fs::write(&ca, &receiver.ca_pem).expect("CA written");
    let run = Run::start_with(
        "webhook-sender",
        "WebhookSenderFunctionRole",
        Duration::from_secs(30),
        &[
            ("WEBHOOK_ALLOW_LOOPBACK", "true".to_owned()),
            ("WEBHOOK_EXTRA_CA_FILE", ca.display().to_string()),
            ("WEBHOOK_RETRY_BASE_SECONDS", "0".to_owned()),
        ],
    )
    .await;
    // An endpoint of the default tenant, registered as the API would.
    let endpoint = Webhook::new(
        url::Url::parse(&format!("{}/hook", receiver.base)).expect("url"),
        SystemClock.now(),
    );
    let scope = WebhookScope::Tenant(TenantId::default_tenant());
    run.store()
        .replace_webhooks(
            &scope,
            &Webhooks {
                version: 0,
                endpoints: vec![endpoint.clone()],
            },
        )
        .await
        .expect("registered")
        .expect("first write");
    let sqs = aws_sdk_sqs::Client::new(&run.moto.sdk(&run.moto.admin));
    let queue = run.deployed.webhook_queue.clone();
    let queue_arn = "arn:aws:sqs:us-east-1:123456789012:webhooks";
    let receive = || {
        let (sqs, queue) = (sqs.clone(), queue.clone());
        async move {
            loop {
                let messages = sqs
                    .receive_message()
                    .queue_url(&queue)
                    .wait_time_seconds(1)
                    .message_system_attribute_names(
                        aws_sdk_sqs::types::MessageSystemAttributeName::All,
                    )
                    .send()
                    .await
                    .expect("moto receives")
                    .messages()
                    .to_vec();
                if !messages.is_empty() {
                    return messages;
                }
            }
        }
    };

    // An event as EventBridge puts it in the queue: fanned out (SendMessage).
    let envelope = json!({
        "version": "0", "id": "3ade5bd0-2bc2-4cfd-b94d-74192f7bad4d",
        "detail-type": "ConnectionNeedsReauth", "source": "rdstation.tokens",
        "account": "123456789012", "time": "2026-12-04T12:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {"connection_id": "shop", "product": "crm", "reason": "revoked"},
    });
    sqs.send_message()
        .queue_url(&queue)
        .message_body(envelope.to_string())
        .send()
        .await
        .expect("queued");
    let answer = run.invoke(lambda_event(&receive().await, queue_arn)).await;
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");

    // The delivery it queued: posted (the endpoint read with GetItem).
    let delivery = receive().await;
    let answer = run.invoke(lambda_event(&delivery, queue_arn)).await;
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert!(integration_tests::webhook_receiver::signed_by(
        &received[0],
        endpoint.secret.expose_secret()
    ));

    // A receiver that fails: the delivery is put off (ChangeMessageVisibility)
    // and reported failed.
    receiver.answer(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let answer = run.invoke(lambda_event(&delivery, queue_arn)).await;
    assert_eq!(
        answer["batchItemFailures"][0]["itemIdentifier"],
        delivery[0].message_id().expect("an id"),
        "{answer}"
    );
    let _ = std::fs::remove_file(&ca);
    run.assert_nothing_refused();
}
