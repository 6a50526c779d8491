//! `make run`'s binary, end to end over HTTP: connect → consent → callback →
//! proxied call → forced refresh → status → delete, then a clean stop. Once with
//! what it uses by default (sandbox, memory), once on DynamoDB (moto), and once
//! against an RD-compatible server named in the environment, as an operator would
//! point it at real RD Station.

use integration_tests::local_run::{LocalRun, client, connect};
use integration_tests::moto;
use rd_sandbox::{Sandbox, SandboxConfig};
use reqwest::StatusCode;
use serde_json::Value;

/// The whole walk on a started run; returns nothing, asserts each hop.
async fn walk(run: &LocalRun, product: &str) {
    let http = client();
    let connected = connect(&run.base, "walk", product).await;
    assert_eq!(connected["status"], "connected", "{connected}");

    let path = match product {
        "crm" => "/proxy/walk/crm/v2/contacts?page=1",
        _ => "/proxy/walk/marketing/account_info",
    };
    let proxied = http.get(run.url(path)).send().await.expect("proxy");
    assert_eq!(proxied.status(), StatusCode::OK, "{path}");

    let refreshed = http
        .post(run.url("/connections/walk/refresh"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.expect("json");
    assert_eq!(refreshed["outcome"], "refreshed", "{refreshed}");

    let shown: Value = http
        .get(run.url("/connections/walk"))
        .send()
        .await
        .expect("show")
        .json()
        .await
        .expect("json");
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["product"], product);

    let deleted = http
        .delete(run.url("/connections/walk"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::OK);
    let gone = http
        .get(run.url("/connections/walk"))
        .send()
        .await
        .expect("show");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

fn stops_cleanly(run: LocalRun) {
    let (status, rest) = run.stop();
    assert!(status.success(), "exit {status:?}");
    assert!(rest.iter().any(|l| l == "Stopped."), "{rest:?}");
}

#[tokio::test]
async fn the_default_run_uses_the_sandbox_and_memory_and_serves_every_route() {
    let run = LocalRun::start(&[("CONNECTIONS_TABLE", ""), ("RDSTATION_API_URL", "")]);
    assert!(
        run.banner_line("Store:").contains("in memory"),
        "{:?}",
        run.banner
    );
    assert!(
        run.banner_line("RD Station:").contains("sandbox"),
        "{:?}",
        run.banner
    );
    assert!(run.banner_line("Caller auth:").contains("no SigV4"));
    walk(&run, "crm").await;
    stops_cleanly(run);
}

#[tokio::test]
async fn the_run_keeps_connections_in_dynamodb_when_a_table_is_named() {
    moto::dynamodb().await; // moto's endpoint and credentials are in the environment
    let table = moto::unique_name("local-run");
    let run = LocalRun::start(&[("CONNECTIONS_TABLE", &table), ("RDSTATION_API_URL", "")]);
    let store = run.banner_line("Store:").to_owned();
    assert!(
        store.contains(&format!("DynamoDB table {table}")) && store.contains("created now"),
        "{store}"
    );
    walk(&run, "marketing").await;
    stops_cleanly(run);
}

#[tokio::test]
async fn the_run_talks_to_the_rd_server_and_credentials_the_environment_names() {
    // Another RD-compatible server, as real RD Station would be: the run starts no
    // sandbox of its own and presents the app credentials it was given.
    let config = SandboxConfig::default();
    let rd = Sandbox::new(config.clone())
        .spawn_local()
        .await
        .expect("RD-compatible server");
    let api = rd.base_url.as_str().to_owned();
    let marketing_authorize = rd.url("/auth/dialog").to_string();
    let crm_authorize = rd.url("/oauth/authorize").to_string();
    let run = LocalRun::start(&[
        ("CONNECTIONS_TABLE", ""),
        ("RDSTATION_API_URL", &api),
        ("RDSTATION_MARKETING_AUTHORIZE_URL", &marketing_authorize),
        ("RDSTATION_CRM_AUTHORIZE_URL", &crm_authorize),
        ("RDSTATION_CRM_CLIENT_ID", &config.crm.client_id),
        ("RDSTATION_CRM_CLIENT_SECRET", &config.crm.client_secret),
    ]);
    let line = run.banner_line("RD Station:").to_owned();
    assert!(
        line.contains(api.trim_end_matches('/')) && line.contains("CRM"),
        "{line}"
    );
    assert!(
        !line.contains(&config.crm.client_secret),
        "the banner shows no secret"
    );
    walk(&run, "crm").await;
    assert_eq!(
        rd.sandbox.stats().codes_exchanged,
        1,
        "the named server issued the pair"
    );
    stops_cleanly(run);
}

#[test]
fn half_a_credential_pair_is_refused_with_a_clear_message() {
    let output =
        std::process::Command::new(integration_tests::local_run::workspace_binary("local-run"))
            .env("PORT", "0")
            .env("SANDBOX_PORT", "0")
            .env("RDSTATION_API_URL", "http://127.0.0.1:9")
            .env("RDSTATION_CRM_CLIENT_ID", "only-the-id")
            .env_remove("RDSTATION_CRM_CLIENT_SECRET")
            .output()
            .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RDSTATION_CRM_CLIENT_SECRET"), "{stderr}");
}

/// A slow body (a client that sends headers, a little of its body, then stalls)
/// holds its own connection only: other callers are served meanwhile, and the
/// half-sent request writes nothing. (In AWS, API Gateway buffers a request before
/// the function sees it; the local run is where a slow client meets our server.)
#[tokio::test]
async fn a_slow_body_holds_one_connection_not_the_service() {
    use tokio::io::AsyncWriteExt;
    let run = LocalRun::start(&[("CONNECTIONS_TABLE", ""), ("RDSTATION_API_URL", "")]);
    let address = format!(
        "{}:{}",
        run.base.host_str().expect("host"),
        run.base.port().expect("port")
    );
    let mut slow = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    slow.write_all(
        b"POST /connect/sessions HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"connection_id\":\"slow\",",
    )
    .await
    .expect("partial request");
    let http = client();
    let listed: Value = http
        .get(run.url("/connections"))
        .send()
        .await
        .expect("served meanwhile")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["connections"], serde_json::json!([]));
    drop(slow);
    let connected = connect(&run.base, "after-slow", "crm").await;
    assert_eq!(connected["status"], "connected");
    let listed: Value = http
        .get(run.url("/connections"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = listed["connections"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["connection_id"].as_str())
        .collect();
    assert_eq!(ids, ["after-slow"], "the half-sent request wrote nothing");
    stops_cleanly(run);
}

/// `make run` delivers webhooks too: an endpoint registered on the run (here a
/// real HTTPS receiver on loopback, which the run allows by default, with the
/// receiver's CA named in `WEBHOOK_EXTRA_CA_FILE`) receives a deleted
/// connection's event, signed with the secret the registration answered.
/// Its banner names the API description, which it serves.
#[tokio::test]
async fn the_run_delivers_webhooks_to_a_loopback_receiver() {
    let receiver = integration_tests::webhook_receiver::Receiver::start().await;
    let ca = std::env::temp_dir().join(moto::unique_name("run-webhook-ca") + ".pem");
    std::fs::write(&ca, &receiver.ca_pem).expect("CA written");
    let run = LocalRun::start(&[
        ("CONNECTIONS_TABLE", ""),
        ("RDSTATION_API_URL", ""),
        ("WEBHOOK_EXTRA_CA_FILE", ca.to_str().expect("utf-8")),
    ]);
    assert!(
        run.banner_line("Webhooks:").contains("/webhooks"),
        "{:?}",
        run.banner
    );
    let http = client();
    // The API description the banner names is the code's.
    let described = run.banner_line("API description:");
    let url = described
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap_or_else(|| panic!("no URL in {described:?}"));
    let document: Value = http
        .get(url)
        .send()
        .await
        .expect("the description")
        .json()
        .await
        .expect("json");
    assert_eq!(document, *integration_tests::openapi::DOCUMENT);
    let registered: Value = http
        .post(run.url("/webhooks"))
        .json(&serde_json::json!({ "url": format!("{}/hook", receiver.base) }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let secret = registered["secret"].as_str().expect("a secret").to_owned();
    let connected = connect(&run.base, "hooked", "crm").await;
    assert_eq!(connected["status"], "connected", "{connected}");
    let deleted = http
        .delete(run.url("/connections/hooked"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::OK);
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        receiver.wait_for_more_than(0),
    )
    .await
    .expect("a delivery within 30 s");
    let delivery = &receiver.received()[0];
    assert!(integration_tests::webhook_receiver::signed_by(
        delivery, &secret
    ));
    let body: Value = serde_json::from_str(&delivery.body).expect("JSON");
    assert_eq!(body["type"], "connection.deleted");
    assert_eq!(body["data"]["connection_id"], "hooked");
    let _ = std::fs::remove_file(&ca);
    stops_cleanly(run);
}
