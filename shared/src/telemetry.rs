//! Logging for every host: the level and format Lambda's logging controls ask for,
//! with one guard. Other crates' TRACE events are never recorded: at TRACE the AWS
//! SDK logs every request and response body (each DynamoDB item with its tokens,
//! each secret value) and the runtimes log event payloads (a callback's code and
//! state, a browser's cookies), and no redaction can reach inside them. This
//! crate's own TRACE events carry no secret (secrets are types that cannot be
//! printed) and are kept.

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::prelude::*;

/// Whether an event or span may be recorded: anything but another crate's TRACE.
pub fn may_record(metadata: &Metadata<'_>) -> bool {
    *metadata.level() != Level::TRACE || metadata.target().starts_with(env!("CARGO_CRATE_NAME"))
}

/// The level asked for when `RUST_LOG` holds no directive: `AWS_LAMBDA_LOG_LEVEL`
/// (Lambda's `ApplicationLogLevel`), else INFO.
fn requested_level(lookup: impl Fn(&str) -> Option<String>) -> LevelFilter {
    lookup("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|| lookup("RUST_LOG"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(LevelFilter::INFO)
}

/// Installs the process's subscriber: JSON lines when `AWS_LAMBDA_LOG_FORMAT` is
/// `JSON` (as the template sets it), plain text otherwise; `RUST_LOG`'s
/// directives decide what is recorded when it holds any (the template sets it to
/// the `LogLevel` parameter, while Lambda's own filter stays at INFO or below so
/// that metric lines, which carry no level, pass it), else the requested level;
/// [`may_record`] guards it all.
pub fn init() {
    let lookup = |name: &str| std::env::var(name).ok();
    let filter = EnvFilter::builder()
        .with_default_directive(requested_level(lookup).into())
        .from_env_lossy();
    let json = lookup("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let format = tracing_subscriber::fmt::layer().with_target(false);
    let format = if json {
        format.without_time().json().boxed()
    } else {
        format.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(filter_fn(may_record))
        .with(format)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requested_level_follows_lambdas_controls_first() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(requested_level(env(&[])), LevelFilter::INFO);
        assert_eq!(
            requested_level(env(&[("RUST_LOG", "debug")])),
            LevelFilter::DEBUG
        );
        assert_eq!(
            requested_level(env(&[
                ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
                ("RUST_LOG", "warn")
            ])),
            LevelFilter::TRACE
        );
    }
}
