//! One instance's slices of its connections' request budgets: instead of one
//! shared write per proxied request, an instance takes several requests' worth
//! of a connection's budget with one write (a slice) and spends it locally for
//! at most the slice's life `d`. A slice is bound to the access token it was
//! taken with; when the budget is spent, the instance remembers until when, and
//! answers 429 with that `Retry-After` without writing again.
//!
//! What this keeps, and what it costs:
//! - The budget is paced over 60 s + `d` (see [`RequestPace::over`]): a request
//!   taken at `t` is sent by `t + d`, so what is sent in any 60 s was taken in
//!   some 60 s + `d`, which holds at most the budget. Never more than the budget
//!   reaches RD in any 60 s, across all instances; a steady caller gets a little
//!   less of it (60 / (60 + d)), and what a slice leaves unspent is lost to it.
//! - A warm instance may send a grant's token for up to `d` after the grant
//!   ended elsewhere (a delete, a reconnect): the shared write that checks the
//!   token comes once a slice, not once a request. This is the same bound the
//!   proxy keeps with the budget off
//!   ([`crate::assembly::TOKEN_RECHECK_WITHOUT_BUDGET_SECONDS`]).
//!
//! Slices grow while they are spent before they end (doubling, up to the
//! budget's burst) and shrink when they end unspent, so a busy connection
//! costs one write per several requests and an occasional one at most one per
//! request.

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
    /// The budget was found spent until a moment not yet reached: 429 with
    /// this `Retry-After`.
    Refused(Duration),
    /// Take a new slice of this many requests (one shared write).
    Take(u32),
}

#[derive(Debug)]
struct Slice {
    token: AccessToken,
    left: u32,
    ends_ms: i64,
    /// The size of the last slice taken.
    size: u32,
    /// The budget was spent until then (when it was last asked).
    refused_until_ms: i64,
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

impl BudgetSlices {
    /// Slices of at most `capacity` connections, each spent for at most `life`
    /// after it was taken. A zero `life` takes one request per write, as
    /// without slices.
    pub fn new(capacity: NonZeroUsize, life: Duration) -> Self {
        Self {
            life_ms: i64::try_from(life.as_millis()).unwrap_or(i64::MAX),
            slices: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The pace a budget of `limit` requests in any 60 s is taken at, given
    /// how long a slice may be spent.
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
            let wait_ms = u64::try_from(slice.refused_until_ms - now_ms).unwrap_or(0);
            return Local::Refused(Duration::from_secs(wait_ms.div_ceil(1000).max(1)));
        }
        if slice.left > 0 && now_ms < slice.ends_ms {
            slice.left -= 1;
            return Local::Spent;
        }
        // Spent before it ended: ask for twice as much; ended unspent: half.
        let next = if slice.left == 0 {
            slice.size.saturating_mul(2)
        } else {
            (slice.size / 2).max(1)
        };
        Local::Take(next)
    }

    /// Records a slice of `granted` requests (one of them spent now) taken at
    /// `now_ms` for `token`.
    pub fn taken(&self, connection: &ConnectionId, token: &AccessToken, granted: u32, now_ms: i64) {
        if self.life_ms == 0 {
            return;
        }
        if let Ok(mut slices) = self.slices.lock() {
            slices.put(
                connection.clone(),
                Slice {
                    token: token.clone(),
                    left: granted.saturating_sub(1),
                    ends_ms: now_ms.saturating_add(self.life_ms),
                    size: granted.max(1),
                    refused_until_ms: i64::MIN,
                },
            );
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
                    left: 0,
                    ends_ms: now_ms,
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

    #[test]
    fn a_slice_is_spent_until_it_ends_then_a_bigger_one_is_asked_for() {
        let slices = BudgetSlices::new(NonZeroUsize::new(4).expect("4"), Duration::from_secs(10));
        let token = AccessToken::new("t");
        assert_eq!(slices.spend(&id(), &token, 0), Local::Take(1));
        slices.taken(&id(), &token, 3, 0);
        assert_eq!(slices.spend(&id(), &token, 1_000), Local::Spent);
        assert_eq!(slices.spend(&id(), &token, 2_000), Local::Spent);
        // All three spent (one when taken): twice as many next.
        assert_eq!(slices.spend(&id(), &token, 3_000), Local::Take(6));
        // Another token: its own slice.
        assert_eq!(
            slices.spend(&id(), &AccessToken::new("other"), 3_000),
            Local::Take(1)
        );
        slices.taken(&id(), &token, 6, 3_000);
        // Ended with five unspent: half as many next.
        assert_eq!(slices.spend(&id(), &token, 13_000), Local::Take(3));
        // Spent up to 10 s late: paced over 70 s.
        assert_eq!(slices.pace(120), RequestPace::over(120, 70_000));
    }

    #[test]
    fn a_refusal_is_answered_here_until_its_moment() {
        let slices = BudgetSlices::new(NonZeroUsize::new(4).expect("4"), Duration::from_secs(10));
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
        let slices = BudgetSlices::new(NonZeroUsize::new(4).expect("4"), Duration::ZERO);
        let token = AccessToken::new("t");
        slices.taken(&id(), &token, 5, 0);
        assert_eq!(slices.spend(&id(), &token, 0), Local::Take(1));
        assert_eq!(slices.pace(120), RequestPace::of(120));
    }
}
