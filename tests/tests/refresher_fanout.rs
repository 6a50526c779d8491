//! The refresher on Lambda's scale-out: a scheduled run hands each due-index
//! shard to the refresh work queue (SQS on moto), and workers (the same
//! function, invoked with the queue's messages) refresh one shard each under the
//! shard's lease. In process with two instances of the service, and as deployed:
//! the real artifact under the Runtime API emulator, two processes at once, and
//! one killed mid-shard.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use connector::clock::Clock;
use connector::domain::{ConnectionId, ConnectionStatus, Product};
use connector::inbound::schedule::{HandlerError, Refresher};
use connector::outbound::refresh_work_queue::SqsWorkQueue;
use connector::ports::RefreshWorkQueue;
use connector::secret::RefreshToken;
use connector::services::scheduled_refresh::RunSummary;
use integration_tests::refresh_app::RefreshApp;
use integration_tests::runtime_api::{Outcome, RuntimeApi, artifact, deployed_command};
use integration_tests::{moto, work_queue};
use lambda_runtime::{Context, LambdaEvent};
use rd_sandbox::SandboxProduct;
use serde_json::Value;

const SCHEDULED_EVENT: &str = include_str!("../fixtures/eventbridge/scheduled-event.json");
const SHARDS: u32 = 16;

fn context(deadline_ms: i64) -> Context {
    let mut context = Context::default();
    context.request_id = format!("req-{:08x}", rand::random::<u32>());
    context.deadline = deadline_ms as u64;
    context
}

fn scheduled() -> Value {
    serde_json::from_str(SCHEDULED_EVENT).expect("EventBridge event")
}

/// Hands `messages` to `refresher` one invocation each, as the SQS poller does,
/// and adds up what the invocations did.
async fn work(
    refresher: &Refresher,
    messages: &[(String, String)],
    deadline_ms: i64,
) -> RunSummary {
    let mut total = RunSummary::default();
    for (id, body) in messages {
        let event = work_queue::sqs_event(id, body);
        let summary = refresher
            .handle_any(LambdaEvent::new(event, context(deadline_ms)))
            .await
            .expect("the shard was worked");
        total.add(&summary);
    }
    total
}

/// Two instances of the service (own SDK clients, own gates) work the shards a
/// scheduled run handed out, one message delivered twice (SQS delivers at least
/// once): every due connection is refreshed once, by one of them.
#[tokio::test]
async fn two_workers_refresh_each_due_connection_of_the_handed_out_shards_once() {
    let app = RefreshApp::start().await;
    let ids: Vec<String> = (0..12).map(|i| format!("fan-{i}")).collect();
    let mut before = Vec::new();
    for id in &ids {
        before.push(app.connect(id, Product::Crm).await.tokens.refresh_token);
    }
    app.advance(7_200 - 300);
    let queue_url = work_queue::create().await;
    let queue: Arc<dyn RefreshWorkQueue> =
        Arc::new(SqsWorkQueue::new(moto::sqs().await, &queue_url));
    let mut first = app.assembly.refresher(8);
    first.work_queue = Some(queue.clone());
    let other = app
        .instance_on(aws_sdk_dynamodb::Client::new(moto::sdk_config().await))
        .await;
    let mut second = other.refresher(8);
    second.work_queue = Some(queue);
    let deadline = app.clock.now_ms() + 60_000;

    let run = first
        .handle_any(LambdaEvent::new(scheduled(), context(deadline)))
        .await
        .expect("the run");
    assert_eq!(run.shards_handed_out, u64::from(SHARDS), "{run:?}");
    assert_eq!(
        (run.due, run.refreshed),
        (0, 0),
        "the run refreshes nothing itself"
    );
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls,
        12,
        "only the 12 connects"
    );

    let messages = work_queue::receive_all(&queue_url, SHARDS as usize).await;
    let to_first: Vec<_> = messages.iter().step_by(2).cloned().collect();
    let mut to_second: Vec<_> = messages.iter().skip(1).step_by(2).cloned().collect();
    // The first message, delivered to both.
    to_second.insert(0, messages[0].clone());
    let (a, b) = tokio::join!(
        work(&first, &to_first, deadline),
        work(&second, &to_second, deadline)
    );
    assert_eq!(a.refreshed + b.refreshed, 12, "{a:?} {b:?}");
    assert!(
        a.refreshed > 0 && b.refreshed > 0,
        "both worked: {a:?} {b:?}"
    );
    assert_eq!(
        a.shards + b.shards + a.shard_leased_elsewhere + b.shard_leased_elsewhere,
        u64::from(SHARDS) + 1
    );
    let stats = app.sandbox.sandbox.stats();
    assert_eq!(stats.refreshes, 12);
    assert_eq!(stats.overlapping_presentations, 0);
    assert!(
        stats
            .rolling_calls_by_refresh_token
            .values()
            .all(|n| *n == 1)
    );
    for (id, old) in ids.iter().zip(before) {
        let now = app.stored(id).await;
        assert_eq!(now.status, ConnectionStatus::Active, "{id}");
        assert_ne!(now.tokens.refresh_token, old, "{id} was refreshed");
    }
}

/// When SQS refuses the shards (here: the queue is gone), the scheduled run
/// refreshes them itself rather than leave a connection to age.
#[tokio::test]
async fn a_run_whose_queue_refuses_the_shards_refreshes_them_itself() {
    let app = RefreshApp::start().await;
    app.connect("unqueued", Product::Crm).await;
    app.advance(7_200 - 300);
    let queue_url = work_queue::create().await;
    moto::sqs()
        .await
        .delete_queue()
        .queue_url(&queue_url)
        .send()
        .await
        .expect("deleted");
    let mut refresher = app.assembly.refresher(8);
    refresher.work_queue = Some(Arc::new(SqsWorkQueue::new(moto::sqs().await, &queue_url)));
    let deadline = app.clock.now_ms() + 60_000;
    let run = refresher
        .handle_any(LambdaEvent::new(scheduled(), context(deadline)))
        .await
        .expect("the run");
    assert_eq!(
        (run.shards_handed_out, run.refreshed, run.errors),
        (0, 1, 1),
        "{run:?}"
    );
}

/// A message that names no shard of this deployment is dropped with a logged
/// error (SQS would only hand it back), and another payload is refused.
#[tokio::test]
async fn a_worker_drops_a_message_naming_no_shard_and_refuses_other_events() {
    let app = RefreshApp::start().await;
    let refresher = app.assembly.refresher(1);
    let deadline = app.clock.now_ms() + 60_000;
    for body in [
        "not json",
        r#"{"shard": 16, "run": "r"}"#,
        r#"{"shard": -1}"#,
    ] {
        let summary = refresher
            .handle_any(LambdaEvent::new(
                work_queue::sqs_event("m", body),
                context(deadline),
            ))
            .await
            .expect("handled");
        assert_eq!((summary.errors, summary.shards), (1, 0), "{body}");
    }
    let other = serde_json::json!({"hello": "world"});
    assert!(matches!(
        refresher
            .handle_any(LambdaEvent::new(other, context(deadline)))
            .await,
        Err(HandlerError::UnknownEvent(_))
    ));
}

// --- As deployed: the token-refresher artifact under the Runtime API emulator.

/// The emulated function's timeout: each invocation's deadline.
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(8);

/// A deployed refresher's environment with a short protocol timing (T 1 s,
/// lease 3 s), so that an invocation of [`FUNCTION_TIMEOUT`] starts refreshes
/// for four seconds and a dead worker's shard lease runs out in eight.
const FAST_TIMING: &[(&str, &str)] = &[
    ("RDSTATION_TOKEN_TIMEOUT_SECONDS", "1"),
    ("REFRESH_COMMIT_BUDGET_SECONDS", "1"),
    ("REFRESH_LEASE_SECONDS", "3"),
    ("REFRESH_CLOCK_SKEW_MS", "200"),
    ("REFRESH_CONCURRENCY", "1"),
    ("RUST_LOG", "info"),
];

/// A directory of its own for the processes' output, removed afterwards.
struct LogDir(std::path::PathBuf);

impl LogDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(moto::unique_name("fanout-logs"));
        std::fs::create_dir_all(&dir).expect("log dir");
        Self(dir)
    }
}

impl Drop for LogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts one refresher process (a Lambda environment) under `api`, over the
/// app's table, secret and bucket, handing shards to `queue_url`; its output
/// goes to `log`.
fn start_worker(
    app: &RefreshApp,
    api: &RuntimeApi,
    queue_url: &str,
    log: &std::path::Path,
) -> Worker {
    let mut command = deployed_command(
        &artifact("token-refresher"),
        "token-refresher",
        api,
        &app.sandbox,
        &app.table_name,
        &app.secret_name,
        &app.bucket,
    );
    command
        .envs(FAST_TIMING.iter().copied())
        .env("REFRESH_WORK_QUEUE_URL", queue_url)
        .stdout(std::fs::File::create(log).expect("log file"))
        .stderr(Stdio::null());
    Worker(command.spawn().expect("the refresher starts"))
}

/// Connections `prefix-N` whose due-index shard is `shard`, `count` of them,
/// connected with access tokens that expire in ten minutes (inside CRM's
/// fifteen-minute margin: due at once, on the real clock the artifact reads).
async fn connect_in_shard(
    app: &RefreshApp,
    prefix: &str,
    shard: u32,
    count: usize,
) -> Vec<(String, RefreshToken)> {
    let mut ids = Vec::new();
    for n in 0.. {
        let id = format!("{prefix}-{n}");
        if ConnectionId::in_default_tenant(&id)
            .expect("valid")
            .spread(SHARDS)
            == shard
        {
            let connected = app.connect(&id, Product::Crm).await;
            ids.push((id, connected.tokens.refresh_token));
            if ids.len() == count {
                break;
            }
        }
    }
    ids
}

fn summary_of(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Response(summary) => summary,
        Outcome::Error(error) => panic!("the worker failed: {error}"),
    }
}

/// Two refresher processes consume the work of one scheduled run at once:
/// every due connection is refreshed once, and each process worked shards.
#[tokio::test]
async fn two_refresher_processes_work_the_shards_of_one_run_at_once() {
    let app = RefreshApp::start().await;
    app.sandbox.sandbox.set_access_ttl(SandboxProduct::Crm, 600);
    let mut ids = Vec::new();
    for shard in [1, 6, 11] {
        ids.extend(connect_in_shard(&app, "both", shard, 2).await);
    }
    // Every refresh takes a while, as at RD: neither process can take all the work.
    app.sandbox
        .sandbox
        .set_token_latency(Duration::from_millis(200));
    let queue_url = work_queue::create().await;
    let api = RuntimeApi::with_timeout(FUNCTION_TIMEOUT).await;
    let logs = LogDir::new();
    let _a = start_worker(&app, &api, &queue_url, &logs.0.join("a.log"));
    let _b = start_worker(&app, &api, &queue_url, &logs.0.join("b.log"));

    let run = summary_of(api.invoke(&scheduled(), Duration::from_secs(30)).await);
    assert_eq!(run["shards_handed_out"], SHARDS, "{run}");
    let messages = work_queue::receive_all(&queue_url, SHARDS as usize).await;
    let mut invocations = tokio::task::JoinSet::new();
    for (id, body) in &messages {
        let api = api.clone();
        let event = work_queue::sqs_event(id, body);
        invocations
            .spawn(async move { summary_of(api.invoke(&event, Duration::from_secs(30)).await) });
    }
    let summaries = invocations.join_all().await;
    let refreshed: u64 = summaries
        .iter()
        .map(|s| s["refreshed"].as_u64().expect("refreshed"))
        .sum();
    assert_eq!(refreshed, ids.len() as u64, "{summaries:?}");
    let stats = app.sandbox.sandbox.stats();
    assert_eq!(stats.refreshes, ids.len() as u64);
    assert_eq!(stats.overlapping_presentations, 0);
    for (id, before) in &ids {
        let stored = app.stored(id).await;
        assert_eq!(stored.status, ConnectionStatus::Active, "{id}");
        assert_ne!(&stored.tokens.refresh_token, before, "{id} was refreshed");
    }
    // Each process printed one EMF document per invocation it handled.
    for log in ["a.log", "b.log"] {
        let output = std::fs::read_to_string(logs.0.join(log)).expect("log");
        let worked = output
            .lines()
            .filter(|l| l.contains("\"shard_leased_elsewhere\""))
            .count();
        assert!(worked > 0, "{log} handled no invocation:\n{output}");
    }
}

/// A worker killed mid-shard leaves the shard to the next run: the shard's
/// lease keeps a redelivered message off it until the dead worker's deadline,
/// then the next run's worker refreshes what it left, and no refresh token is
/// presented twice.
#[tokio::test]
async fn a_worker_killed_mid_shard_leaves_its_shard_to_the_next_run() {
    let app = RefreshApp::start().await;
    app.sandbox.sandbox.set_access_ttl(SandboxProduct::Crm, 600);
    const SHARD: u32 = 5;
    let ids = connect_in_shard(&app, "killed", SHARD, 6).await;
    let rd = &app.sandbox.sandbox;
    // A refreshed pair lives two hours: no longer due.
    rd.set_access_ttl(SandboxProduct::Crm, 7_200);
    rd.set_token_latency(Duration::from_millis(600));
    let connects = rd.stats().token_calls;
    let queue_url = work_queue::create().await;
    let api = RuntimeApi::with_timeout(FUNCTION_TIMEOUT).await;
    let logs = LogDir::new();
    let mut dying = start_worker(&app, &api, &queue_url, &logs.0.join("dying.log"));

    let body = format!(r#"{{"shard":{SHARD},"run":"first-run"}}"#);
    let first = work_queue::sqs_event("first-delivery", &body);
    let started = tokio::time::Instant::now();
    let never_answered = tokio::spawn({
        let api = api.clone();
        async move { api.invoke(&first, FUNCTION_TIMEOUT * 4).await }
    });
    // Mid-shard: two refreshes made, a third called.
    rd.wait_for_token_calls(connects + 3).await;
    dying.0.kill().expect("killed");
    dying.0.wait().expect("gone");
    never_answered.abort();
    let done_before_kill = rd.stats().refreshes;
    // The third call is held 600 ms before RD processes it: the kill comes first.
    assert_eq!(done_before_kill, 2);

    let _next = start_worker(&app, &api, &queue_url, &logs.0.join("next.log"));
    // SQS hands the message out again while the dead worker's lease holds.
    let redelivered = work_queue::sqs_event("first-delivery", &body);
    let stood_down = summary_of(api.invoke(&redelivered, Duration::from_secs(30)).await);
    if started.elapsed() < FUNCTION_TIMEOUT - Duration::from_secs(2) {
        assert_eq!(stood_down["shard_leased_elsewhere"], 1, "{stood_down}");
        assert_eq!(stood_down["refreshed"], 0);
    }
    // The next run's message, once the dead worker's deadline has passed.
    tokio::time::sleep_until(started + FUNCTION_TIMEOUT).await;
    let next_body = format!(r#"{{"shard":{SHARD},"run":"next-run"}}"#);
    let next = work_queue::sqs_event("next-delivery", &next_body);
    let summary = summary_of(api.invoke(&next, Duration::from_secs(30)).await);
    assert_eq!(summary["shard_leased_elsewhere"], 0, "{summary}");

    let stats = rd.stats();
    assert_eq!(stats.overlapping_presentations, 0);
    assert_eq!(stats.dead_refresh_token_presentations, 0);
    let mut unchanged = Vec::new();
    for (id, before) in &ids {
        let stored = app.stored(id).await;
        assert_eq!(stored.status, ConnectionStatus::Active, "{id}");
        if &stored.tokens.refresh_token == before {
            unchanged.push(id);
        }
    }
    // Every connection of the shard was refreshed by one worker or the other,
    // but the one whose call the kill cut short: its outcome unknown to us (RD
    // never processed it), the protocol retries the same token after a backoff,
    // a later run's business.
    assert_eq!(unchanged.len(), 1, "{unchanged:?}: {summary}");
    assert_eq!(summary["backing_off"], 1, "{summary}");
    assert_eq!(
        done_before_kill + summary["refreshed"].as_u64().expect("refreshed"),
        5,
        "{summary}"
    );
}
