//! Events reach EventBridge (on moto) with the documented source, detail-types and
//! detail, and never a token: a rule on the bus forwards them to an SQS queue the
//! test reads.

use connector::domain::{ConnectionId, Product};
use connector::outbound::events::{EVENT_SOURCE, EventBridgePublisher};
use connector::ports::{EventKind, EventPublisher, ServiceEvent};
use integration_tests::moto;

#[tokio::test]
async fn events_land_on_the_bus_with_their_detail() {
    let sdk = moto::sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let bus = moto::unique_name("rd-events");
    events
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("bus");
    let queue_url = sqs
        .create_queue()
        .queue_name(moto::unique_name("rd-events"))
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("url")
        .to_owned();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .expect("arn");
    events
        .put_rule()
        .name("to-queue")
        .event_bus_name(&bus)
        .event_pattern(format!(r#"{{"source":["{EVENT_SOURCE}"]}}"#))
        .send()
        .await
        .expect("rule");
    events
        .put_targets()
        .rule("to-queue")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("targets");

    let publisher = EventBridgePublisher::new(events.clone(), &bus);
    publisher
        .publish(&ServiceEvent {
            kind: EventKind::ConnectionPossiblyLost,
            connection_id: Some(ConnectionId::in_default_tenant("acme:crm").expect("valid")),
            product: Some(Product::Crm),
            reason: "lost_in_flight".to_owned(),
            tags: Default::default(),
            dies_at: None,
        })
        .await
        .expect("published");
    publisher
        .publish(&ServiceEvent {
            kind: EventKind::DeploymentCredentialsRejected,
            connection_id: None,
            product: None,
            reason: "invalid_client".to_owned(),
            tags: Default::default(),
            dies_at: None,
        })
        .await
        .expect("published");

    // A tenant's connection, tagged: the detail names both.
    let acme = connector::domain::TenantId::parse("acme").expect("valid");
    publisher
        .publish(&ServiceEvent {
            kind: EventKind::ConnectionNeedsReauth,
            connection_id: Some(ConnectionId::parse_in(&acme, "shop").expect("valid")),
            product: Some(Product::Marketing),
            reason: "revoked".to_owned(),
            tags: connector::domain::Tags::parse([("customer".to_owned(), "42".to_owned())].into())
                .expect("valid"),
            dies_at: None,
        })
        .await
        .expect("published");

    let messages = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("received")
        .messages()
        .to_vec();
    let bodies: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::from_str(m.body().expect("body")).expect("JSON event"))
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    let tagged = bodies
        .iter()
        .find(|b| b["detail-type"] == "ConnectionNeedsReauth")
        .expect("needs-reauth event");
    assert_eq!(
        tagged["detail"],
        serde_json::json!({"tenant": "acme", "connection_id": "shop", "product": "marketing", "reason": "revoked", "tags": {"customer": "42"}})
    );
    let lost = bodies
        .iter()
        .find(|b| b["detail-type"] == "ConnectionPossiblyLost")
        .expect("possibly-lost event");
    assert_eq!(lost["source"], EVENT_SOURCE);
    assert_eq!(
        lost["detail"],
        serde_json::json!({"connection_id": "acme:crm", "product": "crm", "reason": "lost_in_flight"})
    );
    let deployment = bodies
        .iter()
        .find(|b| b["detail-type"] == "DeploymentCredentialsRejected")
        .expect("deployment event");
    assert_eq!(deployment["detail"]["reason"], "invalid_client");
}

#[tokio::test]
async fn a_missing_bus_is_an_error() {
    let events = aws_sdk_eventbridge::Client::new(moto::sdk_config().await);
    let publisher = EventBridgePublisher::new(events, "no-such-bus");
    let result = publisher
        .publish(&ServiceEvent {
            kind: EventKind::ConnectionRecovered,
            connection_id: Some(ConnectionId::in_default_tenant("x").expect("valid")),
            product: Some(Product::Marketing),
            reason: "restored_from_rescue".to_owned(),
            tags: Default::default(),
            dies_at: None,
        })
        .await;
    assert!(result.is_err());
}
