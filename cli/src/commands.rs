//! Each command: the API call it makes and what it prints.

use http::Method;
use serde_json::{Value, json};
use url::form_urlencoded;

use crate::args::{
    CallCommand as Command, ConnectArgs, ConnectionsCommand, RateLimit, Tag, TenantsCommand,
    tags_object,
};
use crate::client::{Api, CallError};
use crate::output;

/// Runs `command` and returns what to print.
///
/// # Errors
/// [`CallError`] from the API.
pub async fn run(api: &Api, command: &Command, as_json: bool) -> Result<String, CallError> {
    let shown = |value: &Value, people: String| {
        if as_json {
            serde_json::to_string_pretty(value).unwrap_or_default()
        } else {
            people
        }
    };
    match command {
        Command::Connections(ConnectionsCommand::List {
            status,
            product,
            tags,
        }) => {
            let connections = list(
                api,
                status.map(|s| s.as_str()),
                product.map(|p| p.as_str()),
                tags,
            )
            .await?;
            let value = json!({ "connections": connections });
            Ok(shown(&value, output::table(&connections)))
        }
        Command::Connections(ConnectionsCommand::Show { id }) => {
            let value = api
                .call(Method::GET, &format!("/connections/{}", segment(id)), None)
                .await?;
            Ok(shown(&value, output::fields(&value)))
        }
        Command::Connections(ConnectionsCommand::Refresh { id }) => {
            let value = api
                .call(
                    Method::POST,
                    &format!("/connections/{}/refresh", segment(id)),
                    None,
                )
                .await?;
            // The outcome first: it is what the operator asked.
            Ok(shown(&value, output::outcome_then_connection(&value)))
        }
        Command::Connections(ConnectionsCommand::SetLimit { id, limit }) => {
            let limit = match limit {
                RateLimit::Default => Value::Null,
                RateLimit::PerMinute(n) => (*n).into(),
            };
            let value = api
                .call(
                    Method::PATCH,
                    &format!("/connections/{}", segment(id)),
                    Some(&json!({ "rate_limit_per_minute": limit })),
                )
                .await?;
            Ok(shown(&value, output::fields(&value)))
        }
        Command::Connections(ConnectionsCommand::SetTags { id, tags }) => {
            let value = api
                .call(
                    Method::PATCH,
                    &format!("/connections/{}", segment(id)),
                    Some(&json!({ "tags": tags_object(tags) })),
                )
                .await?;
            Ok(shown(&value, output::fields(&value)))
        }
        Command::Connections(ConnectionsCommand::Delete { id }) => {
            let value = api
                .call(
                    Method::DELETE,
                    &format!("/connections/{}", segment(id)),
                    None,
                )
                .await?;
            Ok(shown(&value, output::fields(&value)))
        }
        Command::Connect(args) => connect(api, args, as_json).await,
        Command::Reconnect { id, return_url } => {
            let body = match return_url {
                Some(url) => json!({"return_url": url.as_str()}),
                None => json!({}),
            };
            let path = format!("/connections/{}/reconnect", segment(id));
            let value = api.call(Method::POST, &path, Some(&body)).await?;
            Ok(connect_link(&value, as_json))
        }
        Command::Tenants(TenantsCommand::List) => {
            let value = api.call(Method::GET, "/tenants", None).await?;
            Ok(shown(&value, output::tenants(&value)))
        }
        Command::Tenants(TenantsCommand::Set { name, principals }) => {
            let value = api
                .call(
                    Method::PUT,
                    &format!("/tenants/{}", segment(name)),
                    Some(&json!({ "principals": principals })),
                )
                .await?;
            Ok(shown(
                &value,
                output::tenants(&json!({ "tenants": [value] })),
            ))
        }
        Command::Tenants(TenantsCommand::Remove { name }) => {
            let value = api
                .call(Method::DELETE, &format!("/tenants/{}", segment(name)), None)
                .await?;
            Ok(shown(&value, output::fields(&value)))
        }
    }
}

/// Every page of `GET /connections` with the filters.
async fn list(
    api: &Api,
    status: Option<&str>,
    product: Option<&str>,
    tags: &[Tag],
) -> Result<Vec<Value>, CallError> {
    let mut connections = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(status) = status {
            query.append_pair("status", status);
        }
        if let Some(product) = product {
            query.append_pair("product", product);
        }
        for tag in tags {
            query.append_pair("tag", &format!("{}={}", tag.key, tag.value));
        }
        if let Some(cursor) = &cursor {
            query.append_pair("cursor", cursor);
        }
        let query = query.finish();
        let path = if query.is_empty() {
            "/connections".to_owned()
        } else {
            format!("/connections?{query}")
        };
        let page = api.call(Method::GET, &path, None).await?;
        if let Some(items) = page["connections"].as_array() {
            connections.extend(items.iter().cloned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(connections),
        }
    }
}

async fn connect(api: &Api, args: &ConnectArgs, as_json: bool) -> Result<String, CallError> {
    let mut body = json!({
        "connection_id": args.id,
        "product": args.product.as_str(),
        "reconnect": args.reconnect,
    });
    if let Some(url) = &args.return_url {
        body["return_url"] = url.as_str().into();
    }
    if !args.tags.is_empty() {
        body["tags"] = tags_object(&args.tags);
    }
    let value = match api
        .call(Method::POST, "/connect/sessions", Some(&body))
        .await
    {
        // The API's message names its JSON field; say it with this CLI's flag.
        Err(CallError::Refused { status, code, .. }) if code == "connection_exists" => {
            return Err(CallError::Refused {
                status,
                code,
                message: format!(
                    "connection {} already exists; to replace it, run again with --reconnect",
                    args.id
                ),
            });
        }
        other => other?,
    };
    Ok(connect_link(&value, as_json))
}

/// What a new connect session is shown as: the service's JSON, or the link to
/// send and until when it works.
fn connect_link(value: &serde_json::Value, as_json: bool) -> String {
    if as_json {
        return serde_json::to_string_pretty(value).unwrap_or_default();
    }
    format!(
        "Send this link to the person who administers the RD Station account (valid until {}):\n{}",
        value["expires_at"].as_str().unwrap_or("?"),
        value["connect_url"].as_str().unwrap_or("?")
    )
}

/// A connection id as one path segment (ids may hold `:`; nothing may add a `/`).
fn segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
