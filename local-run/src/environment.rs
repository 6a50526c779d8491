//! What a local run talks to, chosen from the environment: the RD Station sandbox
//! or a real RD-compatible server, and the in-memory store or DynamoDB (moto or
//! real). Every choice is described for the banner; no secret is.

use std::sync::Arc;

use anyhow::{Context, bail};
use connector::assembly::{Parts, s3_client, sdk_config};
use connector::config::{DEFAULT_CRM_AUTHORIZE_URL, DEFAULT_MARKETING_AUTHORIZE_URL};
use connector::outbound::credentials::CredentialSet;
use connector::outbound::dynamodb::{DynamoStore, schema};
use connector::outbound::memory::MemoryRescueStore;
use connector::outbound::rdstation::RdStationEndpoints;
use connector::outbound::rescue_store::S3RescueStore;
use connector::ports::RescueStore;
use connector::secret::ClientSecret;
use rd_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use tokio::net::TcpListener;
use url::Url;

/// Where RD Station is, and the app credentials to present there.
pub struct RdTarget {
    /// RD's endpoints.
    pub endpoints: RdStationEndpoints,
    /// The app credentials per product.
    pub credentials: CredentialSet,
    /// The sandbox, when the run uses it: held so it serves as long as the run.
    pub _sandbox: Option<RunningSandbox>,
    /// One line for the banner.
    pub described: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn url_var(name: &str, default: &str) -> anyhow::Result<Url> {
    let value = var(name).unwrap_or_else(|| default.to_owned());
    Url::parse(&value).with_context(|| format!("{name} is not a URL"))
}

/// One product's app credentials from `RDSTATION_<PRODUCT>_CLIENT_ID` and
/// `..._CLIENT_SECRET`; both or neither.
fn app_credentials(product: &str) -> anyhow::Result<Option<(String, ClientSecret)>> {
    let id_name = format!("RDSTATION_{product}_CLIENT_ID");
    let secret_name = format!("RDSTATION_{product}_CLIENT_SECRET");
    match (var(&id_name), var(&secret_name)) {
        (Some(id), Some(secret)) => Ok(Some((id, ClientSecret::new(secret)))),
        (None, None) => Ok(None),
        _ => bail!("set both {id_name} and {secret_name}, or neither"),
    }
}

/// The sandbox on `sandbox_listener`, expecting `redirect_uri` — unless
/// `RDSTATION_API_URL` names a real RD Station (or another RD-compatible server):
/// then its consent pages (`RDSTATION_MARKETING_AUTHORIZE_URL`,
/// `RDSTATION_CRM_AUTHORIZE_URL`, RD's by default) and the app credentials from
/// `RDSTATION_{MARKETING,CRM}_CLIENT_{ID,SECRET}`.
///
/// # Errors
/// A malformed URL, half a credential pair, no credentials for a real server, or a
/// sandbox that cannot start.
pub fn rd_target(sandbox_listener: TcpListener, redirect_uri: &str) -> anyhow::Result<RdTarget> {
    if let Some(api) = var("RDSTATION_API_URL") {
        let api_base = Url::parse(&api).context("RDSTATION_API_URL is not a URL")?;
        let marketing = app_credentials("MARKETING")?;
        let crm = app_credentials("CRM")?;
        if marketing.is_none() && crm.is_none() {
            bail!(
                "RDSTATION_API_URL is set: also set RDSTATION_MARKETING_CLIENT_ID/_SECRET or RDSTATION_CRM_CLIENT_ID/_SECRET (your RD Station app's)"
            );
        }
        let products = [("Marketing", marketing.is_some()), ("CRM", crm.is_some())]
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" and ");
        // The listener is not needed: no sandbox.
        drop(sandbox_listener);
        return Ok(RdTarget {
            described: format!(
                "{} (app credentials for {products}; register {redirect_uri} as the app's callback URL)",
                api_base.as_str().trim_end_matches('/')
            ),
            endpoints: RdStationEndpoints {
                api_base,
                marketing_authorize: url_var(
                    "RDSTATION_MARKETING_AUTHORIZE_URL",
                    DEFAULT_MARKETING_AUTHORIZE_URL,
                )?,
                crm_authorize: url_var("RDSTATION_CRM_AUTHORIZE_URL", DEFAULT_CRM_AUTHORIZE_URL)?,
            },
            credentials: CredentialSet::new(marketing, crm),
            _sandbox: None,
        });
    }
    let mut config = SandboxConfig::default();
    config.marketing.redirect_uri = Some(redirect_uri.to_owned());
    config.crm.redirect_uri = Some(redirect_uri.to_owned());
    let credentials = CredentialSet::new(
        Some((
            config.marketing.client_id.clone(),
            ClientSecret::new(config.marketing.client_secret.clone()),
        )),
        Some((
            config.crm.client_id.clone(),
            ClientSecret::new(config.crm.client_secret.clone()),
        )),
    );
    let sandbox = Sandbox::new(config).spawn_on(sandbox_listener)?;
    Ok(RdTarget {
        described: format!(
            "the RD Station sandbox at {} (control: /_sandbox/stats)",
            sandbox.base_url.as_str().trim_end_matches('/')
        ),
        endpoints: RdStationEndpoints {
            api_base: sandbox.base_url.clone(),
            marketing_authorize: sandbox.url("/auth/dialog"),
            crm_authorize: sandbox.url("/oauth/authorize"),
        },
        credentials,
        _sandbox: Some(sandbox),
    })
}

/// The store and rescue store: in memory, unless `CONNECTIONS_TABLE` names a
/// DynamoDB table (reached through the standard AWS configuration:
/// `AWS_ENDPOINT_URL` for moto, credentials and region for AWS; created if
/// missing), and `RESCUE_BUCKET` an S3 bucket. Returns the parts and a line for
/// the banner.
///
/// # Errors
/// A table that cannot be described or created.
pub async fn parts(credentials: CredentialSet) -> anyhow::Result<(Parts, String)> {
    let Some(table) = var("CONNECTIONS_TABLE") else {
        return Ok((
            Parts::in_memory(credentials),
            "in memory (gone when the run stops; set CONNECTIONS_TABLE for DynamoDB)".to_owned(),
        ));
    };
    let sdk = sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let created = ensure_table(&client, &table).await?;
    let store = Arc::new(DynamoStore::new(client, &table));
    let (rescues, where_rescued): (Arc<dyn RescueStore>, String) = match var("RESCUE_BUCKET") {
        Some(bucket) => (
            Arc::new(S3RescueStore::new(s3_client(&sdk), &bucket)),
            format!("S3 bucket {bucket}"),
        ),
        None => (
            Arc::new(MemoryRescueStore::default()),
            "in memory".to_owned(),
        ),
    };
    let endpoint = sdk
        .endpoint_url()
        .map_or_else(|| "AWS".to_owned(), str::to_owned);
    let parts = Parts::on_one_store(store, rescues, credentials);
    let created = if created { ", created now" } else { "" };
    Ok((
        parts,
        format!("DynamoDB table {table} on {endpoint}{created}; rescued pairs {where_rescued}"),
    ))
}

/// Creates `table` with the service's schema unless it exists; says whether it did.
async fn ensure_table(client: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<bool> {
    match client.describe_table().table_name(table).send().await {
        Ok(_) => Ok(false),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            schema::create_table(client, table).await?;
            Ok(true)
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("cannot reach DynamoDB table {table}")))
        }
    }
}
