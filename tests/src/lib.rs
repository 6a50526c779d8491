//! Helpers shared by the integration tests: moto-backed AWS clients, API Gateway
//! HTTP API v2 events, a log capture, and a `TestApp` that wires the callback
//! router to a fresh table, a fresh secret and a sandbox on loopback.

pub mod apigw;
pub mod app;
pub mod instrumented;
pub mod logs;
pub mod moto;
pub mod refresh_app;
