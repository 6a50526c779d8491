//! Captures every log line the test process writes, at TRACE for every crate
//! behind the deployed hosts' guard (`connector::telemetry::may_record`): more than
//! any deployed function records, so tests can check that no secret reaches a log.
//!
//! When `TEST_LOG_DIR` is set (as `make test` does), the lines also go to a file
//! there, and every `TestApp` records the secrets it saw issued, so that
//! `scripts/check-test-logs.py` can scan the whole suite's log at the end.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static CAPTURED: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn buffer() -> &'static Mutex<Vec<u8>> {
    CAPTURED.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

fn log_file() -> Option<&'static Mutex<std::fs::File>> {
    static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::var_os("TEST_LOG_DIR")?;
        let path = std::path::Path::new(&dir).join(format!("log-{}.txt", std::process::id()));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    })
    .as_ref()
}

/// Records `secrets` for the suite-wide scan, when `TEST_LOG_DIR` is set.
pub fn record_secrets_for_suite_scan(secrets: &[String]) {
    let Some(dir) = std::env::var_os("TEST_LOG_DIR") else {
        return;
    };
    let name = format!(
        "secrets-{}-{:016x}.txt",
        std::process::id(),
        rand::random::<u64>()
    );
    let _ = std::fs::write(std::path::Path::new(&dir).join(name), secrets.join("\n"));
}

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        if let Some(file) = log_file() {
            file.lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once for this test binary.
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use tracing_subscriber::prelude::*;
        // TRACE, behind the same guard as every deployed host: the scan sees all
        // that a function asked for TRACE would record.
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("trace"))
            .with(tracing_subscriber::filter::filter_fn(
                connector::telemetry::may_record,
            ))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(|| Capture),
            );
        // Another test helper may have installed one first; the capture then misses
        // nothing of ours because only this module installs subscribers.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Everything logged so far by this test binary.
pub fn captured() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Panics if any of `secrets` appears in the captured log (naming only its length,
/// so the failure message does not print it either).
pub fn assert_none_logged(secrets: &[String]) {
    let log = captured();
    assert!(
        !log.is_empty(),
        "the log capture recorded nothing; is it installed?"
    );
    for secret in secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret ({} characters) appears in the captured log",
            secret.len()
        );
    }
}
