//! Full-jitter exponential backoff between failed refresh attempts.

use std::time::Duration;

use rand::Rng;

/// How long to wait before attempt number `failures + 1`: a uniformly random
/// duration up to `base · 2^(failures − 1)` (capped at `cap`), at least one second,
/// and never less than `floor` (RD's `Retry-After`, or the ambiguous-retry minimum).
pub fn delay_after(
    failures: u32,
    base: Duration,
    cap: Duration,
    floor: Option<Duration>,
) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    let jittered = Duration::from_millis(rand::rng().random_range(0..=ceiling.as_millis() as u64));
    jittered
        .max(Duration::from_secs(1))
        .max(floor.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let base = Duration::from_secs(30);
        let cap = Duration::from_secs(900);
        for _ in 0..200 {
            assert!(delay_after(1, base, cap, None) <= base);
            assert!(delay_after(3, base, cap, None) <= base * 4);
            assert!(delay_after(30, base, cap, None) <= cap);
            assert!(delay_after(1, base, cap, None) >= Duration::from_secs(1));
        }
    }

    #[test]
    fn honours_the_floor() {
        let d = delay_after(
            1,
            Duration::from_secs(1),
            Duration::from_secs(2),
            Some(Duration::from_secs(120)),
        );
        assert_eq!(d, Duration::from_secs(120));
    }
}
