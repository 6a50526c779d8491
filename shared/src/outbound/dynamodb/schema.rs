//! The connections table's key schema, defined once. `template.yaml` declares the
//! same table (a test compares the two), and tests and local runs create their
//! tables with [`create_table`].

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

/// Partition key: the item's kind and id, e.g. `CONN#acme:crm` or `SESSION#…`.
pub const PARTITION_KEY: &str = "pk";
/// Sort key: the item's role within its partition, e.g. `CONN`.
pub const SORT_KEY: &str = "sk";
/// Epoch-seconds attribute after which DynamoDB may delete an item (sessions).
pub const TTL_ATTRIBUTE: &str = "ttl";
/// The sparse global secondary index of refreshable connections by due time.
pub const DUE_INDEX: &str = "due-index";
/// Due-index partition key: `DUE#<shard>`.
pub const DUE_SHARD: &str = "due_shard";
/// Due-index sort key: epoch seconds when the item is due.
pub const DUE_AT: &str = "due_at";
/// The sparse global secondary index of connections that need a person.
pub const ATTENTION_INDEX: &str = "attention-index";
/// Attention-index partition key: the status (`needs_reauth`, `possibly_lost`),
/// its shard and tenant (see `items::attention_partition`); only connections in
/// those states carry it.
pub const ATTENTION: &str = "attention";
/// Partitions of the attention index per status and tenant, so that many
/// connections needing a person are not one hot partition. Never lower it: the
/// connections in a shard past the new count would no longer be listed.
pub const ATTENTION_SHARDS: u32 = 8;

/// The index every connection is listed by: partition [`KIND`] (`connection`
/// for connection items; sessions and states carry other kinds), sort
/// [`LIST_SORT`]. A Query on it is what `GET /connections` pages through.
pub const LIST_INDEX: &str = "list-index";
/// List-index partition key: the item's kind.
pub const KIND: &str = "kind";
/// List-index sort key: the connection id.
pub const LIST_SORT: &str = "connection_id";

/// Why the table could not be created.
#[derive(Debug, thiserror::Error)]
#[error("could not create table {table}: {message}")]
pub struct CreateTableError {
    /// The table name.
    pub table: String,
    /// What DynamoDB said.
    pub message: String,
}

/// Creates the connections table (on-demand billing) with its due, attention
/// and list indexes and TTL attribute.
///
/// # Errors
/// [`CreateTableError`] if DynamoDB refuses either call.
pub async fn create_table(client: &Client, table: &str) -> Result<(), CreateTableError> {
    let fail = |message: String| CreateTableError {
        table: table.to_owned(),
        message,
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|e| fail(e.to_string()))
    };
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(|e| fail(e.to_string()))
    };
    let due_index = GlobalSecondaryIndex::builder()
        .index_name(DUE_INDEX)
        .key_schema(key(DUE_SHARD, KeyType::Hash)?)
        .key_schema(key(DUE_AT, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let attention_index = GlobalSecondaryIndex::builder()
        .index_name(ATTENTION_INDEX)
        .key_schema(key(ATTENTION, KeyType::Hash)?)
        .key_schema(key(PARTITION_KEY, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let list_index = GlobalSecondaryIndex::builder()
        .index_name(LIST_INDEX)
        .key_schema(key(KIND, KeyType::Hash)?)
        .key_schema(key(LIST_SORT, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(|e| fail(e.to_string()))?;
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key(SORT_KEY, KeyType::Range)?)
        .attribute_definitions(attribute(PARTITION_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(SORT_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(DUE_SHARD, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(DUE_AT, ScalarAttributeType::N)?)
        .attribute_definitions(attribute(ATTENTION, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(KIND, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(LIST_SORT, ScalarAttributeType::S)?)
        .global_secondary_indexes(due_index)
        .global_secondary_indexes(attention_index)
        .global_secondary_indexes(list_index)
        .send()
        .await
        .map_err(|e| fail(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string()))?;
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name(TTL_ATTRIBUTE)
        .enabled(true)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|e| fail(aws_sdk_dynamodb::error::DisplayErrorContext(&e).to_string()))?;
    Ok(())
}
