//! Posting webhook deliveries over HTTPS, and resolving endpoint names.
//!
//! The client resolves each endpoint's name itself and connects only when every
//! address it resolves to is one deliveries may reach
//! ([`crate::domain::address_allowed`]): the check and the connection use the
//! same answer, so a name that changes what it resolves to between the two
//! (DNS rebinding) reaches nothing private. Redirects are not followed (one
//! could lead anywhere), and only https is sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::address_allowed;
use crate::ports::{DeliveryError, HostResolver, ResolveError, SignedDelivery, WebhookTransport};

/// How long one delivery may take, connection included.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The operating system's resolver.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

#[async_trait]
impl HostResolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, ResolveError> {
        tokio::net::lookup_host((host, port))
            .await
            .map(|addresses| addresses.map(|a| a.ip()).collect())
            .map_err(|e| ResolveError(e.to_string()))
    }
}

/// A name that leads to an address deliveries may not reach.
#[derive(Debug, thiserror::Error)]
#[error("the name resolves to an address deliveries may not reach")]
struct AddressRefused;

/// reqwest's resolver, refusing a name unless every address it resolves to is
/// allowed.
struct CheckedResolver {
    allow_loopback: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addresses.is_empty()
                || addresses
                    .iter()
                    .any(|a| !address_allowed(a.ip(), allow_loopback))
            {
                return Err(Box::new(AddressRefused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// Posts deliveries with reqwest.
#[derive(Clone, Debug)]
pub struct HttpsWebhookTransport {
    client: reqwest::Client,
}

impl HttpsWebhookTransport {
    /// A transport that trusts the platform's roots and `extra_roots` (PEM; a
    /// test's own CA), reaching loopback only when `allow_loopback`.
    ///
    /// # Errors
    /// When the TLS configuration cannot be built (a bad certificate).
    pub fn new(
        allow_loopback: bool,
        extra_roots_pem: Option<&[u8]>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver { allow_loopback }))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would be resolved and checked instead of the endpoint.
            .no_proxy()
            .https_only(true)
            .timeout(DELIVERY_TIMEOUT)
            .user_agent("rdstation-connections-webhooks");
        if let Some(pem) = extra_roots_pem {
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        Ok(Self {
            client: builder.build()?,
        })
    }
}

#[async_trait]
impl WebhookTransport for HttpsWebhookTransport {
    async fn post(&self, delivery: &SignedDelivery) -> Result<(), DeliveryError> {
        let mut request = self.client.post(delivery.url.clone());
        for (name, value) in &delivery.headers {
            request = request.header(*name, value);
        }
        let answer = request
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| {
                if refused(&e) {
                    DeliveryError::Refused
                } else {
                    // The URL is left out: a receiver may keep a secret in its query.
                    DeliveryError::Unreachable(e.without_url().to_string())
                }
            })?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(status.as_u16()))
        }
    }
}

/// Whether the resolver refused the endpoint's addresses.
fn refused(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<AddressRefused>() {
            return true;
        }
        source = e.source();
    }
    false
}
