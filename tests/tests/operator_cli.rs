//! The operator CLI (`rdconn`) driving a local run end to end, and signing what
//! it sends to a deployed API.

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use integration_tests::local_run::{LocalRun, consent_through, workspace_binary};
use serde_json::{Value, json};

fn rdconn(url: &str, args: &[&str]) -> Output {
    Command::new(workspace_binary("rdconn"))
        .arg("--url")
        .arg(url)
        .args(args)
        .output()
        .expect("run rdconn")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "rdconn failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[tokio::test]
async fn the_cli_connects_lists_shows_refreshes_and_deletes_on_a_local_run() {
    let run = LocalRun::start(&[("CONNECTIONS_TABLE", ""), ("RDSTATION_API_URL", "")]);
    let url = run.base.as_str().trim_end_matches('/').to_owned();

    // connect: prints the link a person opens.
    let printed = stdout(&rdconn(&url, &["connect", "acme:crm", "--product", "crm"]));
    let link = printed
        .lines()
        .find(|l| l.starts_with("http"))
        .expect("a connect link")
        .to_owned();
    assert!(link.starts_with(&format!("{url}/connect/")), "{printed}");
    let landed = consent_through(&run.base, &link, "crm").await;
    assert_eq!(landed["status"], "connected");

    // list: a table for people, JSON for scripts, filters passed through.
    let table = stdout(&rdconn(&url, &["connections", "list"]));
    let mut lines = table.lines();
    assert!(lines.next().expect("header").starts_with("CONNECTION"));
    let row = lines.next().expect("one row");
    assert!(
        row.starts_with("acme:crm") && row.contains("active"),
        "{table}"
    );
    let listed: Value =
        serde_json::from_str(&stdout(&rdconn(&url, &["--json", "connections", "list"])))
            .expect("json");
    assert_eq!(listed["connections"][0]["connection_id"], "acme:crm");
    // The banner says which RDCONN_URL reaches this run (its port is a free one).
    let line = run.banner_line("Operator CLI:").to_owned();
    let from_banner = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("RDCONN_URL="))
        .expect("an RDCONN_URL in the banner");
    let through_env = Command::new(workspace_binary("rdconn"))
        .env("RDCONN_URL", from_banner)
        .args(["connections", "list"])
        .output()
        .expect("run rdconn");
    assert!(stdout(&through_env).contains("acme:crm"), "{line}");
    let needing_a_person = stdout(&rdconn(
        &url,
        &["connections", "list", "--status", "needs-reauth"],
    ));
    assert_eq!(
        needing_a_person.lines().count(),
        1,
        "header only: {needing_a_person}"
    );

    // show, refresh.
    let shown: Value = serde_json::from_str(&stdout(&rdconn(
        &url,
        &["connections", "show", "acme:crm", "--json"],
    )))
    .expect("json");
    let before = shown["version"].as_u64().expect("version");
    let refreshed = stdout(&rdconn(&url, &["connections", "refresh", "acme:crm"]));
    // The outcome first, then the connection.
    assert_eq!(
        refreshed.lines().next(),
        Some("outcome: refreshed"),
        "{refreshed}"
    );
    assert!(refreshed.contains("connection_id"), "{refreshed}");
    let shown: Value = serde_json::from_str(&stdout(&rdconn(
        &url,
        &["--json", "connections", "show", "acme:crm"],
    )))
    .expect("json");
    assert!(
        shown["version"].as_u64().expect("version") > before,
        "{shown}"
    );

    // set-limit: a number, then the deployment's default again; a bad value is
    // refused before anything is sent.
    for (given, stored) in [("120", Value::from(120)), ("default", Value::Null)] {
        stdout(&rdconn(
            &url,
            &["connections", "set-limit", "acme:crm", given],
        ));
        let shown: Value = serde_json::from_str(&stdout(&rdconn(
            &url,
            &["--json", "connections", "show", "acme:crm"],
        )))
        .expect("json");
        assert_eq!(shown["rate_limit_per_minute"], stored, "{given}: {shown}");
    }
    let zero = rdconn(&url, &["connections", "set-limit", "acme:crm", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert!(stderr.contains("or `default`"), "{stderr}");

    // Connecting an id that exists: the hint names this CLI's flag, not the
    // API's JSON field.
    let exists = rdconn(&url, &["connect", "acme:crm", "--product", "crm"]);
    assert_eq!(exists.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&exists.stderr);
    assert!(
        stderr.contains("409: connection_exists") && stderr.contains("--reconnect"),
        "{stderr}"
    );
    assert!(!stderr.contains("\"reconnect\""), "{stderr}");

    // The one-call reconnect: a link for the existing connection; an unknown
    // id is the API's 404.
    let printed = stdout(&rdconn(&url, &["reconnect", "acme:crm"]));
    assert!(
        printed.contains("Send this link") && printed.contains("/connect/"),
        "{printed}"
    );
    let session: Value =
        serde_json::from_str(&stdout(&rdconn(&url, &["--json", "reconnect", "acme:crm"])))
            .expect("JSON");
    assert_eq!(
        (&session["product"], &session["reconnect"]),
        (&json!("crm"), &json!(true))
    );
    let nobody = rdconn(&url, &["reconnect", "nobody"]);
    assert_eq!(nobody.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert!(stderr.contains("404: connection_not_found"), "{stderr}");

    // delete; then the API's error, as an error.
    stdout(&rdconn(&url, &["connections", "delete", "acme:crm"]));
    let missing = rdconn(&url, &["connections", "show", "acme:crm"]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("404: connection_not_found"), "{stderr}");

    // Bad input is refused by the CLI itself, before any call.
    let bad = rdconn(&url, &["connect", "x", "--product", "crmm"]);
    assert_eq!(bad.status.code(), Some(2));
    run.stop();
}

#[tokio::test]
async fn the_cli_tags_connections_and_lists_by_tag() {
    let run = LocalRun::start(&[("CONNECTIONS_TABLE", ""), ("RDSTATION_API_URL", "")]);
    let url = run.base.as_str().trim_end_matches('/').to_owned();
    for (id, customer) in [("shop-a", "42"), ("shop-b", "43")] {
        let tag = format!("customer={customer}");
        let printed = stdout(&rdconn(
            &url,
            &["connect", id, "--product", "crm", "--tag", &tag],
        ));
        let link = printed
            .lines()
            .find(|l| l.starts_with("http"))
            .expect("a link")
            .to_owned();
        consent_through(&run.base, &link, "crm").await;
    }
    let table = stdout(&rdconn(
        &url,
        &["connections", "list", "--tag", "customer=42"],
    ));
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(
        table.contains("shop-a") && !table.contains("shop-b"),
        "{table}"
    );
    stdout(&rdconn(
        &url,
        &[
            "connections",
            "set-tags",
            "shop-b",
            "customer=42",
            "plan=pro",
        ],
    ));
    let shown: Value = serde_json::from_str(&stdout(&rdconn(
        &url,
        &["--json", "connections", "show", "shop-b"],
    )))
    .expect("json");
    assert_eq!(
        shown["tags"],
        serde_json::json!({"customer": "42", "plan": "pro"})
    );
    let bad = rdconn(&url, &["connections", "list", "--tag", "customer"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "refused before anything is sent"
    );
    run.stop();
}

/// An operator (the local run's caller is one) manages tenants and acts in one
/// with `--tenant`.
#[tokio::test]
async fn the_cli_manages_tenants_and_acts_in_one() {
    let run = LocalRun::start(&[("CONNECTIONS_TABLE", ""), ("RDSTATION_API_URL", "")]);
    let url = run.base.as_str().trim_end_matches('/').to_owned();
    let none = stdout(&rdconn(&url, &["tenants", "list"]));
    assert!(none.starts_with("No tenants"), "{none}");
    let principal = "arn:aws:sts::123456789012:assumed-role/acme-worker/*";
    let set = stdout(&rdconn(
        &url,
        &["tenants", "set", "acme", "--principal", principal],
    ));
    assert_eq!(set.trim(), format!("acme  {principal}"));
    let bad = rdconn(
        &url,
        &["tenants", "set", "acme", "--principal", "acme-worker"],
    );
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("400: invalid_principal"), "{stderr}");

    // A connection made in acme: the table gains a TENANT column.
    let printed = stdout(&rdconn(
        &url,
        &["--tenant", "acme", "connect", "shop", "--product", "crm"],
    ));
    let link = printed
        .lines()
        .find(|l| l.starts_with("http"))
        .expect("a link")
        .to_owned();
    let landed = consent_through(&run.base, &link, "crm").await;
    assert_eq!(
        (landed["status"].as_str(), landed["tenant"].as_str()),
        (Some("connected"), Some("acme"))
    );
    let table = stdout(&rdconn(&url, &["connections", "list"]));
    let mut lines = table.lines();
    assert!(
        lines.next().expect("header").starts_with("TENANT"),
        "{table}"
    );
    assert!(lines.next().expect("a row").starts_with("acme"), "{table}");
    // The id is acme's: the default tenant has no such connection.
    stdout(&rdconn(
        &url,
        &["--tenant", "acme", "connections", "show", "shop"],
    ));
    let elsewhere = rdconn(&url, &["connections", "show", "shop"]);
    let stderr = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(stderr.contains("404: connection_not_found"), "{stderr}");

    // A tenant with connections stays; without, it goes.
    let kept = rdconn(&url, &["tenants", "remove", "acme"]);
    let stderr = String::from_utf8_lossy(&kept.stderr);
    assert!(stderr.contains("409: tenant_has_connections"), "{stderr}");
    stdout(&rdconn(
        &url,
        &["--tenant", "acme", "connections", "delete", "shop"],
    ));
    let removed = stdout(&rdconn(&url, &["tenants", "remove", "acme"]));
    assert!(removed.contains("removed"), "{removed}");
    run.stop();
}

/// `rdconn import FILE` against a local run: good lines land (a CRM token
/// spent once each), bad lines are refused with the reason per line, the
/// summary counts them, and the same file again spends nothing.
#[tokio::test]
async fn the_cli_imports_a_file_of_json_lines_and_says_what_landed() {
    let run = LocalRun::start(&[("CONNECTIONS_TABLE", ""), ("RDSTATION_API_URL", "")]);
    let url = run.base.as_str().trim_end_matches('/').to_owned();
    let sandbox = run
        .banner_line("RD Station:")
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the sandbox's URL in the banner")
        .to_owned();
    let client = integration_tests::local_run::client();
    let grant = |product: &'static str| {
        let client = client.clone();
        let sandbox = sandbox.clone();
        async move {
            let answer: Value = client
                .post(format!("{sandbox}/_sandbox/grants"))
                .json(&json!({ "product": product }))
                .send()
                .await
                .expect("sandbox")
                .json()
                .await
                .expect("json");
            answer["refresh_token"]
                .as_str()
                .expect("a token")
                .to_owned()
        }
    };
    let token_calls = || {
        let client = client.clone();
        let sandbox = sandbox.clone();
        async move {
            let stats: Value = client
                .get(format!("{sandbox}/_sandbox/stats"))
                .send()
                .await
                .expect("sandbox")
                .json()
                .await
                .expect("json");
            stats["stats"]["token_calls"].as_u64().expect("count")
        }
    };
    let crm = grant("crm").await;
    let marketing = grant("marketing").await;
    let lines = [
        json!({"connection_id": "old-crm", "product": "crm", "refresh_token": crm}).to_string(),
        String::new(),
        "{not json".to_owned(),
        json!({"connection_id": "old-mkt", "product": "marketing", "refresh_token": marketing, "tags": {"from": "legacy"}}).to_string(),
        json!({"connection_id": "gone", "product": "crm", "refresh_token": "revoked-long-ago"}).to_string(),
        json!({"connection_id": "bad id", "product": "crm", "refresh_token": "x"}).to_string(),
    ];
    let dir = std::env::temp_dir().join(format!("rdconn-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("connections.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("written");
    let before = token_calls().await;

    let output = rdconn(&url, &["import", file.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1), "some lines were refused");
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    for expected in [
        "line 1: imported: old-crm",
        "line 3: refused: -: invalid_json",
        "line 4: imported: old-mkt",
        "line 5: refused: gone: needs_reauth",
        "line 6: refused: bad id: invalid_connection_id",
        "Imported 2, already present 0, refresh pending 0, refused 3, not sent 0.",
        "  line 5 (gone): needs_reauth: ",
    ] {
        assert!(printed.contains(expected), "{expected:?} in:\n{printed}");
    }
    for token in [&crm, &marketing] {
        assert!(
            !printed.contains(token.as_str()),
            "a token printed:\n{printed}"
        );
    }
    // One token call per good line, and one for the dead token.
    assert_eq!(token_calls().await, before + 3);
    let shown: Value = serde_json::from_str(&stdout(&rdconn(
        &url,
        &["--json", "connections", "show", "old-mkt"],
    )))
    .expect("json");
    assert_eq!(shown["tags"]["from"], "legacy");

    // The same file again: nothing spent; the JSON summary for scripts.
    let again = rdconn(&url, &["--json", "import", file.to_str().expect("utf-8")]);
    let printed = String::from_utf8(again.stdout).expect("utf-8");
    let summary: Value =
        serde_json::from_str(printed.lines().last().expect("a summary")).expect("json");
    assert_eq!(summary["summary"]["already_present"], 2, "{printed}");
    assert_eq!(summary["summary"]["imported"], 0, "{printed}");
    assert_eq!(
        summary["summary"]["refused"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(token_calls().await, before + 4, "only the dead token again");

    // A service that cannot be reached: the run stops at once and says which
    // lines were not sent.
    let unreachable = rdconn(
        "http://127.0.0.1:9",
        &["import", file.to_str().expect("utf-8")],
    );
    assert_eq!(unreachable.status.code(), Some(1));
    let printed = String::from_utf8(unreachable.stdout).expect("utf-8");
    assert!(
        printed.contains("not sent 5.") && printed.contains("lines 1, 3-6 were not sent"),
        "{printed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    run.stop();
}

#[tokio::test]
async fn requests_to_a_deployed_api_are_signed_with_sigv4_for_execute_api() {
    // A stand-in for API Gateway that records what arrives.
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let recorder = seen.clone();
    let app = Router::new().route(
        "/connections",
        get(move |headers: HeaderMap| {
            recorder.lock().expect("lock").push(headers);
            async { axum::Json(serde_json::json!({"connections": [], "next_cursor": null})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let output = tokio::task::spawn_blocking(move || {
        Command::new(workspace_binary("rdconn"))
            .args(["--url", &url, "--sign", "always", "--region", "sa-east-1"])
            .args(["connections", "list"])
            .env("AWS_ACCESS_KEY_ID", "AKIDCLITEST")
            .env("AWS_SECRET_ACCESS_KEY", "cli-test-secret")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run rdconn")
    })
    .await
    .expect("join");
    stdout(&output);
    let seen = seen.lock().expect("lock");
    let authorization = seen[0]["authorization"].to_str().expect("ascii");
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDCLITEST/")
            && authorization.contains("/sa-east-1/execute-api/aws4_request"),
        "{authorization}"
    );
    assert!(seen[0].contains_key("x-amz-date"));
    assert!(!authorization.contains("cli-test-secret"));
}

#[test]
fn help_names_the_values_the_cli_accepts() {
    let help = Command::new(workspace_binary("rdconn"))
        .args(["connections", "list", "--help"])
        .output()
        .expect("run rdconn");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("`needs-reauth` and `possibly-lost`"),
        "{text}"
    );
    assert!(!text.contains("needs_reauth"), "{text}");
    let help = Command::new(workspace_binary("rdconn"))
        .args(["connections", "set-limit", "--help"])
        .output()
        .expect("run rdconn");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("`default`"), "{text}");
}

#[test]
fn global_options_are_described_once_in_the_top_help() {
    let help = |args: &[&str]| {
        let out = Command::new(workspace_binary("rdconn"))
            .args(args)
            .output()
            .expect("run rdconn");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    for described in [
        "--url <URL>",
        "RDCONN_URL",
        "--json",
        "--sign <SIGN>",
        "--region <REGION>",
        "--tenant <TENANT>",
        "RDCONN_TENANT",
    ] {
        assert!(top.contains(described), "{described} in:\n{top}");
    }
    for command in [
        &["connections", "--help"][..],
        &["connections", "list", "--help"],
        &["connections", "set-limit", "--help"],
        &["connect", "--help"],
        &["tenants", "set", "--help"],
    ] {
        let text = help(command);
        assert!(!text.contains("--sign <SIGN>"), "{command:?}:\n{text}");
        assert!(!text.contains("RDCONN_URL"), "{command:?}:\n{text}");
        assert!(
            text.contains("Global options, accepted here too (see `rdconn --help`): --url, --json, --sign, --region, --tenant."),
            "{command:?}:\n{text}"
        );
    }
    // Still accepted after a command: a bad value is refused by the option's parser.
    let out = Command::new(workspace_binary("rdconn"))
        .args(["connections", "list", "--sign", "sometimes"])
        .output()
        .expect("run rdconn");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[possible values: auto, always, never]")
    );
}
