//! The RD Station connection service's library, laid out by the direction of its
//! dependencies:
//!
//! - [`domain`]: connections, sessions, tokens and the rules about them.
//! - [`ports`]: the roles the services need from the outside world.
//! - [`services`]: the connect flow, the refresh protocol and the scheduled run,
//!   written against the domain and the ports only.
//! - [`inbound`]: how the world calls the services (HTTP routes, the schedule).
//! - [`outbound`]: what fills the ports (DynamoDB, SQS, Secrets Manager,
//!   EventBridge, RD Station, and in-memory stand-ins).
//! - [`assembly`]: the one place that wires them together for every host.
//!
//! Each Lambda's `main.rs` asks [`assembly`] for what it serves and hands it to the
//! Lambda runtime; `make run` and the tests assemble the same way.
#![warn(missing_docs)]

pub mod assembly;
pub mod clock;
pub mod config;
pub mod domain;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod ports;
pub mod secret;
pub mod services;
pub mod telemetry;
