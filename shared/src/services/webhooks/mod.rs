//! Webhooks: endpoints a tenant (or the deployment) registers, and the signed
//! deliveries of connection events to them.
//!
//! An event reaches the delivery queue (EventBridge → SQS in AWS), where it is
//! fanned out into one delivery per endpoint of its tenant and of the
//! deployment; each delivery is then posted, signed the Standard Webhooks way,
//! and retried on its own with backoff until it lands or the queue gives it to
//! its dead-letter queue. An endpoint must be https and lead to a public
//! address, when it is registered and again at every delivery. A delivery
//! carries the event's detail (ids, product, reason, tags): never a token.

mod delivery;
mod registration;
pub mod signature;

pub use delivery::{
    DeliverError, Delivered, FanOutError, PublishedEvent, WebhookDeliverer, retry_delay,
};
pub use registration::{WebhookError, WebhookService};

/// How webhooks are registered and delivered.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `WEBHOOK_ALLOW_LOOPBACK`: endpoints on loopback are allowed (`make run`,
    /// the tests); off in a deployment.
    pub allow_loopback: bool,
    /// `WEBHOOK_EXTRA_CA_FILE`'s PEM: roots trusted beside the platform's (a
    /// test's own CA).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// `WEBHOOK_RETRY_BASE_SECONDS`: the first retry's delay (doubled for each
    /// further one, at most 15 minutes).
    pub retry_base: std::time::Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            extra_roots_pem: None,
            retry_base: std::time::Duration::from_secs(30),
        }
    }
}
