//! The RD Station connection service's library: domain types, ports, adapters
//! (DynamoDB, Secrets Manager, RD Station) and the HTTP routers the Lambdas serve.
//!
//! Each Lambda's `main.rs` builds its dependencies once and hands a router or
//! handler from here to the Lambda runtime; the same routers serve `make run`.
#![warn(missing_docs)]

pub mod adapters;
pub mod aws;
pub mod clock;
pub mod config;
pub mod connect;
pub mod domain;
pub mod http;
pub mod ports;
pub mod refresh;
pub mod refresher;
pub mod secret;
