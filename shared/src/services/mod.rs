//! Application services: what the service does, in terms of the domain and the
//! ports only. Inbound adapters call these; outbound adapters fill their ports.

pub mod caller_policy;
pub mod connect;
pub mod import;
pub mod listing;
pub mod proxy;
pub mod refresh_protocol;
pub mod scheduled_refresh;
pub mod tenancy;
pub mod webhooks;
