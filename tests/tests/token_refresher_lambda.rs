//! The refresher Lambda's handler, invoked the way lambda_runtime invokes it: a
//! real EventBridge scheduled-event payload through `service_fn`.

use connector::clock::Clock;
use connector::domain::{ConnectionStatus, Product};
use connector::inbound::schedule::HandlerError;
use integration_tests::refresh_app::RefreshApp;
use lambda_runtime::{Context, LambdaEvent, Service, service_fn};

const SCHEDULED_EVENT: &str = include_str!("../fixtures/eventbridge/scheduled-event.json");

fn invocation(
    payload: &str,
    deadline_ms: i64,
) -> LambdaEvent<aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value>> {
    let mut context = Context::default();
    context.request_id = "8476a536-e9f4-11e8-9739-2dfe598c3fcd".to_owned();
    context.deadline = deadline_ms as u64;
    LambdaEvent::new(
        serde_json::from_str(payload).expect("EventBridge event"),
        context,
    )
}

#[tokio::test]
async fn a_scheduled_event_runs_the_refresher() {
    let app = RefreshApp::start().await;
    let before = app.connect("scheduled", Product::Crm).await;
    app.advance(7_200 - 300);
    let refresher = app.assembly.refresher(32);
    let mut handler = service_fn(|event| refresher.handle(event));
    let deadline = app.clock.now_ms() + 60_000;
    let summary = handler
        .call(invocation(SCHEDULED_EVENT, deadline))
        .await
        .expect("handled");
    assert_eq!(summary.due, 1);
    assert_eq!(summary.refreshed, 1);
    let after = app.stored("scheduled").await;
    assert_eq!(after.status, ConnectionStatus::Active);
    assert_ne!(after.tokens.refresh_token, before.tokens.refresh_token);
}

#[tokio::test]
async fn an_invocation_too_close_to_its_deadline_leaves_work_for_the_next_run() {
    let app = RefreshApp::start().await;
    app.connect("late", Product::Crm).await;
    app.advance(7_200 - 300);
    let refresher = app.assembly.refresher(32);
    // Less time left than one lease: nothing may be started.
    let deadline = app.clock.now_ms() + 500;
    let summary = refresher
        .handle(invocation(SCHEDULED_EVENT, deadline))
        .await
        .expect("handled");
    assert_eq!(summary.due, 1);
    assert_eq!(summary.left_for_next_run, 1);
    assert_eq!(app.sandbox.sandbox.stats().refreshes, 0);
}

#[tokio::test]
async fn other_events_are_refused() {
    let app = RefreshApp::start().await;
    let refresher = app.assembly.refresher(1);
    let other = SCHEDULED_EVENT.replace("Scheduled Event", "Object Created");
    match refresher
        .handle(invocation(&other, app.clock.now_ms() + 60_000))
        .await
    {
        Err(HandlerError::NotScheduled(detail_type)) => assert_eq!(detail_type, "Object Created"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_run_stands_down_while_another_holds_the_run_lock() {
    let app = RefreshApp::start().await;
    app.connect("locked", Product::Crm).await;
    app.advance(7_200 - 300);
    let refresher = app.assembly.refresher(8);
    // Another invocation (a late schedule, a retry) is running until a minute from now.
    let now = app.clock.now_ms();
    assert!(
        refresher
            .run_lock
            .try_lock("other-invocation", now + 60_000, now)
            .await
            .expect("store up")
    );
    let summary = refresher
        .handle(invocation(SCHEDULED_EVENT, now + 60_000))
        .await
        .expect("handled");
    assert_eq!(summary.overlapping_run_skipped, 1);
    assert_eq!(summary.due, 0);
    assert_eq!(app.sandbox.sandbox.stats().refreshes, 0);

    // Once it gives the lock back, the next invocation runs and releases it in turn.
    refresher
        .run_lock
        .unlock("other-invocation")
        .await
        .expect("store up");
    let summary = refresher
        .handle(invocation(SCHEDULED_EVENT, app.clock.now_ms() + 60_000))
        .await
        .expect("handled");
    assert_eq!(summary.refreshed, 1, "{summary:?}");
    let now = app.clock.now_ms();
    assert!(
        refresher
            .run_lock
            .try_lock("next", now + 1_000, now)
            .await
            .expect("store up"),
        "the run gave its lock back"
    );
}
