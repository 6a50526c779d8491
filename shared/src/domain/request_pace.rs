//! How fast a connection's requests may go to RD: never more than its budget B
//! in any 60 s, however they fall across minute boundaries (RD does not
//! document its window; a sliding one is assumed).
//!
//! The generic cell rate algorithm (GCRA) with one number of state, the
//! theoretical arrival time `tat`: a request at `now` conforms when
//! `tat - tolerance <= now`, and moves `tat` to `max(tat, now) + emission`.
//! At most `b = tolerance / emission + 1` requests pass at once, then one per
//! `emission`; in any half-open window of length W at most
//! `ceil(W / emission) + b - 1` pass. With `b = max(1, B / 5)` and
//! `emission = ceil(60 s / (B - b + 1))` that is at most B in any 60 s: a fifth
//! of the budget at once, and a steady `B - b + 1` a minute after it.

use std::time::Duration;

/// The sliding window every budget is counted over.
pub const BUDGET_WINDOW_MS: i64 = 60_000;

/// The pace of a budget of `limit` requests in any 60 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestPace {
    /// Time between requests once the burst is spent (ms).
    pub emission_ms: i64,
    /// How far ahead of `now` the arrival time may run (ms): the burst.
    pub tolerance_ms: i64,
}

/// What a request (or a slice of several) meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// `granted` requests may go (at least one, at most those asked for); the
    /// arrival time becomes `next_tat_ms`.
    Allowed {
        /// The new theoretical arrival time.
        next_tat_ms: i64,
        /// How many of the requests asked for conform now (or, reserved,
        /// within the horizon).
        granted: u32,
        /// The moment the first of them conforms (before now when the burst
        /// has room; after it when reserved ahead); the others follow one
        /// emission apart. One that conformed before now conforms now.
        first_ms: i64,
    },
    /// Not yet: the first moment it would pass is `retry_after` away.
    TooSoon {
        /// Until then.
        retry_after: Duration,
    },
}

impl RequestPace {
    /// The pace of `limit` (at least 1) requests in any 60 s.
    pub fn of(limit: u32) -> Self {
        Self::over(limit, BUDGET_WINDOW_MS)
    }

    /// The pace of `limit` (at least 1) requests in any `window_ms`: the same
    /// burst, then evenly over the longer window. A budget taken in slices that
    /// may be spent up to `d` after they were taken is paced over 60 s + `d`,
    /// so that what is *sent* in any 60 s stays within `limit`.
    pub fn over(limit: u32, window_ms: i64) -> Self {
        let limit = i64::from(limit.max(1));
        let window_ms = window_ms.max(1);
        let burst = (limit / 5).max(1);
        let emission_ms = (window_ms + (limit - burst)) / (limit - burst + 1);
        Self {
            emission_ms,
            tolerance_ms: (burst - 1) * emission_ms,
        }
    }

    /// The most requests one call may take at once: the burst.
    pub fn burst(self) -> u32 {
        u32::try_from(self.tolerance_ms / self.emission_ms.max(1) + 1).unwrap_or(u32::MAX)
    }

    /// The pace of `rate` (at least 1) requests a second: a second's worth at
    /// once, then one every `1000 / rate` ms; never more than `rate` in any
    /// second after the first burst.
    pub fn per_second(rate: u32) -> Self {
        let rate = i64::from(rate.max(1));
        let emission_ms = (1_000 + rate - 1) / rate;
        Self {
            emission_ms,
            tolerance_ms: (rate - 1) * emission_ms,
        }
    }

    /// Whether a request at `now_ms` conforms, given the stored arrival time
    /// (`None`: no request yet).
    pub fn meet(self, tat_ms: Option<i64>, now_ms: i64) -> Pace {
        self.meet_many(tat_ms, now_ms, 1)
    }

    /// How many of `wanted` requests at `now_ms` conform, given the stored
    /// arrival time: each one taken moves it on by one emission, exactly as
    /// that many single requests would.
    pub fn meet_many(self, tat_ms: Option<i64>, now_ms: i64, wanted: u32) -> Pace {
        self.reserve(tat_ms, now_ms, wanted, 0)
    }

    /// Reserves up to `wanted` requests whose moments to conform come within
    /// `horizon_ms` of `now_ms` (the first at `first_ms`, then one each
    /// emission): each moves the arrival time on by one emission, as that many
    /// requests made at those moments would. None when the next moment is
    /// further off than the horizon; `retry_after` then says when it comes.
    pub fn reserve(self, tat_ms: Option<i64>, now_ms: i64, wanted: u32, horizon_ms: i64) -> Pace {
        let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
        let earliest = tat - self.tolerance_ms;
        let horizon = now_ms.saturating_add(horizon_ms.max(0));
        if earliest > horizon {
            let wait_ms = u64::try_from(earliest - now_ms).unwrap_or(0);
            return Pace::TooSoon {
                // Whole seconds, at least one: an honest `Retry-After`.
                retry_after: Duration::from_secs(wait_ms.div_ceil(1000).max(1)),
            };
        }
        let fit = (horizon - earliest) / self.emission_ms.max(1) + 1;
        let granted = u32::try_from(fit).unwrap_or(u32::MAX).min(wanted.max(1));
        Pace::Allowed {
            next_tat_ms: tat + i64::from(granted) * self.emission_ms,
            granted,
            first_ms: earliest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests every `step_ms` (as fast as a caller may try) for ten minutes:
    /// no 60 s window ever holds more than the limit, and the steady rate is
    /// what the module says.
    #[test]
    fn no_sixty_seconds_hold_more_than_the_budget() {
        for limit in [1, 2, 3, 5, 7, 10, 60, 119, 120, 500, 10_000] {
            let pace = RequestPace::of(limit);
            let mut tat = None;
            let mut passed = Vec::new();
            let step_ms = 7;
            let mut now = 1_000_000;
            while now < 1_000_000 + 10 * BUDGET_WINDOW_MS {
                if let Pace::Allowed { next_tat_ms, .. } = pace.meet(tat, now) {
                    tat = Some(next_tat_ms);
                    passed.push(now);
                }
                now += step_ms;
            }
            let mut first = 0;
            for (last, at) in passed.iter().enumerate() {
                while passed[first] <= at - BUDGET_WINDOW_MS {
                    first += 1;
                }
                let in_window = last - first + 1;
                assert!(
                    in_window <= limit as usize,
                    "limit {limit}: {in_window} in the 60 s ending at {at}"
                );
            }
            let burst = (i64::from(limit) / 5).max(1);
            let steady_per_minute = i64::from(limit) - burst + 1;
            assert!(
                passed.len() as i64 >= 9 * steady_per_minute,
                "limit {limit}: only {} in ten minutes",
                passed.len()
            );
        }
    }

    /// The worst a slice's holder can do: wait until the budget is idle, take
    /// the whole burst and hold it `d` before sending, while every slice taken
    /// after it (as soon as the pace allows) is sent at once. Paced over 60 s +
    /// `d`, no 60 s of sending holds more than the budget; paced over 60 s, the
    /// burst and a minute of steady takes would (limit 120: 121).
    #[test]
    fn slices_spent_within_d_never_put_more_than_the_budget_in_60_s() {
        let d = 10_000;
        for limit in [1, 2, 10, 60, 120, 500] {
            let pace = RequestPace::over(limit, BUDGET_WINDOW_MS + d);
            let mut tat = None;
            let mut sent = Vec::new();
            let start = 1_000_000;
            let mut now = start;
            let mut was_busy = false;
            while now < start + 12 * BUDGET_WINDOW_MS {
                // Two idle minutes, then two busy ones.
                let busy = (now - start) % (4 * BUDGET_WINDOW_MS) >= 2 * BUDGET_WINDOW_MS;
                if busy {
                    if let Pace::Allowed {
                        next_tat_ms,
                        granted,
                        ..
                    } = pace.meet_many(tat, now, pace.burst())
                    {
                        assert!(granted >= 1 && granted <= pace.burst());
                        tat = Some(next_tat_ms);
                        // The first slice after idling (the burst) is held.
                        let held = if was_busy { 0 } else { d };
                        was_busy = true;
                        sent.extend(std::iter::repeat_n(now + held, granted as usize));
                    }
                } else {
                    was_busy = false;
                }
                now += 13;
            }
            sent.sort_unstable();
            let mut first = 0;
            for (last, at) in sent.iter().enumerate() {
                while sent[first] <= at - BUDGET_WINDOW_MS {
                    first += 1;
                }
                assert!(
                    last - first < limit as usize,
                    "limit {limit}: {} sent in the 60 s ending at {at}",
                    last - first + 1
                );
            }
        }
    }

    #[test]
    fn a_slice_takes_what_fits_and_moves_the_arrival_time_as_that_many_requests() {
        let pace = RequestPace::of(120);
        assert_eq!(pace.burst(), 24);
        let Pace::Allowed {
            next_tat_ms,
            granted,
            ..
        } = pace.meet_many(None, 0, 30)
        else {
            panic!("an idle budget grants")
        };
        assert_eq!((granted, next_tat_ms), (24, 24 * pace.emission_ms));
        assert!(matches!(
            pace.meet_many(Some(next_tat_ms), 0, 1),
            Pace::TooSoon { .. }
        ));
        // One emission later, one more fits.
        assert!(matches!(
            pace.meet_many(Some(next_tat_ms), pace.emission_ms, 5),
            Pace::Allowed { granted: 1, .. }
        ));
    }

    #[test]
    fn a_spent_burst_says_when_the_next_request_passes() {
        let pace = RequestPace::of(120);
        let mut tat = None;
        for _ in 0..24 {
            match pace.meet(tat, 0) {
                Pace::Allowed { next_tat_ms, .. } => tat = Some(next_tat_ms),
                other => panic!("the burst is 24: {other:?}"),
            }
        }
        assert_eq!(
            pace.meet(tat, 0),
            Pace::TooSoon {
                retry_after: Duration::from_secs(1)
            }
        );
        assert!(matches!(
            pace.meet(tat, pace.emission_ms),
            Pace::Allowed { .. }
        ));
    }

    #[test]
    fn a_per_second_pace_lets_a_seconds_worth_go_then_one_per_emission() {
        let pace = RequestPace::per_second(3);
        assert_eq!(pace.emission_ms, 334);
        let mut tat = None;
        for _ in 0..3 {
            match pace.meet(tat, 0) {
                Pace::Allowed { next_tat_ms, .. } => tat = Some(next_tat_ms),
                Pace::TooSoon { .. } => panic!("the burst is a second's worth"),
            }
        }
        assert_eq!(
            pace.meet(tat, 0),
            Pace::TooSoon {
                retry_after: Duration::from_secs(1)
            }
        );
        assert!(matches!(pace.meet(tat, 334), Pace::Allowed { .. }));
    }
}
