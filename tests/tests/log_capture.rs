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

/// At TRACE the AWS SDK logs each response body, a stored connection's tokens
/// among them: the guard every host installs drops other crates' TRACE events
/// (their DEBUG stays), while this crate's own TRACE events are kept.
#[test]
fn other_crates_trace_events_are_never_recorded() {
    use connector::telemetry::may_record;
    use tracing::Level;
    use tracing::callsite::Identifier;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    struct Site;
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("not registered")
        }
    }
    static SITE: Site = Site;
    let metadata = |target: &'static str, level: Level| {
        tracing::Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            FieldSet::new(&[], Identifier(&SITE)),
            Kind::EVENT,
        )
    };
    for target in [
        "aws_smithy_runtime::client::orchestrator::http",
        "aws_sdk_secretsmanager::operation::get_secret_value",
        "lambda_runtime::layers::api_client",
        "hyper_util::client::legacy::pool",
    ] {
        assert!(!may_record(&metadata(target, Level::TRACE)), "{target}");
        assert!(may_record(&metadata(target, Level::DEBUG)), "{target}");
    }
    assert!(may_record(&metadata(
        "connector::services::refresh_protocol",
        Level::TRACE
    )));
}
