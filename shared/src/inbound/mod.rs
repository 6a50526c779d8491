//! Inbound adapters: how the world calls the services (HTTP routes behind API
//! Gateway, the EventBridge schedule).

pub mod apigw;
pub mod http;
pub mod schedule;
pub mod webhook_queue;
