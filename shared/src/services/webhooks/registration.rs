//! Registering, listing, removing endpoints and rotating their secrets.

use std::sync::Arc;

use crate::clock::Clock;
use crate::domain::{
    EndpointRefused, MAX_WEBHOOKS_PER_SCOPE, Webhook, WebhookScope, Webhooks, address_allowed,
    endpoint_url,
};
use crate::ports::{HostResolver, StoreError, WebhookRegistry};

/// How many times a change re-reads and retries when another write came first.
const WRITE_ATTEMPTS: usize = 3;

/// Why an endpoint change was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL may not be an endpoint.
    #[error(transparent)]
    Refused(#[from] EndpointRefused),
    /// The scope has [`MAX_WEBHOOKS_PER_SCOPE`] endpoints already.
    #[error("at most {MAX_WEBHOOKS_PER_SCOPE} endpoints; remove one first")]
    TooMany,
    /// No endpoint of that id in the scope.
    #[error("no such webhook")]
    NotFound,
    /// Other writes kept coming first.
    #[error("the endpoints kept changing meanwhile; try again")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Manages endpoints. Cheap to clone.
#[derive(Clone)]
pub struct WebhookService {
    /// Where endpoints are kept.
    pub registry: Arc<dyn WebhookRegistry>,
    /// Resolves an endpoint's host name when it is registered.
    pub resolver: Arc<dyn HostResolver>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Whether loopback endpoints are allowed (`make run`, the tests).
    pub allow_loopback: bool,
}

impl WebhookService {
    /// Registers an endpoint at `raw_url` for `scope`; the answer carries its
    /// secret, which is shown to the caller this once.
    ///
    /// # Errors
    /// [`WebhookError`]; nothing is written then.
    pub async fn register(
        &self,
        scope: &WebhookScope,
        raw_url: &str,
    ) -> Result<Webhook, WebhookError> {
        let url = endpoint_url(raw_url, self.allow_loopback)?;
        self.check_resolution(&url).await?;
        let added = Webhook::new(url, self.clock.now());
        self.change(scope, |endpoints| {
            if endpoints.len() >= MAX_WEBHOOKS_PER_SCOPE {
                return Err(WebhookError::TooMany);
            }
            endpoints.push(added.clone());
            Ok(())
        })
        .await?;
        Ok(added)
    }

    /// The scope's endpoints.
    ///
    /// # Errors
    /// [`WebhookError::Store`].
    pub async fn list(&self, scope: &WebhookScope) -> Result<Vec<Webhook>, WebhookError> {
        Ok(self.registry.webhooks(scope).await?.endpoints)
    }

    /// Removes endpoint `id` of `scope`: nothing more is delivered to it.
    ///
    /// # Errors
    /// [`WebhookError::NotFound`], or the store's.
    pub async fn remove(&self, scope: &WebhookScope, id: &str) -> Result<(), WebhookError> {
        self.change(scope, |endpoints| {
            let before = endpoints.len();
            endpoints.retain(|w| w.id != id);
            if endpoints.len() == before {
                return Err(WebhookError::NotFound);
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Gives endpoint `id` a new secret (shown this once); the old one keeps
    /// signing beside it for a day.
    ///
    /// # Errors
    /// [`WebhookError::NotFound`], or the store's.
    pub async fn rotate(&self, scope: &WebhookScope, id: &str) -> Result<Webhook, WebhookError> {
        let now = self.clock.now();
        let stored = self
            .change(scope, |endpoints| {
                let endpoint = endpoints
                    .iter_mut()
                    .find(|w| w.id == id)
                    .ok_or(WebhookError::NotFound)?;
                *endpoint = endpoint.rotated(now);
                Ok(())
            })
            .await?;
        stored
            .endpoints
            .into_iter()
            .find(|w| w.id == id)
            .ok_or(WebhookError::NotFound)
    }

    /// Refuses a name that resolves to an address deliveries may not reach.
    async fn check_resolution(&self, url: &url::Url) -> Result<(), EndpointRefused> {
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let addresses = self
            .resolver
            .resolve(host, port)
            .await
            .map_err(|_| EndpointRefused::Unresolvable)?;
        if addresses.is_empty() {
            return Err(EndpointRefused::Unresolvable);
        }
        if addresses
            .iter()
            .any(|ip| !address_allowed(*ip, self.allow_loopback))
        {
            return Err(EndpointRefused::PrivateAddress);
        }
        Ok(())
    }

    /// Applies `edit` to the scope's endpoints and writes them at the version
    /// read, re-reading when another write came first.
    async fn change(
        &self,
        scope: &WebhookScope,
        edit: impl Fn(&mut Vec<Webhook>) -> Result<(), WebhookError>,
    ) -> Result<Webhooks, WebhookError> {
        for _ in 0..WRITE_ATTEMPTS {
            let mut webhooks = self.registry.webhooks(scope).await?;
            edit(&mut webhooks.endpoints)?;
            if let Some(stored) = self.registry.replace_webhooks(scope, &webhooks).await? {
                return Ok(stored);
            }
        }
        Err(WebhookError::Busy)
    }
}
