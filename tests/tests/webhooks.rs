//! Webhooks as deployed: endpoints registered through API Gateway v2 events
//! into the API router, events published to an EventBridge bus on moto whose
//! rule feeds the delivery queue (SQS on moto), the sender invoked as Lambda's
//! SQS poller invokes it, and a real HTTPS receiver on loopback (a certificate
//! from the test's own CA, which the sender is told to trust) that verifies
//! every signature with a verifier written from the Standard Webhooks
//! specification.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use connector::assembly::{Assembly, Settings, TenancySettings};
use connector::clock::Clock;
use connector::domain::{ConnectionId, PrincipalPattern, Product, Tags};
use connector::inbound::http::api_proxy_router;
use connector::inbound::webhook_queue::WebhookSender;
use connector::outbound::delivery_queue::SqsDeliveryQueue;
use connector::outbound::events::EventBridgePublisher;
use connector::ports::{EventKind, EventPublisher, PendingDelivery, ServiceEvent};
use connector::services::webhooks::WebhookSettings;
use integration_tests::apigw::{self, Answer, EventRequest};
use integration_tests::delivery_queues::DeliveryQueues;
use integration_tests::refresh_app::RefreshApp;
use integration_tests::webhook_receiver::{Receiver, signed_by};
use serde_json::{Value, json};

const OPERATOR: &str = "arn:aws:iam::123456789012:role/ops";

/// The service around one receiver: the API (the fixture's caller acts in the
/// default tenant; `OPERATOR` is an operator), the delivery queues, and a
/// sender.
struct Deployment {
    app: RefreshApp,
    receiver: Receiver,
    queues: DeliveryQueues,
    assembly: Assembly,
    api: Router,
}

impl Deployment {
    async fn start(max_receives: u32) -> Self {
        let app = RefreshApp::start().await;
        let receiver = Receiver::start().await;
        let queues = DeliveryQueues::create(max_receives).await;
        let settings = Settings {
            tenancy: TenancySettings {
                operators: vec![PrincipalPattern::parse(OPERATOR).expect("valid")],
                cache_seconds: 0,
            },
            ..app.assembly.settings().clone()
        };
        let assembly = Assembly::new(app.assembly.parts().clone(), settings)
            .expect("client")
            .with_webhook_settings(webhook_settings(&receiver, true));
        let api = api_proxy_router(assembly.api_state().expect("state"));
        Self {
            app,
            receiver,
            queues,
            assembly,
            api,
        }
    }

    /// A sender as the function builds it, allowing loopback or not.
    async fn sender(&self, allow_loopback: bool) -> WebhookSender {
        let queue =
            SqsDeliveryQueue::new(integration_tests::moto::sqs().await, &self.queues.queue_url);
        self.assembly
            .clone()
            .with_webhook_settings(webhook_settings(&self.receiver, allow_loopback))
            .webhook_sender(Arc::new(queue))
            .expect("sender")
    }

    async fn call(
        &self,
        caller: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, method, path);
        request.query = query;
        if let Some(caller) = caller {
            request = request.by(caller);
        }
        request.body = body.map(|b| b.to_string().into_bytes());
        apigw::send(&self.api, &request).await
    }

    /// Registers `path` on the receiver; returns the answer's JSON.
    async fn register(&self, caller: Option<&str>, query: &str, path: &str) -> Value {
        let url = format!("{}{path}", self.receiver.base);
        let answer = self
            .call(
                caller,
                "POST",
                &format!("/webhooks{query}"),
                Some(json!({ "url": url })),
            )
            .await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        // The secret is answered this once: no log line may carry it.
        let secret = answer.json()["secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        integration_tests::logs::record_secrets_for_suite_scan(&[secret]);
        answer.json()
    }

    async fn publish(&self, event: &ServiceEvent) {
        let publisher = EventBridgePublisher::new(
            aws_sdk_eventbridge::Client::new(integration_tests::moto::sdk_config().await),
            &self.queues.bus,
        );
        publisher.publish(event).await.expect("published");
    }

    /// Lambda's poller over the delivery queue until `done`.
    async fn drive_until(&self, sender: &WebhookSender, done: impl AsyncFnMut() -> bool) {
        let mut done = done;
        for _ in 0..60 {
            if done().await {
                return;
            }
            let messages = DeliveryQueues::receive(&self.queues.queue_url).await;
            if messages.is_empty() {
                continue;
            }
            let response = sender.handle(self.queues.event(&messages)).await;
            self.queues.settle(&messages, &response).await;
        }
        panic!("not done after 60 polls of the delivery queue");
    }
}

fn webhook_settings(receiver: &Receiver, allow_loopback: bool) -> WebhookSettings {
    WebhookSettings {
        allow_loopback,
        extra_roots_pem: Some(receiver.ca_pem.clone().into_bytes()),
        retry_base: Duration::ZERO,
    }
}

fn event(kind: EventKind) -> ServiceEvent {
    let connection = kind != EventKind::DeploymentCredentialsRejected;
    ServiceEvent {
        kind,
        connection_id: connection.then(|| ConnectionId::in_default_tenant("shop").expect("valid")),
        product: Some(Product::Crm),
        reason: "test".to_owned(),
        tags: Tags::parse([("customer".to_owned(), "42".to_owned())].into()).expect("tags"),
        dies_at: (kind == EventKind::ConnectionExpiring)
            .then_some(connector::clock::Timestamp(1_800_000_000)),
    }
}

#[tokio::test]
async fn every_event_kind_reaches_the_receiver_signed_and_without_a_token() {
    let deployment = Deployment::start(5).await;
    let tenant = deployment.register(None, "", "/tenant").await;
    let everything = deployment
        .register(Some(OPERATOR), "?scope=deployment", "/deployment")
        .await;
    assert_eq!(everything["scope"], "deployment");
    let tenant_secret = tenant["secret"].as_str().expect("a secret").to_owned();
    let deployment_secret = everything["secret"].as_str().expect("a secret").to_owned();
    assert!(tenant_secret.starts_with("whsec_"));
    // A secret is answered once: the list shows none.
    let listed = deployment.call(None, "GET", "/webhooks", None).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(
        listed.json()["webhooks"][0]["webhook_id"],
        tenant["webhook_id"]
    );
    assert!(!listed.text().contains("secret\":") && !listed.text().contains(&tenant_secret));
    // Only an operator manages the deployment's endpoints.
    let refused = deployment
        .call(None, "GET", "/webhooks?scope=deployment", None)
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    for kind in EventKind::ALL {
        deployment.publish(&event(kind)).await;
    }
    let sender = deployment.sender(true).await;
    let receiver = &deployment.receiver;
    let expected = EventKind::ALL.len() * 2 - 1;
    deployment
        .drive_until(&sender, async || receiver.received().len() >= expected)
        .await;

    let received = receiver.received();
    assert_eq!(received.len(), expected, "each delivery once");
    let now = deployment.app.clock.now().0;
    let mut types = std::collections::BTreeMap::<&str, Vec<String>>::new();
    for delivery in &received {
        let (secret, other) = match delivery.path.as_str() {
            "/tenant" => (&tenant_secret, &deployment_secret),
            "/deployment" => (&deployment_secret, &tenant_secret),
            path => panic!("delivered to {path}"),
        };
        assert!(signed_by(delivery, secret), "{delivery:?}");
        assert!(
            !signed_by(delivery, other),
            "signed with the other endpoint's secret"
        );
        assert!(delivery.header("webhook-id").starts_with("msg_"));
        let timestamp: i64 = delivery
            .header("webhook-timestamp")
            .parse()
            .expect("seconds");
        assert!((timestamp - now).abs() < 300, "{timestamp} vs {now}");
        assert_eq!(delivery.header("content-type"), "application/json");
        let body: Value = serde_json::from_str(&delivery.body).expect("JSON");
        let kind = body["type"].as_str().expect("a type").to_owned();
        if kind != "deployment.credentials_rejected" {
            assert_eq!(body["data"]["connection_id"], "shop", "{body}");
            assert_eq!(body["data"]["tags"]["customer"], "42", "{body}");
        }
        for secret in deployment.app.secrets() {
            assert!(!delivery.body.contains(&secret), "a secret in a delivery");
        }
        types.entry(delivery.path.as_str()).or_default().push(kind);
    }
    let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.webhook_type()).collect();
    for (path, mut got) in types {
        got.sort();
        let mut want: Vec<String> = all
            .iter()
            .filter(|t| path == "/deployment" || !t.starts_with("deployment."))
            .map(|t| (*t).to_owned())
            .collect();
        want.sort();
        assert_eq!(got, want, "{path}");
    }
    // The README's receiver verifies a real delivery, and refuses it altered.
    receiver_example_verifies(&received[0], &tenant_secret, &deployment_secret);

    // The same event to two endpoints is one message: one webhook-id.
    let ids: std::collections::BTreeSet<&str> =
        received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), EventKind::ALL.len());

    // A rotated secret: the new one is answered once, and for a day both sign.
    let id = tenant["webhook_id"].as_str().expect("an id");
    let rotated = deployment
        .call(None, "POST", &format!("/webhooks/{id}/rotate-secret"), None)
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_secret = rotated.json()["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    assert_ne!(new_secret, tenant_secret);
    integration_tests::logs::record_secrets_for_suite_scan(std::slice::from_ref(&new_secret));
    deployment
        .publish(&event(EventKind::ConnectionRecovered))
        .await;
    let seen = received.len();
    deployment
        .drive_until(&sender, async || {
            receiver
                .received()
                .iter()
                .filter(|r| r.path == "/tenant")
                .count()
                > seen / 2
        })
        .await;
    let last = receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "/tenant")
        .last()
        .expect("the delivery after the rotation");
    assert!(signed_by(&last, &new_secret) && signed_by(&last, &tenant_secret));
    assert_eq!(last.header("webhook-signature").split(' ').count(), 2);

    // Removed: nothing more is delivered to it.
    let removed = deployment
        .call(None, "DELETE", &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    let again = deployment
        .call(None, "DELETE", &format!("/webhooks/{id}"), None)
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.json()["code"], "webhook_not_found");
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_and_then_the_dead_letter_queue() {
    let deployment = Deployment::start(3).await;
    let endpoint = deployment.register(None, "", "/down").await;
    deployment.receiver.answer(StatusCode::SERVICE_UNAVAILABLE);
    deployment
        .publish(&event(EventKind::ConnectionNeedsReauth))
        .await;
    let sender = deployment.sender(true).await;
    let dead_letter = deployment.queues.dead_letter_url.clone();
    let mut dead = Vec::new();
    deployment
        .drive_until(&sender, async || {
            dead = DeliveryQueues::receive(&dead_letter).await;
            !dead.is_empty()
        })
        .await;
    // Three attempts (the queue's maxReceiveCount), all with one webhook-id.
    let attempts = deployment.receiver.received();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let ids: std::collections::BTreeSet<&str> =
        attempts.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1);
    assert!(
        attempts
            .iter()
            .all(|a| signed_by(a, endpoint["secret"].as_str().expect("secret")))
    );
    // The dead-lettered message is the delivery, without its signature or secret.
    let body = dead[0].body().expect("a body");
    let parked: PendingDelivery = serde_json::from_str(body).expect("a delivery");
    assert_eq!(
        parked.webhook_id,
        endpoint["webhook_id"].as_str().expect("id")
    );
    assert!(!body.contains("whsec_") && !body.contains("v1,"));
}

#[tokio::test]
async fn private_endpoints_are_refused_at_registration_and_at_delivery() {
    let deployment = Deployment::start(5).await;
    // A deployment that does not allow loopback refuses it by name, as it
    // refuses private, link-local and plain-http endpoints.
    let strict = Assembly::new(
        deployment.app.assembly.parts().clone(),
        deployment.app.assembly.settings().clone(),
    )
    .expect("client");
    let strict_api = api_proxy_router(strict.api_state().expect("state"));
    for url in [
        "https://10.0.0.1/hook".to_owned(),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://[fd00::1]/hook".to_owned(),
        "http://hooks.example.com/hook".to_owned(),
        format!("{}/hook", deployment.receiver.base),
    ] {
        let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/webhooks");
        request.body = Some(json!({ "url": url }).to_string().into_bytes());
        let answer = apigw::send(&strict_api, &request).await;
        assert_eq!(answer.status, 400, "{url}: {}", answer.text());
        assert_eq!(answer.json()["code"], "invalid_url", "{url}");
    }
    let listed = apigw::send(
        &strict_api,
        &EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/webhooks"),
    )
    .await;
    assert_eq!(listed.json()["webhooks"], json!([]), "nothing registered");

    // Registered where loopback was allowed, an endpoint whose name resolves to
    // loopback is refused again at delivery by a sender that does not allow it.
    deployment.register(None, "", "/late").await;
    deployment
        .publish(&event(EventKind::ConnectionRefreshFailing))
        .await;
    let strict_sender = deployment.sender(false).await;
    let mut attempts = 0;
    deployment
        .drive_until(&strict_sender, async || {
            attempts += 1;
            attempts > 3
        })
        .await;
    assert!(
        deployment.receiver.received().is_empty(),
        "nothing reached the receiver"
    );
    // The same delivery, by a sender that allows loopback, lands.
    let sender = deployment.sender(true).await;
    let receiver = &deployment.receiver;
    deployment
        .drive_until(&sender, async || !receiver.received().is_empty())
        .await;
}

/// `examples/webhooks/receiver.py --check` on `delivery` (saved as the script
/// reads it): it verifies under the endpoint's secret, and not under another
/// secret or with the body altered. The README quotes its `verify`.
fn receiver_example_verifies(
    delivery: &integration_tests::webhook_receiver::Received,
    tenant_secret: &str,
    deployment_secret: &str,
) {
    let secret = if delivery.path == "/tenant" {
        tenant_secret
    } else {
        deployment_secret
    };
    let other = if delivery.path == "/tenant" {
        deployment_secret
    } else {
        tenant_secret
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/webhooks/receiver.py"
    );
    let headers: serde_json::Map<String, Value> = delivery
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().into()))
        .collect();
    let dir = std::env::temp_dir().join(format!("webhook-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, secret, body, verifies) in [
        ("good", secret, delivery.body.clone(), true),
        ("other-secret", other, delivery.body.clone(), false),
        (
            "altered",
            secret,
            delivery.body.replacen("test", "tset", 1),
            false,
        ),
    ] {
        let file = dir.join(format!("{name}.json"));
        let saved = json!({"secret": secret, "headers": headers, "body": body});
        std::fs::write(&file, saved.to_string()).expect("saved");
        let status = std::process::Command::new("python3")
            .arg(script)
            .arg("--check")
            .arg(&file)
            .status()
            .expect("python3 runs");
        assert_eq!(status.success(), verifies, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let example = std::fs::read_to_string(script).expect("the example");
    let verify = &example[example.find("def verify").expect("verify")
        ..example.find("\n\nclass Handler").expect("the handler")];
    let body_of_verify: String = verify
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with('"')
                && !l.trim().is_empty()
                && !l.contains("`headers` maps")
                && !l.contains("raw bytes")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let readme = include_str!("../../README.md");
    for line in body_of_verify.lines() {
        assert!(
            readme.contains(line),
            "the README's receiver lacks {line:?}"
        );
    }
}

#[tokio::test]
async fn bad_webhook_requests_are_clear_json_errors_and_change_nothing() {
    let deployment = Deployment::start(5).await;
    for (method, path, body, status, code) in [
        (
            "POST",
            "/webhooks",
            Some(json!("https://x.example")),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/webhooks",
            Some(json!({"link": "https://x.example"})),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/webhooks",
            Some(json!({"url": "not a url"})),
            400,
            "invalid_url",
        ),
        (
            "POST",
            "/webhooks",
            Some(json!({"url": "https://user:pw@x.example/"})),
            400,
            "invalid_url",
        ),
        (
            "GET",
            "/webhooks?scope=everything",
            None,
            400,
            "invalid_query",
        ),
        (
            "DELETE",
            "/webhooks/wh_unknown",
            None,
            404,
            "webhook_not_found",
        ),
        (
            "POST",
            "/webhooks/wh_unknown/rotate-secret",
            None,
            404,
            "webhook_not_found",
        ),
    ] {
        let answer = deployment.call(None, method, path, body).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.text());
        assert_eq!(answer.json()["code"], code, "{method} {path}");
        assert!(answer.json()["message"].is_string());
    }
    // At most five endpoints; a sixth is refused and nothing changes.
    for n in 0..5 {
        deployment.register(None, "", &format!("/{n}")).await;
    }
    let sixth = deployment
        .call(
            None,
            "POST",
            "/webhooks",
            Some(json!({"url": format!("{}/6", deployment.receiver.base)})),
        )
        .await;
    assert_eq!(sixth.status, 409, "{}", sixth.text());
    assert_eq!(sixth.json()["code"], "too_many_webhooks");
    let listed = deployment.call(None, "GET", "/webhooks", None).await;
    assert_eq!(listed.json()["webhooks"].as_array().map(Vec::len), Some(5));
}
