//! Webhook endpoints on the connections table: one item a scope (`WEBHOOKS`,
//! the tenant or `*`) holding its endpoints, replaced only at the version read.
//! It carries no `kind`, so no index lists it. The secrets are encrypted at rest
//! with the table.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use url::Url;

use super::DynamoStore;
use super::schema::{PARTITION_KEY, SORT_KEY};
use crate::clock::Timestamp;
use crate::domain::{Webhook, WebhookScope, Webhooks};
use crate::outbound::aws_error::unavailable;
use crate::ports::{StoreError, WebhookRegistry};
use crate::secret::{ExposeSecret, WebhookSecret};

type Item = HashMap<String, AttributeValue>;

fn scope_key(scope: &WebhookScope) -> Item {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S("WEBHOOKS".to_owned()),
        ),
        (
            SORT_KEY.to_owned(),
            AttributeValue::S(scope.as_str().to_owned()),
        ),
    ])
}

fn endpoint_value(w: &Webhook) -> AttributeValue {
    let mut map = HashMap::from([
        ("id".to_owned(), AttributeValue::S(w.id.clone())),
        ("url".to_owned(), AttributeValue::S(w.url.to_string())),
        (
            "secret".to_owned(),
            AttributeValue::S(w.secret.expose_secret().to_owned()),
        ),
        (
            "created_at".to_owned(),
            AttributeValue::N(w.created_at.0.to_string()),
        ),
    ]);
    if let Some((previous, until)) = &w.previous_secret {
        map.insert(
            "previous_secret".to_owned(),
            AttributeValue::S(previous.expose_secret().to_owned()),
        );
        map.insert(
            "previous_until".to_owned(),
            AttributeValue::N(until.0.to_string()),
        );
    }
    AttributeValue::M(map)
}

fn endpoint_from(value: &AttributeValue) -> Result<Webhook, StoreError> {
    let corrupt = || StoreError::Corrupt("webhook endpoint".to_owned());
    let map = value.as_m().map_err(|_| corrupt())?;
    let text = |name: &str| map.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        map.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    let previous_secret = match (text("previous_secret"), number("previous_until")) {
        (Some(secret), Some(until)) => Some((WebhookSecret::new(secret), Timestamp(until))),
        _ => None,
    };
    Ok(Webhook {
        id: text("id").ok_or_else(corrupt)?,
        url: Url::parse(&text("url").ok_or_else(corrupt)?).map_err(|_| corrupt())?,
        secret: WebhookSecret::new(text("secret").ok_or_else(corrupt)?),
        previous_secret,
        created_at: Timestamp(number("created_at").ok_or_else(corrupt)?),
    })
}

fn webhooks_from(item: &Item) -> Result<Webhooks, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhooks: {what}"));
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt("version"))?;
    let endpoints = item
        .get("endpoints")
        .and_then(|v| v.as_l().ok())
        .ok_or_else(|| corrupt("endpoints"))?
        .iter()
        .map(endpoint_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Webhooks { version, endpoints })
}

#[async_trait]
impl WebhookRegistry for DynamoStore {
    async fn webhooks(&self, scope: &WebhookScope) -> Result<Webhooks, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(scope_key(scope)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("", &e))?;
        match output.item() {
            Some(item) => webhooks_from(item),
            None => Ok(Webhooks::default()),
        }
    }

    // An UpdateItem, like the tenant registry's.
    async fn replace_webhooks(
        &self,
        scope: &WebhookScope,
        webhooks: &Webhooks,
    ) -> Result<Option<Webhooks>, StoreError> {
        let next = webhooks.version + 1;
        let endpoints = AttributeValue::L(webhooks.endpoints.iter().map(endpoint_value).collect());
        let write = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(scope_key(scope)))
            .update_expression("SET endpoints = :endpoints, version = :next")
            .expression_attribute_values(":endpoints", endpoints)
            .expression_attribute_values(":next", AttributeValue::N(next.to_string()));
        let write = if webhooks.version == 0 {
            write.condition_expression("attribute_not_exists(pk)")
        } else {
            write
                .condition_expression("version = :read")
                .expression_attribute_values(
                    ":read",
                    AttributeValue::N(webhooks.version.to_string()),
                )
        };
        match write.send().await {
            Ok(_) => Ok(Some(Webhooks {
                version: next,
                endpoints: webhooks.endpoints.clone(),
            })),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(None),
                _ => Err(unavailable("", &err)),
            },
        }
    }
}
