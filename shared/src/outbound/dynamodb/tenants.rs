//! The tenant registry on the connections table: one item (`TENANTS`,
//! `REGISTRY`) holding every tenant and its principals, replaced only at the
//! version read. It carries no `kind`, so no index lists it.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::schema::{PARTITION_KEY, SORT_KEY};
use crate::domain::{PrincipalPattern, TenantId, Tenants};
use crate::outbound::aws_error::unavailable;
use crate::ports::{StoreError, TenantRegistry};

type Item = HashMap<String, AttributeValue>;

fn registry_key() -> Item {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S("TENANTS".to_owned()),
        ),
        (
            SORT_KEY.to_owned(),
            AttributeValue::S("REGISTRY".to_owned()),
        ),
    ])
}

fn registry_item(tenants: &Tenants, version: u64) -> Item {
    let entries = tenants
        .iter()
        .map(|(tenant, principals)| {
            let list = principals
                .iter()
                .map(|p| AttributeValue::S(p.as_str().to_owned()))
                .collect();
            (tenant.as_str().to_owned(), AttributeValue::L(list))
        })
        .collect();
    let mut item = registry_key();
    item.insert("tenants".to_owned(), AttributeValue::M(entries));
    item.insert("version".to_owned(), AttributeValue::N(version.to_string()));
    item
}

fn tenants_from_item(item: &Item) -> Result<Tenants, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("tenant registry: {what}"));
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt("version"))?;
    let entries = item
        .get("tenants")
        .and_then(|v| v.as_m().ok())
        .ok_or_else(|| corrupt("tenants"))?;
    let mut parsed = Vec::with_capacity(entries.len());
    for (name, principals) in entries {
        let tenant = TenantId::parse(name).map_err(|_| corrupt("a tenant's name"))?;
        let principals = principals
            .as_l()
            .map_err(|_| corrupt("a tenant's principals"))?
            .iter()
            .map(|p| {
                p.as_s()
                    .ok()
                    .and_then(|p| PrincipalPattern::parse(p).ok())
                    .ok_or_else(|| corrupt("a principal"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        parsed.push((tenant, principals));
    }
    Ok(Tenants::from_entries(version, parsed))
}

#[async_trait]
impl TenantRegistry for DynamoStore {
    async fn tenants(&self) -> Result<Tenants, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(registry_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("", &e))?;
        match output.item() {
            Some(item) => tenants_from_item(item),
            None => Ok(Tenants::default()),
        }
    }

    // An UpdateItem, not a PutItem: the functions' roles update items and
    // never put them (see template.yaml).
    async fn replace_tenants(&self, tenants: &Tenants) -> Result<Option<Tenants>, StoreError> {
        let next = tenants.version + 1;
        let mut item = registry_item(tenants, next);
        let condition = if tenants.version == 0 {
            "attribute_not_exists(pk)"
        } else {
            "version = :read"
        };
        let write = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(registry_key()))
            .update_expression("SET tenants = :tenants, version = :next")
            .condition_expression(condition)
            .expression_attribute_values(
                ":tenants",
                item.remove("tenants").unwrap_or(AttributeValue::Null(true)),
            )
            .expression_attribute_values(":next", AttributeValue::N(next.to_string()));
        let write = if tenants.version == 0 {
            write
        } else {
            write.expression_attribute_values(
                ":read",
                AttributeValue::N(tenants.version.to_string()),
            )
        };
        match write.send().await {
            Ok(_) => Ok(Some(tenants.at_version(next))),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(None),
                _ => Err(unavailable("", &err)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_reads_back_as_written() {
        let tenants = Tenants::default()
            .with(
                TenantId::parse("acme").expect("valid"),
                vec![PrincipalPattern::parse("arn:aws:iam::1:user/a").expect("valid")],
            )
            .and_then(|t| t.with(TenantId::parse("quiet").expect("valid"), Vec::new()))
            .expect("valid");
        let read = tenants_from_item(&registry_item(&tenants, 3)).expect("readable");
        assert_eq!(read, tenants.at_version(3));
    }
}
