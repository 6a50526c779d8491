//! Cold start of each function's deployable artifact (`sam build`'s `bootstrap`):
//! the time from process start to the first event answered through a Lambda
//! Runtime API emulator on loopback, with moto as AWS and the RD Station sandbox as
//! RD. Also each artifact's size. Prints min / median / max over N starts
//! (default 10).
//!
//! Run with `make bench` (builds the artifacts and starts moto). arm64 artifacts
//! are sized but not started (this machine cannot run them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration_tests::apigw::{self, EventRequest};
use integration_tests::runtime_api::{Outcome, RuntimeApi, function_command};
use rd_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

const FUNCTIONS: [(&str, &str); 3] = [
    ("OAuthCallbackFunction", "oauth-callback"),
    ("ApiProxyFunction", "api-proxy"),
    ("TokenRefresherFunction", "token-refresher"),
];

/// The first event each function handles: what it meets first after a deploy.
fn first_event(name: &str) -> Value {
    match name {
        "oauth-callback" => {
            let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "POST", "/connect/sessions");
            request.body = Some(br#"{"connection_id":"cold","product":"crm"}"#.to_vec());
            request.event()
        }
        "api-proxy" => EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/connections/cold").event(),
        _ => serde_json::from_str(include_str!("../fixtures/eventbridge/scheduled-event.json"))
            .expect("event"),
    }
}

async fn one_cold_start(
    bootstrap: &Path,
    name: &str,
    sandbox: &rd_sandbox::RunningSandbox,
) -> Duration {
    let api = RuntimeApi::start().await;
    let mut command = function_command(bootstrap, name, &api, sandbox).await;
    let started = Instant::now();
    let mut process = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the function");
    let outcome = api
        .invoke(&first_event(name), Duration::from_secs(30))
        .await;
    let elapsed = started.elapsed();
    let _ = process.kill();
    let _ = process.wait();
    if let Outcome::Error(e) = outcome {
        panic!("{name} failed its first event: {e}");
    }
    elapsed
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("COLD_START_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let sandbox = Sandbox::new(SandboxConfig::default())
        .spawn_local()
        .await
        .expect("sandbox");
    println!(
        "| architecture | function | bootstrap size | cold start min / median / max ({rounds} starts) |"
    );
    println!("|---|---|---|---|");
    for arch in ["x86_64", "arm64"] {
        let dir = root.join(format!(".aws-sam/build-{arch}"));
        if !dir.exists() {
            continue;
        }
        let runnable = arch == std::env::consts::ARCH
            || (arch == "arm64" && std::env::consts::ARCH == "aarch64");
        for (logical, name) in FUNCTIONS {
            let bootstrap = dir.join(logical).join("bootstrap");
            let size = std::fs::metadata(&bootstrap).expect("built").len();
            let timing = if runnable {
                let mut times = Vec::with_capacity(rounds);
                for _ in 0..rounds {
                    times.push(one_cold_start(&bootstrap, name, &sandbox).await);
                }
                times.sort();
                format!(
                    "{} / {} / {} ms",
                    ms(times[0]),
                    ms(times[times.len() / 2]),
                    ms(times[times.len() - 1])
                )
            } else {
                "not run on this machine".to_owned()
            };
            println!(
                "| {arch} | {name} | {:.1} MB | {timing} |",
                size as f64 / 1_048_576.0
            );
        }
    }
}
