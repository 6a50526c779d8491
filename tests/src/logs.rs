//! Captures every log line the test process writes (at DEBUG and above, for every
//! crate: stricter than production's INFO), so tests can check that no secret
//! reaches a log.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

static CAPTURED: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn buffer() -> &'static Mutex<Vec<u8>> {
    CAPTURED.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
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
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_ansi(false)
            .with_writer(|| Capture)
            .finish();
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
    assert!(!log.is_empty(), "the log capture recorded nothing; is it installed?");
    for secret in secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret ({} characters) appears in the captured log",
            secret.len()
        );
    }
}
