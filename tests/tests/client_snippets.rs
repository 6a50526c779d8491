//! The client examples for callers outside AWS (`examples/clients/`), run as a
//! user runs them against `make run`, through a recording hop in front of it:
//! each gets the service's answer, and the SigV4 signature each sent is checked
//! against the `aws-sigv4` crate's signature of the very request that arrived
//! (the local run itself checks no signature, so the hop is what can fail).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use integration_tests::local_run::LocalRun;
use serde_json::{Value, json};

const KEY_ID: &str = "AKIDSNIPPETEXAMPLE";
const SECRET: &str = "snippet-secret-key";
const REGION: &str = "sa-east-1";

/// One request as it arrived at the hop.
#[derive(Clone, Debug)]
struct Recorded {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// A hop on loopback that records each request and forwards it to `target`.
async fn recording_hop(target: String) -> (String, Arc<Mutex<Vec<Recorded>>>) {
    let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let log = recorded.clone();
    let http = integration_tests::local_run::client();
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (log, http, target) = (log.clone(), http.clone(), target.clone());
            async move {
                log.lock().expect("lock").push(Recorded {
                    method: method.clone(),
                    uri: uri.clone(),
                    headers: headers.clone(),
                    body: body.clone(),
                });
                let mut forwarded = http.request(method, format!("{target}{uri}"));
                if let Some(kind) = headers.get("content-type") {
                    forwarded = forwarded.header("content-type", kind);
                }
                let answer = forwarded
                    .body(body)
                    .send()
                    .await
                    .expect("the local run answers");
                let status = answer.status();
                let bytes = answer.bytes().await.expect("a body");
                (status, bytes).into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, recorded)
}

/// Whether `recorded` carries the SigV4 signature `aws-sigv4` computes for it
/// (same time, same signed headers, same body) with the test's credentials.
fn signature_verifies(recorded: &Recorded) -> bool {
    let header = |name: &str| {
        recorded
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let authorization = header("authorization");
    let part = |key: &str| {
        authorization
            .split([' ', ','])
            .find_map(|p| p.strip_prefix(key))
            .unwrap_or_default()
            .to_owned()
    };
    let credential = part("Credential=");
    assert!(
        credential.starts_with(&format!("{KEY_ID}/"))
            && credential.ends_with(&format!("/{REGION}/execute-api/aws4_request")),
        "{authorization}"
    );
    let signed_headers = part("SignedHeaders=");
    let format =
        time::format_description::parse_borrowed::<2>("[year][month][day]T[hour][minute][second]Z")
            .expect("format");
    let at = time::PrimitiveDateTime::parse(&header("x-amz-date"), &format)
        .expect("an x-amz-date")
        .assume_utc();
    let headers: Vec<(String, String)> = signed_headers
        .split(';')
        .filter(|name| *name != "x-amz-date")
        .map(|name| (name.to_owned(), header(name)))
        .collect();
    let identity = Credentials::new(KEY_ID, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("execute-api")
        .time(SystemTime::from(at))
        .settings(SigningSettings::default())
        .build()
        .expect("params")
        .into();
    let signable = SignableRequest::new(
        recorded.method.as_str(),
        format!("http://{}{}", header("host"), recorded.uri),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&recorded.body),
    )
    .expect("signable");
    let (_, expected) = sign(signable, &params).expect("signed").into_parts();
    part("Signature=") == expected
}

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/clients")
        .join(path)
}

/// The snippet `program args…` with the test's credentials and nothing else
/// from any AWS configuration on this machine; its one JSON line of output.
fn run_snippet(program: &Path, args: &[&str]) -> Value {
    let output = Command::new(program)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", REGION)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} {args:?}: {stdout}{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// Each snippet lists connections and opens a connect session; both requests
/// arrive signed.
async fn check(program: PathBuf, script: PathBuf, connection_id: &str) {
    let run = LocalRun::start(&[("CONNECTIONS_TABLE", ""), ("RDSTATION_API_URL", "")]);
    let (hop, recorded) = recording_hop(run.base.as_str().trim_end_matches('/').to_owned()).await;
    let script = script.to_str().expect("utf-8").to_owned();
    let (hop_for_list, script_for_list) = (hop.clone(), script.clone());
    let program_for_list = program.clone();
    let listed = tokio::task::spawn_blocking(move || {
        run_snippet(
            &program_for_list,
            &[
                &script_for_list,
                &hop_for_list,
                "GET",
                "/connections?limit=5",
            ],
        )
    })
    .await
    .expect("joined");
    assert_eq!(listed["status"], 200, "{listed}");
    assert!(listed["body"]["connections"].is_array(), "{listed}");
    let body = json!({"connection_id": connection_id, "product": "crm"}).to_string();
    let opened = tokio::task::spawn_blocking(move || {
        run_snippet(
            &program,
            &[&script, &hop, "POST", "/connect/sessions", &body],
        )
    })
    .await
    .expect("joined");
    assert_eq!(opened["status"], 201, "{opened}");
    assert!(opened["body"]["connect_url"].is_string(), "{opened}");
    let recorded = recorded.lock().expect("lock").clone();
    assert_eq!(recorded.len(), 2);
    for request in &recorded {
        assert!(signature_verifies(request), "{request:?}");
    }
    // The check can fail: a body changed after signing does not verify.
    let tampered = Recorded {
        body: Bytes::from_static(b"{\"connection_id\": \"other\", \"product\": \"crm\"}"),
        ..recorded[1].clone()
    };
    assert!(!signature_verifies(&tampered));
    run.stop();
}

#[tokio::test]
async fn the_python_example_signs_with_botocore_and_reaches_the_service() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make test` (make venv) installs it",
        python.display()
    );
    check(python, example("python/call_service.py"), "snippet-py").await;
}

#[tokio::test]
async fn the_typescript_example_signs_with_the_sdk_signer_and_reaches_the_service() {
    let script = example("typescript/dist/call_service.js");
    assert!(
        script.exists(),
        "{} is not built: `make test` runs npm ci and the build in examples/clients/typescript",
        script.display()
    );
    check(PathBuf::from("node"), script, "snippet-ts").await;
}
