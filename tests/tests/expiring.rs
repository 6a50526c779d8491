//! A warning before a connection dies: when refreshes keep failing and a CRM
//! refresh token's 14 idle days end within the warning window (48 h), one
//! `ConnectionExpiring` event with the time of death; cleared (with
//! `ConnectionRecovered`) by the next successful refresh. And the list filter
//! for connections whose refresh token dies within N hours.

use axum::Router;
use connector::clock::Clock;
use connector::domain::{ConnectionStatus, Product};
use connector::inbound::http::api_proxy_router;
use connector::ports::EventKind;
use connector::services::refresh_protocol::{RefreshFailure, RefreshRequest, Refreshed};
use integration_tests::apigw::{self, EventRequest};
use integration_tests::refresh_app::RefreshApp;
use rd_sandbox::Fault;

const DAY: i64 = 86_400;

async fn listed(router: &Router, query: &str) -> (u16, serde_json::Value) {
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, "GET", "/connections");
    request.query = query;
    let answer = apigw::send(router, &request).await;
    (answer.status, answer.json())
}

fn names(page: &serde_json::Value) -> Vec<String> {
    page["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| c["connection_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_failing_connection_is_announced_once_before_its_refresh_token_dies() {
    let app = RefreshApp::start().await;
    let connected = app.connect("fading", Product::Crm).await;
    let dies_at = connected
        .refresh_token_dies_at()
        .expect("a CRM refresh token dies idle");
    // Twelve and a half days without a refresh: a day and a half to live.
    app.advance(12 * DAY + DAY / 2);

    // RD fails: a warning, once, with the time of death; a second failure
    // sends none.
    app.sandbox.sandbox.inject_fault(
        Fault::RateLimited {
            retry_after_seconds: 60,
        },
        2,
    );
    for _ in 0..2 {
        let failed = app.refresh("fading", RefreshRequest::default()).await;
        assert!(
            matches!(failed, Err(RefreshFailure::NotProcessed { .. })),
            "{failed:?}"
        );
        let stored = app.stored("fading").await;
        app.advance(
            stored
                .backoff
                .next_attempt_at
                .expect("backing off")
                .0
                .saturating_sub(app.clock.now().0)
                .max(1),
        );
    }
    let warnings = app.events_of(EventKind::ConnectionExpiring);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].dies_at, Some(dies_at));
    assert_eq!(warnings[0].reason, "rate_limited");
    let detail = connector::outbound::events::event_detail(&warnings[0]);
    assert_eq!(detail["refresh_token_dies_at"], dies_at.to_rfc3339());
    assert!(app.stored("fading").await.backoff.expiring_warned);

    // Listed among those that die within 48 h, with a Marketing connection
    // and a fresh CRM one left out.
    app.connect("fresh", Product::Crm).await;
    app.connect("marketing", Product::Marketing).await;
    let router = api_proxy_router(app.assembly.api_state().expect("state"));
    let (status, page) = listed(&router, "dies_within_hours=48").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(names(&page), ["fading"]);
    let (_, page) = listed(&router, "dies_within_hours=336").await;
    assert_eq!(names(&page), ["fading", "fresh"]);
    for bad in ["0", "337", "soon", "-1"] {
        let query = format!("dies_within_hours={bad}");
        let (status, page) = listed(&router, &query).await;
        assert_eq!(status, 400, "{bad}: {page}");
        assert_eq!(page["code"], "invalid_dies_within_hours");
    }

    // RD answers again: the refresh succeeds, the warning is over.
    let refreshed = app.refresh("fading", RefreshRequest::default()).await;
    assert!(
        matches!(refreshed, Ok(Refreshed::Rotated(_))),
        "{refreshed:?}"
    );
    let stored = app.stored("fading").await;
    assert_eq!(stored.status, ConnectionStatus::Active);
    assert!(!stored.backoff.expiring_warned);
    let recovered = app.events_of(EventKind::ConnectionRecovered);
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0].reason, "refreshed");
    let (_, page) = listed(&router, "dies_within_hours=48").await;
    assert!(names(&page).is_empty(), "{page}");
}

/// Failing far from its death, a connection is not announced as expiring.
#[tokio::test]
async fn a_failure_outside_the_window_sends_no_warning() {
    let app = RefreshApp::start().await;
    app.connect("young", Product::Crm).await;
    app.advance(DAY);
    app.sandbox.sandbox.inject_fault(
        Fault::RateLimited {
            retry_after_seconds: 60,
        },
        1,
    );
    let failed = app.refresh("young", RefreshRequest::default()).await;
    assert!(
        matches!(failed, Err(RefreshFailure::NotProcessed { .. })),
        "{failed:?}"
    );
    assert!(app.events_of(EventKind::ConnectionExpiring).is_empty());
    assert!(!app.stored("young").await.backoff.expiring_warned);
}
