//! Tags on connections, as deployed: set when a connect session opens (and
//! replaced by a reconnect that brings its own), shown, changed with PATCH,
//! filtered in lists and carried on events; bad tags get a clear 400 and
//! change nothing. API Gateway v2 events into the routers, DynamoDB on moto.

use axum::Router;
use connector::domain::{ConnectionStatus, Product};
use connector::inbound::http::api_proxy_router;
use connector::ports::EventKind;
use connector::secret::ExposeSecret;
use integration_tests::apigw::{self, Answer, EventRequest};
use integration_tests::app::TestApp;
use integration_tests::refresh_app::RefreshApp;
use serde_json::{Value, json};

async fn send(
    router: &Router,
    method: &str,
    path: &str,
    query: &str,
    body: Option<Value>,
) -> Answer {
    let mut request = EventRequest::new(apigw::IAM_AUTHORIZED, method, path);
    request.query = query;
    request.body = body.map(|b| b.to_string().into_bytes());
    apigw::send(router, &request).await
}

#[tokio::test]
async fn a_session_tags_the_connection_it_makes_and_a_reconnect_may_retag_it() {
    let app = TestApp::start().await;
    let done = app
        .connect_with(json!({"connection_id": "shop-42", "product": "crm", "tags": {"customer": "42", "plan": "Pro anual"}}))
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    let stored = app.stored("shop-42").await.expect("stored");
    assert!(stored.tags.has("customer", "42") && stored.tags.has("plan", "Pro anual"));

    // A reconnect without tags keeps them; one with tags replaces them.
    assert_eq!(app.reconnect("shop-42", "crm").await.status, 200);
    assert!(
        app.stored("shop-42")
            .await
            .expect("stored")
            .tags
            .has("customer", "42")
    );
    let done = app
        .connect_with(json!({"connection_id": "shop-42", "product": "crm", "reconnect": true, "tags": {"customer": "43"}}))
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    let retagged = app.stored("shop-42").await.expect("stored");
    assert_eq!(
        retagged.tags.iter().collect::<Vec<_>>(),
        [("customer", "43")]
    );

    // Bad tags: a 400 naming what is wrong, and no session.
    for (tags, says) in [
        (json!({"a b": "x"}), "tag key"),
        (json!({"k": "line\nbreak"}), "control character"),
        (json!({"k": 42}), "invalid type"),
        (
            json!(
                (0..11)
                    .map(|i| (format!("k{i}"), json!("")))
                    .collect::<serde_json::Map<_, _>>()
            ),
            "at most 10",
        ),
    ] {
        let answer = app
            .open_session(json!({"connection_id": "untagged", "product": "crm", "tags": tags}))
            .await;
        assert_eq!(answer.status, 400, "{}", answer.text());
        let code = answer.error_code();
        assert!(code == "invalid_tags" || code == "invalid_json", "{code}");
        assert!(
            answer.json()["message"]
                .as_str()
                .expect("message")
                .contains(says),
            "{}",
            answer.text()
        );
    }
    assert!(app.stored("untagged").await.is_none());
}

#[tokio::test]
async fn tags_are_shown_changed_filtered_and_carried_on_events() {
    let app = RefreshApp::start().await;
    let router = api_proxy_router(app.assembly.api_state().expect("client"));
    for (id, customer) in [("c-1", "42"), ("c-2", "43"), ("c-3", "42")] {
        app.connect(id, Product::Crm).await;
        let answer = send(
            &router,
            "PATCH",
            &format!("/connections/{id}"),
            "",
            Some(json!({"tags": {"customer": customer}})),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["tags"], json!({"customer": customer}));
    }
    // A tags-only PATCH leaves the rate limit; a limit-only one leaves the tags.
    let limited = send(
        &router,
        "PATCH",
        "/connections/c-1",
        "",
        Some(json!({"rate_limit_per_minute": 60})),
    )
    .await;
    assert_eq!(limited.json()["tags"], json!({"customer": "42"}));
    let retagged = send(
        &router,
        "PATCH",
        "/connections/c-1",
        "",
        Some(json!({"tags": {"customer": "42", "region": "sul"}})),
    )
    .await;
    assert_eq!(retagged.json()["rate_limit_per_minute"], 60);
    let version = retagged.json()["version"].clone();

    // Filtered lists: one tag, two tags.
    let names = |answer: Answer| -> Vec<String> {
        assert_eq!(answer.status, 200, "{}", answer.text());
        answer.json()["connections"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["connection_id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(
        names(send(&router, "GET", "/connections", "tag=customer%3D42", None).await),
        ["c-1", "c-3"]
    );
    assert_eq!(
        names(
            send(
                &router,
                "GET",
                "/connections",
                "tag=customer=42&tag=region=sul",
                None
            )
            .await
        ),
        ["c-1"]
    );
    let bad = send(&router, "GET", "/connections", "tag=customer", None).await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_tag")
    );

    // Bad tags change nothing, the rate limit included.
    let refused = send(
        &router,
        "PATCH",
        "/connections/c-1",
        "",
        Some(json!({"rate_limit_per_minute": 30, "tags": {"a b": "x"}})),
    )
    .await;
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (400, "invalid_tags")
    );
    let shown = send(&router, "GET", "/connections/c-1", "", None)
        .await
        .json();
    assert_eq!(
        (
            shown["rate_limit_per_minute"].clone(),
            shown["version"].clone()
        ),
        (json!(60), version)
    );
    assert_eq!(shown["tags"], json!({"customer": "42", "region": "sul"}));

    // The refresh protocol's writes keep the tags, and its events carry them.
    let c3 = app.stored("c-3").await;
    assert!(
        app.sandbox
            .sandbox
            .revoke(c3.tokens.refresh_token.expose_secret())
    );
    app.advance(86_400);
    app.run().await;
    assert_eq!(
        app.stored("c-3").await.status,
        ConnectionStatus::NeedsReauth
    );
    let events = app.events_of(EventKind::ConnectionNeedsReauth);
    assert_eq!(events.len(), 1);
    assert!(events[0].tags.has("customer", "42"), "{:?}", events[0]);
    assert!(
        app.stored("c-1").await.tags.has("region", "sul"),
        "kept by the refresh"
    );
}
