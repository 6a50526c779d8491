//! The log check used by the end-to-end tests can fail: a leaked value is caught,
//! and the capture sees the service's, the SDK's and the HTTP stack's logs.

use integration_tests::app::TestApp;
use integration_tests::logs;

#[test]
fn a_leaked_secret_is_detected() {
    logs::install();
    let leaked = "rt-this-should-never-be-logged-0042".to_owned();
    tracing::info!(token = %leaked, "a careless log line");
    let outcome =
        std::panic::catch_unwind(|| logs::assert_none_logged(std::slice::from_ref(&leaked)));
    let message = *outcome
        .expect_err("the leak must be reported")
        .downcast::<String>()
        .expect("panic message");
    assert!(
        !message.contains(&leaked),
        "the report itself must not print the secret"
    );
}

#[tokio::test]
async fn the_capture_sees_debug_logs_of_every_layer() {
    let app = TestApp::start().await;
    assert_eq!(app.connect("observed", "crm").await.status, 200);
    let log = logs::captured();
    assert!(
        log.contains("connection stored"),
        "service logs are captured"
    );
    assert!(log.contains("aws_"), "AWS SDK debug logs are captured");
    app.assert_no_secret_logged();
}
