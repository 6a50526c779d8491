//! RD Station app credentials: from one Secrets Manager secret in AWS, or a fixed
//! set for local runs.
//!
//! The secret's `SecretString` is
//! `{"marketing":{"client_id":"…","client_secret":"…"},"crm":{…}}`; either product
//! may be absent.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::domain::Product;
use crate::ports::{ClientCredentials, CredentialSource, CredentialsError};
use crate::secret::ClientSecret;

/// The parsed secret: credentials per product.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CredentialSet {
    marketing: Option<AppCredentials>,
    crm: Option<AppCredentials>,
}

#[derive(Clone, Debug, Deserialize)]
struct AppCredentials {
    client_id: String,
    client_secret: ClientSecret,
}

impl CredentialSet {
    /// Parses the secret's JSON.
    ///
    /// # Errors
    /// [`CredentialsError::Malformed`] naming what is wrong, never quoting the value.
    pub fn from_json(json: &str) -> Result<Self, CredentialsError> {
        // serde_json's own message can quote the offending value, so only its
        // position is kept.
        serde_json::from_str(json).map_err(|e| {
            CredentialsError::Malformed(format!(
                "expected {{\"marketing\"|\"crm\": {{\"client_id\", \"client_secret\"}}}} (error at line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }

    /// Credentials for both products, e.g. for a local run against the sandbox.
    pub fn new(
        marketing: Option<(String, ClientSecret)>,
        crm: Option<(String, ClientSecret)>,
    ) -> Self {
        let app = |(client_id, client_secret)| AppCredentials {
            client_id,
            client_secret,
        };
        Self {
            marketing: marketing.map(app),
            crm: crm.map(app),
        }
    }

    fn get(&self, product: Product) -> Result<ClientCredentials, CredentialsError> {
        let app = match product {
            Product::Marketing => &self.marketing,
            Product::Crm => &self.crm,
        };
        app.as_ref()
            .map(|a| ClientCredentials {
                client_id: a.client_id.clone(),
                client_secret: a.client_secret.clone(),
            })
            .ok_or(CredentialsError::NotConfigured(product))
    }
}

/// A fixed credential set (local runs and tests).
#[derive(Clone, Debug)]
pub struct StaticCredentials(pub CredentialSet);

#[async_trait]
impl CredentialSource for StaticCredentials {
    async fn credentials(&self, product: Product) -> Result<ClientCredentials, CredentialsError> {
        self.0.get(product)
    }

    async fn reload(&self) -> Result<(), CredentialsError> {
        Ok(())
    }
}

/// Credentials read from Secrets Manager on first use, cached for the life of the
/// Lambda environment, re-read on [`CredentialSource::reload`].
#[derive(Debug)]
pub struct SecretsManagerCredentials {
    client: Client,
    secret_id: String,
    cache: Mutex<Option<CredentialSet>>,
}

impl SecretsManagerCredentials {
    /// Credentials from the secret `secret_id` (name or ARN).
    pub fn new(client: Client, secret_id: impl Into<String>) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
            cache: Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<CredentialSet, CredentialsError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                CredentialsError::Unavailable(match e.code() {
                    Some(code) => format!("{code}: {}", e.message().unwrap_or("no message")),
                    None => DisplayErrorContext(&e).to_string(),
                })
            })?;
        let json = output
            .secret_string()
            .ok_or_else(|| CredentialsError::Malformed("secret has no SecretString".to_owned()))?;
        CredentialSet::from_json(json)
    }
}

#[async_trait]
impl CredentialSource for SecretsManagerCredentials {
    async fn credentials(&self, product: Product) -> Result<ClientCredentials, CredentialsError> {
        // Holding the lock across the fetch makes concurrent first calls share one read.
        let mut cache = self.cache.lock().await;
        if cache.is_none() {
            *cache = Some(self.fetch().await?);
        }
        cache
            .as_ref()
            .map_or(Err(CredentialsError::NotConfigured(product)), |set| {
                set.get(product)
            })
    }

    async fn reload(&self) -> Result<(), CredentialsError> {
        let fresh = self.fetch().await?;
        *self.cache.lock().await = Some(fresh);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    #[test]
    fn parses_either_product_alone() {
        let set =
            CredentialSet::from_json(r#"{"crm":{"client_id":"id","client_secret":"s3cr3t"}}"#)
                .expect("parses");
        let crm = set.get(Product::Crm).expect("crm present");
        assert_eq!(crm.client_id, "id");
        assert_eq!(crm.client_secret.expose_secret(), "s3cr3t");
        assert!(matches!(
            set.get(Product::Marketing),
            Err(CredentialsError::NotConfigured(Product::Marketing))
        ));
    }

    #[test]
    fn malformed_secret_error_does_not_quote_the_value() {
        let err = CredentialSet::from_json(r#"{"crm":{"client_id":"id","client_secret":42}}"#)
            .expect_err("wrong type");
        assert!(!err.to_string().contains("42"), "{err}");
        let err = CredentialSet::from_json("s3cr3t-not-json").expect_err("not json");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
