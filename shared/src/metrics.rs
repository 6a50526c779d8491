//! CloudWatch metrics as Embedded Metric Format (EMF) lines: one JSON document
//! on stdout, which Lambda's log pipeline turns into metrics with no API call and
//! no extra latency. Printed only inside Lambda (`AWS_LAMBDA_FUNCTION_NAME` is
//! set), so `make run` and the tests print no metric lines.
//!
//! The namespaces and names here are what the template's dashboard and alarms
//! read; a test holds the template to them.

use std::sync::LazyLock;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The refresher's run summary.
pub const REFRESHER_NAMESPACE: &str = "RdStationConnections/Refresher";
/// One document per proxied request.
pub const PROXY_NAMESPACE: &str = "RdStationConnections/Proxy";
/// One document per call to RD's token endpoint.
pub const TOKEN_CALL_NAMESPACE: &str = "RdStationConnections/TokenCalls";

/// A metric's unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::Seconds => "Seconds",
        }
    }
}

/// One value of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The metric's name.
    pub name: &'static str,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
}

impl Metric {
    /// A count.
    pub fn count(name: &'static str, value: u64) -> Self {
        Self {
            name,
            value: value as f64,
            unit: Unit::Count,
        }
    }

    /// A duration, in milliseconds.
    pub fn millis(name: &'static str, value: Duration) -> Self {
        Self {
            name,
            value: value.as_secs_f64() * 1000.0,
            unit: Unit::Milliseconds,
        }
    }
}

/// The EMF document for `metrics` in `namespace`, without dimensions (each
/// metric is the deployment's total).
pub fn document(namespace: &str, timestamp_ms: i64, metrics: &[Metric]) -> Value {
    let mut doc = Map::new();
    for metric in metrics {
        doc.insert(metric.name.to_owned(), json!(metric.value));
    }
    doc.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[]],
                "Metrics": metrics
                    .iter()
                    .map(|m| json!({"Name": m.name, "Unit": m.unit.name()}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    Value::Object(doc)
}

static IN_LAMBDA: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some());

/// Prints `metrics` as one EMF line, inside Lambda only.
pub fn emit(namespace: &str, metrics: &[Metric]) {
    if *IN_LAMBDA {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        println!("{}", document(namespace, now_ms, metrics));
    }
}

/// What one proxied request measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxiedRequest {
    /// From the request's arrival to its answer.
    pub latency: Duration,
    /// RD's part of it, when the request was forwarded.
    pub rd_latency: Option<Duration>,
    /// Whether our budget answered 429 (nothing reached RD).
    pub throttled_by_us: bool,
    /// Whether RD answered 429.
    pub throttled_by_rd: bool,
    /// Whether the answer is a 5xx of ours (not RD's, passed through).
    pub failed: bool,
}

impl ProxiedRequest {
    /// The request's metrics: `requests`, `latency_ms`, `rd_latency_ms` (when
    /// forwarded), `throttled_by_us`, `throttled_by_rd`, `failed`.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut metrics = vec![
            Metric::count("requests", 1),
            Metric::millis("latency_ms", self.latency),
            Metric::count("throttled_by_us", u64::from(self.throttled_by_us)),
            Metric::count("throttled_by_rd", u64::from(self.throttled_by_rd)),
            Metric::count("failed", u64::from(self.failed)),
        ];
        if let Some(rd) = self.rd_latency {
            metrics.push(Metric::millis("rd_latency_ms", rd));
        }
        metrics
    }
}

/// A call to RD's token endpoint: `token_calls`, `token_call_ms` and
/// `token_call_failed` (no answer, or an answer that is not a token).
pub fn token_call(took: Duration, failed: bool) -> Vec<Metric> {
    vec![
        Metric::count("token_calls", 1),
        Metric::millis("token_call_ms", took),
        Metric::count("token_call_failed", u64::from(failed)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_declares_each_value_it_carries() {
        let doc = document(
            PROXY_NAMESPACE,
            1_795_435_200_000,
            &ProxiedRequest {
                latency: Duration::from_millis(120),
                rd_latency: Some(Duration::from_millis(100)),
                throttled_by_us: false,
                throttled_by_rd: true,
                failed: false,
            }
            .metrics(),
        );
        let declared = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], PROXY_NAMESPACE);
        assert_eq!(declared["Dimensions"], json!([[]]));
        for metric in declared["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            assert!(doc[name].is_number(), "{name} has no value");
        }
        assert_eq!(doc["rd_latency_ms"], 100.0);
        assert_eq!(doc["throttled_by_rd"], 1.0);
        assert_eq!(doc["latency_ms"], 120.0);
    }
}
