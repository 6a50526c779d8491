//! Implementations of the ports in [`crate::ports`], and the RD Station client.

pub mod aws_error;
pub mod credentials;
pub mod delivery_queue;
pub mod dynamodb;
pub mod events;
pub mod legacy_rescue_queue;
pub mod memory;
pub mod rdstation;
pub mod refresh_work_queue;
pub mod rescue_body;
pub mod rescue_store;
pub mod webhook_client;
