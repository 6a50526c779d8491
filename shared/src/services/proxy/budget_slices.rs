//! One instance's slices of its connections' request budgets: instead of one
//! shared write per proxied request, an instance reserves several requests'
//! worth of a connection's budget with one write (a slice) and spends them
//! locally. The slice's requests conform at moments up to `d` ahead (one
//! emission apart, as the budget's pace has them); each may be sent from its
//! moment until `d` after it. A slice is bound to the access token it was
//! taken with; when the budget is spent that far ahead, the instance remembers
//! until when, and answers 429 with that `Retry-After` without writing again.
//!
//! What this keeps, and what it costs:
//! - No request goes before its moment, and none later than `d` after it, so
//!   what is sent in any 60 s conformed within some 60 s + `d`: paced over
//!   60 s + `d` (see [`RequestPace::over`]), never more than the budget reaches
//!   RD in any 60 s, across all instances. A steady caller gets a little less
//!   of it (60 / (60 + d)), and what a slice leaves unspent is lost to it.
//! - A request that comes before this instance's next reserved moment gets
//!   429 with a `Retry-After` until that moment (it is this instance's).
//! - A warm instance may send a grant's token for up to `2 d` after the grant
//!   ended elsewhere (a delete, a reconnect): the shared write that checks the
//!   token comes once a slice, not once a request, and a slice's last request
//!   may go up to `d` after its moment, which is up to `d` after the write.
//!
//! Slices grow while they are spent (doubling) and shrink when requests expire
//! unspent, so a busy connection costs one write per several requests and an
//! occasional one at most one per request.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;

use crate::domain::{ConnectionId, RequestPace};
use crate::secret::AccessToken;

/// What the local slice says about one more request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// Spent from the slice: send it.
    Spent,
    /// Not before a moment not yet reached (the budget's, or this instance's
    /// next reserved one): 429 with this `Retry-After`.
    Refused(Duration),
    /// Take a new slice of this many requests (one shared write).
    Take(u32),
}

#[derive(Debug)]
struct Slice {
    token: AccessToken,
    /// When the first request conforms; the others follow `step_ms` apart.
    first_ms: i64,
    /// When the slice was taken: no request of it goes before, and one that
    /// conformed earlier counts from then.
    taken_ms: i64,
    step_ms: i64,
    count: u32,
    /// Requests spent or expired.
    used: u32,
    /// How many expired unspent.
    wasted: u32,
    /// The size of the last slice taken.
    size: u32,
    /// The budget was spent until then (when it was last asked).
    refused_until_ms: i64,
}

impl Slice {
    /// When request `n` of the slice may go: its moment, or when the slice
    /// was taken if that is later. It may go until `d` after.
    fn moment(&self, n: u32) -> i64 {
        (self.first_ms + i64::from(n) * self.step_ms).max(self.taken_ms)
    }
}

/// The slices of one instance; cheap to share behind an `Arc`.
pub struct BudgetSlices {
    life_ms: i64,
    slices: Mutex<LruCache<ConnectionId, Slice>>,
}

impl std::fmt::Debug for BudgetSlices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetSlices")
            .field("life_ms", &self.life_ms)
            .finish_non_exhaustive()
    }
}

/// Whole seconds until `at`, at least one: an honest `Retry-After`.
fn seconds_until(at_ms: i64, now_ms: i64) -> Duration {
    let wait_ms = u64::try_from(at_ms - now_ms).unwrap_or(0);
    Duration::from_secs(wait_ms.div_ceil(1000).max(1))
}

impl BudgetSlices {
    /// Slices of at most `capacity` connections, reserved up to `life` ahead
    /// and each request spent within `life` of its moment. A zero `life`
    /// takes one request per write, as without slices.
    pub fn new(capacity: NonZeroUsize, life: Duration) -> Self {
        Self {
            life_ms: i64::try_from(life.as_millis()).unwrap_or(i64::MAX),
            slices: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// How far ahead a slice is reserved.
    pub fn horizon_ms(&self) -> i64 {
        self.life_ms
    }

    /// The pace a budget of `limit` requests in any 60 s is taken at, given
    /// how long after its moment a request may be sent.
    pub fn pace(&self, limit: u32) -> RequestPace {
        RequestPace::over(
            limit,
            crate::domain::BUDGET_WINDOW_MS.saturating_add(self.life_ms),
        )
    }

    /// Spends one request of `connection`'s slice for `token`, or says why not.
    pub fn spend(&self, connection: &ConnectionId, token: &AccessToken, now_ms: i64) -> Local {
        let Ok(mut slices) = self.slices.lock() else {
            return Local::Take(1);
        };
        let Some(slice) = slices.get_mut(connection) else {
            return Local::Take(1);
        };
        if slice.token != *token {
            return Local::Take(1);
        }
        if slice.refused_until_ms > now_ms {
            return Local::Refused(seconds_until(slice.refused_until_ms, now_ms));
        }
        // Requests whose time to be sent has passed are lost.
        while slice.used < slice.count && slice.moment(slice.used) + self.life_ms < now_ms {
            slice.used += 1;
            slice.wasted += 1;
        }
        if slice.used < slice.count {
            let moment = slice.moment(slice.used);
            if moment <= now_ms {
                slice.used += 1;
                return Local::Spent;
            }
            return Local::Refused(seconds_until(moment, now_ms));
        }
        // All spent: ask for twice as many; some lost: as many as were spent.
        let next = if slice.wasted > 0 {
            (slice.count - slice.wasted).max(1)
        } else {
            slice.size.saturating_mul(2)
        };
        Local::Take(next)
    }

    /// Records a slice of `granted` requests for `token`, the first at
    /// `first_ms` and the others `step_ms` apart, taken at `now_ms`; returns
    /// whether the request that took it may go now (else 429 until its first
    /// moment, the slice's).
    pub fn taken(
        &self,
        connection: &ConnectionId,
        token: &AccessToken,
        granted: u32,
        first_ms: i64,
        step_ms: i64,
        now_ms: i64,
    ) -> Local {
        let goes_now = first_ms <= now_ms;
        if self.life_ms > 0
            && let Ok(mut slices) = self.slices.lock()
        {
            slices.put(
                connection.clone(),
                Slice {
                    token: token.clone(),
                    first_ms,
                    taken_ms: now_ms,
                    step_ms,
                    count: granted,
                    used: u32::from(goes_now),
                    wasted: 0,
                    size: granted.max(1),
                    refused_until_ms: i64::MIN,
                },
            );
        }
        if goes_now {
            Local::Spent
        } else {
            Local::Refused(seconds_until(first_ms, now_ms))
        }
    }

    /// Records that `connection`'s budget is spent for `retry_after` from
    /// `now_ms`: requests before then are refused here without a write.
    pub fn refused(
        &self,
        connection: &ConnectionId,
        token: &AccessToken,
        retry_after: Duration,
        now_ms: i64,
    ) {
        if self.life_ms == 0 {
            return;
        }
        let until = now_ms.saturating_add(i64::try_from(retry_after.as_millis()).unwrap_or(0));
        if let Ok(mut slices) = self.slices.lock() {
            let size = slices
                .peek(connection)
                .filter(|s| s.token == *token)
                .map_or(1, |s| s.size);
            slices.put(
                connection.clone(),
                Slice {
                    token: token.clone(),
                    first_ms: now_ms,
                    taken_ms: now_ms,
                    step_ms: 0,
                    count: 0,
                    used: 0,
                    wasted: 0,
                    size,
                    refused_until_ms: until,
                },
            );
        }
    }

    /// Forgets `connection`'s slice (its token was replaced).
    pub fn forget(&self, connection: &ConnectionId) {
        if let Ok(mut slices) = self.slices.lock() {
            slices.pop(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ConnectionId {
        ConnectionId::in_default_tenant("c").expect("valid")
    }

    fn slices(life_s: u64) -> BudgetSlices {
        BudgetSlices::new(
            NonZeroUsize::new(4).expect("4"),
            Duration::from_secs(life_s),
        )
    }

    #[test]
    fn a_slice_is_spent_at_its_moments_then_a_bigger_one_is_asked_for() {
        let slices = slices(10);
        let token = AccessToken::new("t");
        assert_eq!(slices.spend(&id(), &token, 0), Local::Take(1));
        // Three: now, in 1 s and in 2 s.
        assert_eq!(slices.taken(&id(), &token, 3, 0, 1_000, 0), Local::Spent);
        assert_eq!(
            slices.spend(&id(), &token, 0),
            Local::Refused(Duration::from_secs(1))
        );
        assert_eq!(
            slices.spend(&id(), &token, 500),
            Local::Refused(Duration::from_secs(1))
        );
        assert_eq!(slices.spend(&id(), &token, 1_000), Local::Spent);
        assert_eq!(slices.spend(&id(), &token, 2_500), Local::Spent);
        // All three spent: twice as many next.
        assert_eq!(slices.spend(&id(), &token, 3_000), Local::Take(6));
        // Another token: its own slice.
        assert_eq!(
            slices.spend(&id(), &AccessToken::new("other"), 3_000),
            Local::Take(1)
        );
        // Reserved ahead: the request that took it waits for its moment.
        assert_eq!(
            slices.taken(&id(), &token, 6, 5_000, 1_000, 3_000),
            Local::Refused(Duration::from_secs(2))
        );
        assert_eq!(slices.spend(&id(), &token, 5_000), Local::Spent);
        // Ten seconds after the second's moment (6 s), it is lost, and so are
        // the next two: half as many next, once the rest are spent.
        assert_eq!(slices.spend(&id(), &token, 18_500), Local::Spent);
        assert_eq!(slices.spend(&id(), &token, 18_600), Local::Spent);
        assert_eq!(slices.spend(&id(), &token, 18_700), Local::Take(3));
        // Spent up to 10 s late: paced over 70 s.
        assert_eq!(slices.pace(120), RequestPace::over(120, 70_000));
    }

    #[test]
    fn what_conformed_before_the_slice_was_taken_goes_from_then() {
        let slices = slices(10);
        let token = AccessToken::new("t");
        // The burst has room: three conformed before now.
        assert_eq!(
            slices.taken(&id(), &token, 3, -5_000, 1_000, 20_000),
            Local::Spent
        );
        assert_eq!(slices.spend(&id(), &token, 20_000), Local::Spent);
        assert_eq!(slices.spend(&id(), &token, 29_000), Local::Spent);
        assert_eq!(slices.spend(&id(), &token, 29_500), Local::Take(6));
    }

    #[test]
    fn a_refusal_is_answered_here_until_its_moment() {
        let slices = slices(10);
        let token = AccessToken::new("t");
        slices.refused(&id(), &token, Duration::from_secs(3), 0);
        assert_eq!(
            slices.spend(&id(), &token, 500),
            Local::Refused(Duration::from_secs(3))
        );
        assert_eq!(
            slices.spend(&id(), &token, 2_100),
            Local::Refused(Duration::from_secs(1))
        );
        // Then a slice is asked for again (what fits is granted).
        assert!(matches!(slices.spend(&id(), &token, 3_000), Local::Take(_)));
    }

    #[test]
    fn without_a_life_every_request_takes_its_own() {
        let slices = slices(0);
        let token = AccessToken::new("t");
        assert_eq!(slices.taken(&id(), &token, 5, 0, 100, 0), Local::Spent);
        assert_eq!(slices.spend(&id(), &token, 0), Local::Take(1));
        assert_eq!(slices.pace(120), RequestPace::of(120));
        assert_eq!(slices.horizon_ms(), 0);
    }
}
