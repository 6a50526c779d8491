//! One contract for every store: the in-memory store and the DynamoDB store (on
//! moto) must behave alike, conditional writes and conflicts included.

use std::sync::Arc;

use connector::clock::Timestamp;
use connector::domain::RequestPace;
use connector::domain::{
    CONNECT_SESSION_TTL_SECONDS, ConnectSession, Connection, ConnectionId, ConnectionStatus,
    DuePolicy, Lease, PrincipalPattern, Product, Tags, TenantId, Tenants, TokenPair,
};
use connector::outbound::memory::{MemoryRescueStore, MemoryStore};
use connector::outbound::rescue_store::S3RescueStore;
use connector::ports::{
    BudgetDecision, ConnectionStore, ListQuery, RateBudget, RescueStore, RescuedPair, RunLock,
    SessionError, SessionStore, ShardLease, StoreError, TenantRegistry,
};
use connector::secret::{AccessToken, ExposeSecret, RefreshToken};
use integration_tests::moto;

trait Store:
    ConnectionStore + SessionStore + RunLock + ShardLease + RateBudget + TenantRegistry + 'static
{
}
impl<
    T: ConnectionStore + SessionStore + RunLock + ShardLease + RateBudget + TenantRegistry + 'static,
> Store for T
{
}

fn pair(tag: &str) -> TokenPair {
    TokenPair {
        access_token: AccessToken::new(format!("at-{tag}")),
        refresh_token: RefreshToken::new(format!("rt-{tag}")),
        access_expires_at: Timestamp(1_000_000),
    }
}

fn connection(id: &str) -> Connection {
    Connection::connected(
        ConnectionId::in_default_tenant(id).expect("valid"),
        Product::Crm,
        pair("first"),
        Timestamp(1_000),
    )
}

async fn create_then_get_round_trips(store: Arc<impl Store>) {
    let c = connection("acme:crm");
    let created = store.create(&c).await.expect("created");
    assert_eq!(created.version, 1);
    let read = store.get(&c.id).await.expect("read").expect("present");
    assert_eq!(read, created);
    assert!(
        store
            .get(&ConnectionId::in_default_tenant("absent").expect("valid"))
            .await
            .expect("read")
            .is_none()
    );
}

async fn create_of_existing_is_conflict_with_current_item(store: Arc<impl Store>) {
    let c = connection("dup");
    store.create(&c).await.expect("created");
    let mut other = connection("dup");
    other.tokens = pair("second");
    match store.create(&other).await {
        Err(StoreError::Conflict { id, current }) => {
            assert_eq!(id, c.id);
            let current = current.expect("the existing item comes back");
            assert_eq!(current.tokens.refresh_token.expose_secret(), "rt-first");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let read = store.get(&c.id).await.expect("read").expect("present");
    assert_eq!(
        read.tokens.refresh_token.expose_secret(),
        "rt-first",
        "nothing overwritten"
    );
}

async fn update_bumps_version(store: Arc<impl Store>) {
    let created = store.create(&connection("bump")).await.expect("created");
    let mut next = created.clone();
    next.tokens = pair("second");
    let updated = store.update(&next).await.expect("updated");
    assert_eq!(updated.version, 2);
    let read = store
        .get(&created.id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(read, updated);
}

async fn stale_version_write_is_conflict_with_current_item(store: Arc<impl Store>) {
    let created = store.create(&connection("stale")).await.expect("created");
    let mut winner = created.clone();
    winner.tokens = pair("winner");
    store.update(&winner).await.expect("first writer wins");

    let mut loser = created.clone();
    loser.tokens = pair("loser");
    loser.status = ConnectionStatus::NeedsReauth;
    match store.update(&loser).await {
        Err(StoreError::Conflict { id, current }) => {
            assert_eq!(id, created.id);
            let current = current.expect("the current item comes back");
            assert_eq!(current.version, 2);
            assert_eq!(current.tokens.refresh_token.expose_secret(), "rt-winner");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let read = store
        .get(&created.id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(read.version, 2);
    assert_eq!(read.status, ConnectionStatus::Active);
    assert_eq!(read.tokens.refresh_token.expose_secret(), "rt-winner");
}

async fn update_of_missing_is_conflict_without_item(store: Arc<impl Store>) {
    match store.update(&connection("never-created")).await {
        Err(StoreError::Conflict { current: None, .. }) => {}
        other => panic!("expected a conflict without item, got {other:?}"),
    }
    assert!(
        store
            .get(&ConnectionId::in_default_tenant("never-created").expect("valid"))
            .await
            .expect("read")
            .is_none()
    );
}

async fn concurrent_writers_from_one_read_have_one_winner(store: Arc<impl Store>) {
    let created = store.create(&connection("race")).await.expect("created");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        let mut next = created.clone();
        next.tokens = pair(&format!("writer-{i}"));
        tasks.spawn(async move { store.update(&next).await });
    }
    let results = tasks.join_all().await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one conditional write succeeds");
    assert!(results.iter().filter(|r| r.is_err()).all(|r| matches!(
        r,
        Err(StoreError::Conflict {
            current: Some(_),
            ..
        })
    )));
    let read = store
        .get(&created.id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(read.version, 2);
    assert_eq!(read.tokens, winners[0].tokens);
}

fn session(now: Timestamp) -> ConnectSession {
    ConnectSession::new(
        ConnectionId::in_default_tenant("acme:mkt").expect("valid"),
        Product::Marketing,
        Some("https://app.example.com/done".parse().expect("url")),
        now,
    )
}

async fn session_completes_once_with_its_latest_state(store: Arc<impl Store>) {
    let now = Timestamp(10_000);
    let s = session(now);
    store.create_session(&s).await.expect("created");
    assert_eq!(
        store.get_session(&s.id).await.expect("read"),
        Some(s.clone())
    );

    store
        .bind_state(&s.id, "browser-a", "hash-1", now)
        .await
        .expect("bound");
    let rebound = store
        .bind_state(&s.id, "browser-a", "hash-2", now)
        .await
        .expect("bound again");
    assert_eq!(rebound.state_hash.as_deref(), Some("hash-2"));
    assert_eq!(rebound.browser_hash.as_deref(), Some("browser-a"));
    assert_eq!(
        store.session_for_state("hash-2").await.expect("read"),
        Some(s.id.clone()),
        "a state leads to its session"
    );
    assert_eq!(
        store.session_for_state("never-issued").await.expect("read"),
        None
    );
    assert!(
        matches!(
            store.bind_state(&s.id, "browser-b", "hash-x", now).await,
            Err(SessionError::Unusable)
        ),
        "a second browser cannot take the session"
    );
    assert!(
        matches!(
            store
                .complete_session(&s.id, "browser-b", "hash-2", now)
                .await,
            Err(SessionError::Unusable)
        ),
        "the right state from another browser is refused"
    );

    assert!(
        matches!(
            store
                .complete_session(&s.id, "browser-a", "hash-1", now)
                .await,
            Err(SessionError::Unusable)
        ),
        "an earlier state no longer works"
    );
    let done = store
        .complete_session(&s.id, "browser-a", "hash-2", now)
        .await
        .expect("completes");
    assert!(done.completed);
    assert_eq!(done.connection_id, s.connection_id);
    assert!(
        matches!(
            store
                .complete_session(&s.id, "browser-a", "hash-2", now)
                .await,
            Err(SessionError::Unusable)
        ),
        "a replay is refused"
    );
    assert!(
        matches!(
            store.bind_state(&s.id, "browser-a", "hash-3", now).await,
            Err(SessionError::Unusable)
        ),
        "a completed session cannot be restarted"
    );
}

async fn expired_or_unknown_session_is_unusable(store: Arc<impl Store>) {
    let now = Timestamp(20_000);
    let s = session(now);
    store.create_session(&s).await.expect("created");
    store
        .bind_state(&s.id, "browser-a", "h", now)
        .await
        .expect("bound");
    let later = now.plus_seconds(CONNECT_SESSION_TTL_SECONDS);
    assert!(matches!(
        store.complete_session(&s.id, "browser-a", "h", later).await,
        Err(SessionError::Unusable)
    ));
    assert!(matches!(
        store.bind_state(&s.id, "browser-a", "h", later).await,
        Err(SessionError::Unusable)
    ));
    let unknown = session(now).id;
    assert!(matches!(
        store.bind_state(&unknown, "browser-a", "h", now).await,
        Err(SessionError::Unusable)
    ));
    assert!(matches!(
        store
            .complete_session(&unknown, "browser-a", "h", now)
            .await,
        Err(SessionError::Unusable)
    ));
    assert!(store.get_session(&unknown).await.expect("read").is_none());
}

async fn concurrent_completions_have_one_winner(store: Arc<impl Store>) {
    let now = Timestamp(30_000);
    let s = session(now);
    store.create_session(&s).await.expect("created");
    store
        .bind_state(&s.id, "browser-a", "h", now)
        .await
        .expect("bound");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let id = s.id.clone();
        tasks.spawn(async move {
            store
                .complete_session(&id, "browser-a", "h", now)
                .await
                .is_ok()
        });
    }
    let wins = tasks
        .join_all()
        .await
        .into_iter()
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1);
}

async fn commit_requires_the_same_lease_and_version(store: Arc<impl Store>) {
    let mut c = connection("leased");
    c.lease = Some(Lease {
        id: "lease-a".to_owned(),
        deadline_ms: 5_000,
    });
    let claimed = store.create(&c).await.expect("created");
    let mut commit = claimed.clone();
    commit.tokens = pair("rotated");
    commit.lease = None;
    assert!(
        matches!(
            store.update_holding_lease(&commit, "lease-b").await,
            Err(StoreError::Conflict {
                current: Some(_),
                ..
            })
        ),
        "another lease id is refused"
    );
    let stale = Connection {
        version: 0,
        ..commit.clone()
    };
    assert!(
        matches!(
            store.update_holding_lease(&stale, "lease-a").await,
            Err(StoreError::Conflict { .. })
        ),
        "a stale version is refused"
    );
    let committed = store
        .update_holding_lease(&commit, "lease-a")
        .await
        .expect("committed");
    assert_eq!(committed.version, 2);
    assert_eq!(committed.lease, None);
    assert!(
        matches!(
            store.update_holding_lease(&committed, "lease-a").await,
            Err(StoreError::Conflict { .. })
        ),
        "the lease is gone after the commit"
    );
}

/// Settings and the protocol's writes touch only their own attributes: a
/// settings write keeps the version (a claim made before it still commits), a
/// versioned write keeps the setting, and removing a lease or an intent really
/// removes it from the stored item.
async fn settings_and_versioned_writes_touch_only_their_own(store: Arc<impl Store>) {
    let mut c = connection("owned");
    c.lease = Some(Lease {
        id: "lease-a".to_owned(),
        deadline_ms: 5_000,
    });
    c.status_reason = Some("refresh_failing".to_owned());
    let claimed = store.create(&c).await.expect("created");
    let set = store
        .set_rate_limit(&c.id, Some(42))
        .await
        .expect("written")
        .expect("present");
    assert_eq!(set.rate_limit_per_minute, Some(42));
    assert_eq!(set.version, claimed.version, "the version stays");
    let mut commit = claimed.clone();
    commit.tokens = pair("rotated");
    commit.lease = None;
    commit.status_reason = None;
    let committed = store
        .update_holding_lease(&commit, "lease-a")
        .await
        .expect("the claim made before the settings write still commits");
    assert_eq!(
        committed.rate_limit_per_minute,
        Some(42),
        "returned as stored"
    );
    let read = store.get(&c.id).await.expect("read").expect("present");
    assert_eq!(read, committed);
    assert_eq!(read.lease, None);
    assert_eq!(read.status_reason, None);
    assert_eq!(read.tokens.refresh_token.expose_secret(), "rt-rotated");
    let cleared = store
        .set_rate_limit(&c.id, None)
        .await
        .expect("written")
        .expect("present");
    assert_eq!(cleared.rate_limit_per_minute, None);
    assert!(
        store
            .set_rate_limit(
                &ConnectionId::in_default_tenant("absent").expect("valid"),
                Some(1)
            )
            .await
            .expect("answered")
            .is_none(),
        "no item is created"
    );
    assert!(
        store
            .get(&ConnectionId::in_default_tenant("absent").expect("valid"))
            .await
            .expect("read")
            .is_none()
    );
}

/// The budget paces requests (a burst, then one per emission) and counts one
/// only while the connection holds the token the request would carry; the
/// protocol's writes leave the pace alone.
async fn the_budget_paces_and_checks_the_token(store: Arc<impl Store>) {
    let c = store
        .create(&connection("budgeted"))
        .await
        .expect("created");
    let token = c.tokens.access_token.clone();
    let now = 1_000_000;
    let take = |token: AccessToken, at: i64| {
        let store = store.clone();
        let id = c.id.clone();
        async move {
            store
                .take(&id, &token, RequestPace::of(10), 1, 0, at)
                .await
                .expect("answered")
        }
    };
    // A budget of 10: a burst of 2, then one each 6,667 ms.
    assert!(matches!(
        take(token.clone(), now).await,
        BudgetDecision::Allowed { granted: 1, .. }
    ));
    assert!(matches!(
        take(token.clone(), now).await,
        BudgetDecision::Allowed { granted: 1, .. }
    ));
    assert!(matches!(
        take(token.clone(), now).await,
        BudgetDecision::Exhausted { .. }
    ));
    // A versioned write in between keeps the pace.
    let mut next = c.clone();
    next.status_reason = Some("x".to_owned());
    store.update(&next).await.expect("updated");
    assert!(matches!(
        take(token.clone(), now + 1_000).await,
        BudgetDecision::Exhausted { .. }
    ));
    assert!(matches!(
        take(token.clone(), now + 6_667).await,
        BudgetDecision::Allowed { granted: 1, .. }
    ));
    // Idle for long: a burst again.
    assert!(matches!(
        take(token.clone(), now + 600_000).await,
        BudgetDecision::Allowed { granted: 1, .. }
    ));
    assert_eq!(
        take(AccessToken::new("at-someone-else"), now + 700_000).await,
        BudgetDecision::TokenReplaced
    );
    store.delete(&c.id).await.expect("deleted");
    assert_eq!(
        take(token, now + 800_000).await,
        BudgetDecision::TokenReplaced
    );
    assert!(
        store.get(&c.id).await.expect("read").is_none(),
        "nothing created"
    );
}

/// A slice: as many requests as conform at once, counted like that many
/// single ones; a partial slice when fewer fit; none when the budget is spent;
/// reserved ahead, those whose moments come within the horizon.
async fn the_budget_grants_slices_of_what_fits(store: Arc<impl Store>) {
    let c = store.create(&connection("sliced")).await.expect("created");
    let token = c.tokens.access_token.clone();
    let pace = RequestPace::of(120);
    let e = pace.emission_ms;
    let now = 1_000_000;
    let take = |wanted: u32, horizon: i64, at: i64| {
        let store = store.clone();
        let id = c.id.clone();
        let token = token.clone();
        async move {
            store
                .take(&id, &token, pace, wanted, horizon, at)
                .await
                .expect("answered")
        }
    };
    let granted = |d: BudgetDecision| match d {
        BudgetDecision::Allowed { granted, first_ms } => Some((granted, first_ms)),
        _ => None,
    };
    // Idle: up to the burst of 24, all conforming now or before.
    let (n, first) = granted(take(10, 0, now).await).expect("granted");
    assert_eq!(n, 10);
    assert!(first <= now);
    assert_eq!(granted(take(20, 0, now).await).map(|g| g.0), Some(14));
    assert!(matches!(
        take(1, 0, now).await,
        BudgetDecision::Exhausted { .. }
    ));
    // Three emissions later, three fit now; reserved 10 s ahead, as many as
    // conform by then, the first at its moment.
    assert_eq!(granted(take(8, 0, now + 3 * e).await).map(|g| g.0), Some(3));
    let (n, first) = granted(take(100, 10_000, now + 3 * e).await).expect("reserved");
    // The first comes one emission after now, the rest within 10 s of now.
    assert_eq!(n as i64, (10_000 - e) / e + 1);
    assert_eq!(first, now + 4 * e);
    // Spent that far ahead: refused until the next moment.
    match take(1, 10_000, now + 3 * e).await {
        BudgetDecision::Exhausted { retry_after } => {
            let next = now + 4 * e + i64::from(n) * e;
            assert_eq!(
                retry_after.as_secs() as i64,
                (next - (now + 3 * e) + 999) / 1000
            );
        }
        other => panic!("{other:?}"),
    }
}

async fn a_live_lease_cannot_be_claimed_but_an_expired_one_can(store: Arc<impl Store>) {
    let mut c = connection("claimed");
    c.lease = Some(Lease {
        id: "holder".to_owned(),
        deadline_ms: 10_000,
    });
    let stored = store.create(&c).await.expect("created");
    let mut rival = stored.clone();
    rival.lease = Some(Lease {
        id: "rival".to_owned(),
        deadline_ms: 20_000,
    });
    match store.claim_lease(&rival, 9_999).await {
        Err(StoreError::Conflict {
            current: Some(current),
            ..
        }) => {
            assert_eq!(current.lease.expect("lease").id, "holder")
        }
        other => panic!("a live lease must refuse the claim, got {other:?}"),
    }
    let taken = store
        .claim_lease(&rival, 10_000)
        .await
        .expect("an expired lease is taken");
    assert_eq!(taken.lease.expect("lease").id, "rival");
    assert_eq!(taken.version, 2);
    let mut unleased = store
        .create(&connection("unleased"))
        .await
        .expect("created");
    unleased.lease = Some(Lease {
        id: "first".to_owned(),
        deadline_ms: 5,
    });
    store
        .claim_lease(&unleased, 0)
        .await
        .expect("no lease: claimable");
}

async fn due_connections_come_from_the_sparse_index(store: Arc<impl Store>) {
    let policy = DuePolicy::default();
    let now = Timestamp(1_000_000);
    let mut expected_due = Vec::new();
    for i in 0..40 {
        let mut c = connection(&format!("tenant-{i}"));
        c.refresh_token_issued_at = now;
        // Even: expiring within the margin. Odd: fresh for hours.
        let expires = if i % 2 == 0 {
            now.plus_seconds(300)
        } else {
            now.plus_seconds(7_200)
        };
        c.tokens.access_expires_at = expires;
        if i % 10 == 0 {
            c.status = ConnectionStatus::NeedsReauth;
        } else if i % 2 == 0 {
            expected_due.push(c.id.clone());
        }
        store.create(&c).await.expect("created");
    }
    let mut found = Vec::new();
    for shard in 0..store.due_shards() {
        let ids = store.due_connections(shard, now).await.expect("query");
        for id in &ids {
            let c = store.get(id).await.expect("read").expect("present");
            assert_eq!(policy.shard_of(&c), shard);
        }
        found.extend(ids);
    }
    found.sort();
    expected_due.sort();
    assert_eq!(found, expected_due);
}

async fn connections_list_in_pages_and_those_needing_a_person_by_status(store: Arc<impl Store>) {
    let mut all = Vec::new();
    for i in 0..5 {
        let id = format!("listed-{i}");
        let created = store.create(&connection(&id)).await.expect("created");
        if i % 2 == 1 {
            let mut marked = created.clone();
            marked.status = ConnectionStatus::NeedsReauth;
            store.update(&marked).await.expect("marked");
        }
        all.push(id);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = store
            .list(&ListQuery {
                cursor: cursor.clone(),
                limit: 2,
                ..ListQuery::default()
            })
            .await
            .expect("page");
        assert!(page.connections.len() <= 2);
        seen.extend(page.connections.iter().map(|c| c.id.name().to_owned()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, all, "every connection once, across pages");

    let attention = store
        .list(&ListQuery {
            status: Some(ConnectionStatus::NeedsReauth),
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .expect("page");
    let mut ids: Vec<_> = attention
        .connections
        .iter()
        .map(|c| c.id.name().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["listed-1", "listed-3"]);
    let other_product = store
        .list(&ListQuery {
            product: Some(Product::Marketing),
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .expect("page");
    assert!(other_product.connections.is_empty());
    assert!(matches!(
        store
            .list(&ListQuery {
                cursor: Some("not-a-cursor".to_owned()),
                limit: 2,
                ..ListQuery::default()
            })
            .await,
        Err(StoreError::InvalidCursor)
    ));
}

async fn one_run_holds_the_run_lock_until_it_expires_or_is_given_back(store: Arc<impl Store>) {
    assert!(store.try_lock("run-a", 10_000, 1_000).await.expect("up"));
    assert!(
        !store.try_lock("run-b", 20_000, 5_000).await.expect("up"),
        "held"
    );
    store.unlock("run-b").await.expect("up");
    assert!(
        !store.try_lock("run-b", 20_000, 5_000).await.expect("up"),
        "only the holder gives it back"
    );
    assert!(
        store.try_lock("run-b", 20_000, 10_000).await.expect("up"),
        "expired: taken over"
    );
    store
        .unlock("run-a")
        .await
        .expect("a late unlock is harmless");
    assert!(!store.try_lock("run-c", 30_000, 15_000).await.expect("up"));
    store.unlock("run-b").await.expect("up");
    assert!(store.try_lock("run-c", 30_000, 15_000).await.expect("up"));
}

async fn each_shard_has_a_lease_of_its_own(store: Arc<impl Store>) {
    assert!(
        store
            .try_take_shard(3, "worker-a", 10_000, 1_000)
            .await
            .expect("up")
    );
    assert!(
        !store
            .try_take_shard(3, "worker-b", 20_000, 5_000)
            .await
            .expect("up"),
        "held"
    );
    assert!(
        store
            .try_take_shard(4, "worker-b", 20_000, 5_000)
            .await
            .expect("up"),
        "another shard is free"
    );
    assert!(
        store.try_lock("run", 20_000, 5_000).await.expect("up"),
        "the run lock is another lease"
    );
    store.give_back_shard(3, "worker-b").await.expect("up");
    assert!(
        !store
            .try_take_shard(3, "worker-c", 20_000, 5_000)
            .await
            .expect("up"),
        "only the holder gives it back"
    );
    store.give_back_shard(3, "worker-a").await.expect("up");
    assert!(
        store
            .try_take_shard(3, "worker-c", 20_000, 5_000)
            .await
            .expect("up"),
        "given back: free"
    );
    assert!(
        store
            .try_take_shard(3, "worker-d", 30_000, 20_000)
            .await
            .expect("up"),
        "expired: taken over"
    );
    store
        .give_back_shard(3, "worker-c")
        .await
        .expect("a late give-back is harmless");
    assert!(
        !store
            .try_take_shard(3, "worker-e", 40_000, 25_000)
            .await
            .expect("up")
    );
}

/// The rescue store's contract, for the in-memory store and S3 on moto: a pair
/// put is found whole by its key, at once and by every client; another pair of the
/// same connection has a key of its own; listing pages name every key once; a
/// deleted pair is gone, and deleting it again is no error.
async fn rescue_store_contract(store: Arc<dyn RescueStore>, other_client: Arc<dyn RescueStore>) {
    let rescue = |replaced: &str| RescuedPair {
        connection_id: ConnectionId::in_default_tenant("rescued").expect("valid"),
        lease_id: "lease-r".to_owned(),
        tokens: pair("rescued"),
        spent_refresh_token: "00000000000000aa".to_owned(),
        replaced_access_token: replaced.to_owned(),
        rescued_at: Timestamp(77),
    };
    let first = rescue("00000000000000bb");
    let second = rescue("00000000000000cc");
    assert_eq!(store.find_rescue(&first.key()).await.expect("up"), None);
    store.put_rescue(&first).await.expect("saved");
    store.put_rescue(&second).await.expect("saved");
    // Read after write, from another client too: what a takeover on another
    // instance relies on.
    assert_eq!(
        other_client.find_rescue(&first.key()).await.expect("up"),
        Some(first.clone())
    );
    assert_eq!(
        store.find_rescue(&second.key()).await.expect("up"),
        Some(second.clone())
    );
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = other_client
            .list_rescues(after.as_deref())
            .await
            .expect("listed");
        listed.extend(page.keys);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    listed.sort();
    let mut expected = vec![first.key(), second.key()];
    expected.sort();
    assert_eq!(listed, expected);
    store.delete_rescue(&first.key()).await.expect("deleted");
    assert_eq!(
        other_client.find_rescue(&first.key()).await.expect("up"),
        None
    );
    store
        .delete_rescue(&first.key())
        .await
        .expect("deleting again is no error");
    assert_eq!(
        store.find_rescue(&second.key()).await.expect("up"),
        Some(second)
    );
}

#[tokio::test]
async fn memory_rescue_store_contract() {
    let store = Arc::new(MemoryRescueStore::default());
    rescue_store_contract(store.clone(), store).await;
}

#[tokio::test]
async fn s3_rescue_store_contract() {
    let bucket = moto::create_bucket().await;
    let client = |s3| -> Arc<dyn RescueStore> { Arc::new(S3RescueStore::new(s3, &bucket)) };
    // The other client is another instance's: an SDK client of its own.
    let other = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(moto::sdk_config().await)
            .force_path_style(true)
            .build(),
    );
    rescue_store_contract(client(moto::s3().await), client(other)).await;
}

async fn the_tenant_registry_is_replaced_only_at_the_version_read(store: Arc<impl Store>) {
    assert_eq!(store.tenants().await.expect("read"), Tenants::default());
    let acme = TenantId::parse("acme").expect("valid");
    let first = Tenants::default()
        .with(
            acme.clone(),
            vec![PrincipalPattern::parse("arn:aws:iam::1:user/a*").expect("valid")],
        )
        .expect("valid");
    let stored = store
        .replace_tenants(&first)
        .await
        .expect("write")
        .expect("the first write wins");
    assert_eq!(stored.version, 1);
    assert_eq!(store.tenants().await.expect("read"), stored);
    // A second write from the same (now stale) read loses.
    let stale = first
        .with(TenantId::parse("beta").expect("valid"), Vec::new())
        .expect("valid");
    assert_eq!(store.replace_tenants(&stale).await.expect("write"), None);
    let (without, removed) = stored.without(&acme);
    assert!(removed);
    let emptied = store
        .replace_tenants(&without)
        .await
        .expect("write")
        .expect("wins");
    assert_eq!((emptied.version, emptied.is_empty()), (2, true));
    assert_eq!(store.tenants().await.expect("read"), emptied);
}

async fn one_name_in_two_tenants_is_two_connections(store: Arc<impl Store>) {
    let acme = TenantId::parse("acme").expect("valid");
    let in_acme = |name: &str| {
        let mut c = connection(name);
        c.id = ConnectionId::parse_in(&acme, name).expect("valid");
        c
    };
    let ours = store
        .create(&connection("shared"))
        .await
        .expect("default's");
    let theirs = store.create(&in_acme("shared")).await.expect("acme's");
    store.create(&in_acme("acme-only")).await.expect("acme's");
    assert_eq!(store.get(&ours.id).await.expect("read"), Some(ours.clone()));
    assert_eq!(
        store.get(&theirs.id).await.expect("read"),
        Some(theirs.clone())
    );
    let names = |page: connector::ports::ListPage| -> Vec<String> {
        let mut names: Vec<_> = page
            .connections
            .iter()
            .map(|c| c.id.name().to_owned())
            .collect();
        names.sort();
        names
    };
    let listed = |tenant: TenantId| ListQuery {
        tenant,
        limit: 100,
        ..ListQuery::default()
    };
    assert_eq!(
        names(
            store
                .list(&listed(TenantId::default_tenant()))
                .await
                .expect("page")
        ),
        ["shared"]
    );
    assert_eq!(
        names(store.list(&listed(acme.clone())).await.expect("page")),
        ["acme-only", "shared"]
    );
    // Another tenant's cursor starts no page here.
    let first = store
        .list(&ListQuery {
            limit: 1,
            ..listed(acme.clone())
        })
        .await
        .expect("page");
    let cursor = first.next_cursor.expect("more");
    let foreign = store
        .list(&ListQuery {
            cursor: Some(cursor),
            ..listed(TenantId::default_tenant())
        })
        .await;
    assert!(
        matches!(foreign, Err(StoreError::InvalidCursor)),
        "{foreign:?}"
    );
    // Deleting one leaves the other.
    assert!(store.delete(&theirs.id).await.expect("delete"));
    assert_eq!(store.get(&ours.id).await.expect("read"), Some(ours));
}

async fn tags_are_a_setting_the_versioned_writes_keep(store: Arc<impl Store>) {
    let created = store.create(&connection("tagged")).await.expect("created");
    let tags = Tags::parse([("customer".to_owned(), "42".to_owned())].into()).expect("valid");
    let tagged = store
        .set_tags(&created.id, &tags)
        .await
        .expect("write")
        .expect("there");
    assert_eq!(
        (tagged.tags.clone(), tagged.version),
        (tags.clone(), created.version)
    );
    // A versioned write from a read that holds older tags (or none) leaves
    // them as stored.
    let newer = Tags::parse([("customer".to_owned(), "43".to_owned())].into()).expect("valid");
    store
        .set_tags(&created.id, &newer)
        .await
        .expect("write")
        .expect("there");
    for read in [tagged.clone(), created.clone()] {
        let version = store
            .get(&created.id)
            .await
            .expect("read")
            .expect("there")
            .version;
        let updated = store
            .update(&Connection {
                status_reason: Some("x".to_owned()),
                version,
                ..read
            })
            .await
            .expect("updated");
        assert_eq!(updated.tags, newer);
        let stored = store.get(&created.id).await.expect("read").expect("there");
        assert_eq!(stored.tags, newer);
    }
    let cleared = store
        .set_tags(&created.id, &Tags::default())
        .await
        .expect("write")
        .expect("there");
    assert!(cleared.tags.is_empty());
    let missing = ConnectionId::in_default_tenant("never-made").expect("valid");
    assert_eq!(store.set_tags(&missing, &tags).await.expect("write"), None);
}

async fn those_needing_a_person_are_listed_across_the_attention_shards(store: Arc<impl Store>) {
    let mut expected = Vec::new();
    for i in 0..20 {
        let id = format!("stuck-{i:02}");
        let created = store.create(&connection(&id)).await.expect("created");
        let mut marked = created.clone();
        marked.status = ConnectionStatus::NeedsReauth;
        store.update(&marked).await.expect("marked");
        expected.push(id);
    }
    store.create(&connection("fine")).await.expect("created");
    let query = |limit, cursor| ListQuery {
        status: Some(ConnectionStatus::NeedsReauth),
        limit,
        cursor,
        ..ListQuery::default()
    };
    // One page when the limit allows it.
    let page = store.list(&query(100, None)).await.expect("page");
    let mut all: Vec<_> = page
        .connections
        .iter()
        .map(|c| c.id.name().to_owned())
        .collect();
    all.sort();
    assert_eq!(all, expected);
    // Small pages: every one once.
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..40 {
        let page = store.list(&query(3, cursor)).await.expect("page");
        assert!(page.connections.len() <= 3);
        seen.extend(page.connections.iter().map(|c| c.id.name().to_owned()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, expected);
}

async fn the_token_call_pace_is_one_for_every_instance(store: Arc<impl Store>) {
    let pace = connector::domain::RequestPace::per_second(2);
    let now = 1_000_000;
    assert_eq!(store.take_token_call(pace, now).await.expect("pace"), None);
    assert_eq!(store.take_token_call(pace, now).await.expect("pace"), None);
    assert_eq!(
        store.take_token_call(pace, now).await.expect("pace"),
        Some(std::time::Duration::from_secs(1))
    );
    assert_eq!(
        store.take_token_call(pace, now + 500).await.expect("pace"),
        None
    );
}

/// A delete at a version removes the connection only while nothing wrote it
/// since; the mark of an import is written at creation and kept by every
/// versioned write.
async fn a_delete_at_a_version_touches_only_that_version(store: Arc<impl Store>) {
    let imported = Connection {
        imported_from: Some("0123456789abcdef".to_owned()),
        ..connection("imported")
    };
    let created = store.create(&imported).await.expect("created");
    let moved_on = store
        .update(&created.with_new_pair(pair("second"), Timestamp(2_000)))
        .await
        .expect("updated");
    assert_eq!(
        moved_on.imported_from.as_deref(),
        Some("0123456789abcdef"),
        "a versioned write keeps the import's mark"
    );
    let read = store
        .get(&imported.id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(read.imported_from, moved_on.imported_from);
    assert!(
        !store
            .delete_at_version(&imported.id, created.version)
            .await
            .expect("delete"),
        "the connection moved on: not deleted"
    );
    assert!(store.get(&imported.id).await.expect("read").is_some());
    assert!(
        store
            .delete_at_version(&imported.id, moved_on.version)
            .await
            .expect("delete")
    );
    assert!(store.get(&imported.id).await.expect("read").is_none());
    assert!(
        !store
            .delete_at_version(&imported.id, moved_on.version)
            .await
            .expect("a missing connection is no error")
    );
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(Arc::new(MemoryStore::new())).await;
                }
            )*
        }
        mod dynamodb {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(Arc::new(moto::fresh_store().await)).await;
                }
            )*
        }
    };
}

contract!(
    create_then_get_round_trips,
    create_of_existing_is_conflict_with_current_item,
    update_bumps_version,
    stale_version_write_is_conflict_with_current_item,
    update_of_missing_is_conflict_without_item,
    concurrent_writers_from_one_read_have_one_winner,
    session_completes_once_with_its_latest_state,
    expired_or_unknown_session_is_unusable,
    concurrent_completions_have_one_winner,
    commit_requires_the_same_lease_and_version,
    a_live_lease_cannot_be_claimed_but_an_expired_one_can,
    due_connections_come_from_the_sparse_index,
    connections_list_in_pages_and_those_needing_a_person_by_status,
    one_run_holds_the_run_lock_until_it_expires_or_is_given_back,
    each_shard_has_a_lease_of_its_own,
    settings_and_versioned_writes_touch_only_their_own,
    the_budget_paces_and_checks_the_token,
    the_budget_grants_slices_of_what_fits,
    the_tenant_registry_is_replaced_only_at_the_version_read,
    one_name_in_two_tenants_is_two_connections,
    tags_are_a_setting_the_versioned_writes_keep,
    those_needing_a_person_are_listed_across_the_attention_shards,
    the_token_call_pace_is_one_for_every_instance,
    a_delete_at_a_version_touches_only_that_version,
);

/// A connection marked before the attention index had shards carries the
/// status alone: it is still listed, and a write moves it to its own shard.
#[tokio::test]
async fn a_connection_marked_before_shards_is_still_listed() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let store = moto::fresh_store().await;
    // "c" falls in shard 7 of 8.
    let created = store.create(&connection("c")).await.expect("created");
    let mut marked = created.clone();
    marked.status = ConnectionStatus::NeedsReauth;
    let marked = store.update(&marked).await.expect("marked");
    let dynamodb = moto::dynamodb().await;
    let key = |pk: &str| {
        std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
            ("sk".to_owned(), AttributeValue::S("CONN".to_owned())),
        ])
    };
    let attention = || async {
        dynamodb
            .get_item()
            .table_name(store.table())
            .set_key(Some(key("CONN#c")))
            .send()
            .await
            .expect("read")
            .item()
            .and_then(|i| i.get("attention"))
            .and_then(|a| a.as_s().ok())
            .cloned()
    };
    assert_eq!(attention().await.as_deref(), Some("needs_reauth#7"));
    dynamodb
        .update_item()
        .table_name(store.table())
        .set_key(Some(key("CONN#c")))
        .update_expression("SET attention = :old")
        .expression_attribute_values(":old", AttributeValue::S("needs_reauth".to_owned()))
        .send()
        .await
        .expect("as before shards");
    let listed = store
        .list(&ListQuery {
            status: Some(ConnectionStatus::NeedsReauth),
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .expect("page");
    assert_eq!(listed.connections.len(), 1);
    // The next write puts it in its shard.
    store
        .update(&Connection {
            status_reason: Some("revoked".to_owned()),
            ..marked
        })
        .await
        .expect("written");
    assert_eq!(attention().await.as_deref(), Some("needs_reauth#7"));
}
