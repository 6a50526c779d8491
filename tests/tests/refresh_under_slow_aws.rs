//! The refresh protocol when AWS is slow or fails twice: a second worker racing a
//! holder whose read, claim, credentials read or commit is slowed past the lease
//! never makes RD see one refresh token presented twice at once, nor a dead one;
//! a pair whose commit and status write both failed is restored from the rescue
//! store without calling RD; a scheduled run never outlives its invocation.

use std::sync::atomic::Ordering;
use std::time::Duration;

use connector::clock::Clock;
use connector::domain::{ConnectionId, ConnectionStatus, Lease, Product};
use connector::inbound::schedule::Refresher;
use connector::ports::EventKind;
use connector::secret::ExposeSecret;
use connector::services::refresh_protocol::{
    LeaseTiming, RefreshFailure, RefreshRequest, RefreshSettings, Refreshed,
};
use integration_tests::refresh_app::{LATE_WRITE_BOUND, RefreshApp, settings_for};
use lambda_runtime::{Context, LambdaEvent};

/// Seconds until a fresh CRM pair (2 h) is inside the 15-minute margin.
const CRM_NEARLY_EXPIRED: i64 = 7_200 - 300;
/// Longer than the lease of [`slow_settings`].
const PAST_THE_LEASE: Duration = Duration::from_millis(3_500);
/// RD's answer time: well inside T.
const RD_LATENCY: Duration = Duration::from_millis(800);

/// T = 1 s, commit budget 1 s, skew allowance 0.5 s, L = 3 s: accepted by the
/// same check the service applies at load.
fn slow_settings() -> RefreshSettings {
    settings_for(LeaseTiming {
        token_timeout: Duration::from_secs(1),
        commit_budget: Duration::from_secs(1),
        lease: Duration::from_secs(3),
        clock_skew: Duration::from_millis(500),
    })
}

async fn due_crm_connection(app: &RefreshApp, id: &str) -> String {
    let c = app.connect(id, Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    app.sandbox.sandbox.set_token_latency(RD_LATENCY);
    c.tokens.refresh_token.expose_secret().to_owned()
}

fn spawn_refresh(
    app: &RefreshApp,
    id: &str,
) -> tokio::task::JoinHandle<Result<Refreshed, RefreshFailure>> {
    let engine = app.engine.clone();
    let id = ConnectionId::in_default_tenant(id).expect("valid");
    tokio::spawn(async move { engine.refresh(&id, RefreshRequest::default()).await })
}

/// What RD must never have seen, and the connection must end as.
async fn assert_single_spend(app: &RefreshApp, id: &str, token_calls: u64) {
    let stats = app.sandbox.sandbox.stats();
    assert_eq!(
        stats.overlapping_presentations, 0,
        "two calls presented one refresh token at once"
    );
    assert_eq!(
        stats.dead_refresh_token_presentations, 0,
        "a spent refresh token was presented"
    );
    assert_eq!(stats.token_calls, token_calls, "{stats:?}");
    let stored = app.stored(id).await;
    assert_eq!(
        stored.status,
        ConnectionStatus::Active,
        "{:?}",
        stored.status_reason
    );
    assert!(app.usable(id).await);
}

#[tokio::test]
async fn a_slow_read_does_not_shorten_the_lease_a_second_worker_sees() {
    let app = RefreshApp::start_with(slow_settings()).await;
    due_crm_connection(&app, "slow-read").await;
    let calls = app.sandbox.sandbox.stats().token_calls;

    app.store.slow_next_get(PAST_THE_LEASE);
    let first = spawn_refresh(&app, "slow-read");
    // The first worker's claim has landed; a second worker comes along.
    app.store.wait_for_claims(1).await;
    let second = app.refresh("slow-read", RefreshRequest::default()).await;
    let first = first.await.expect("joined");

    assert!(matches!(first, Ok(Refreshed::Rotated(_))), "{first:?}");
    assert!(
        matches!(second, Ok(Refreshed::ByOtherWorker(_))),
        "{second:?}"
    );
    assert_single_spend(&app, "slow-read", calls + 1).await;
}

#[tokio::test]
async fn a_claim_answered_past_its_lease_does_not_call_rd() {
    let app = RefreshApp::start_with(slow_settings()).await;
    due_crm_connection(&app, "slow-claim").await;
    let calls = app.sandbox.sandbox.stats().token_calls;

    app.store.slow_next_claim_answer(PAST_THE_LEASE);
    let first = spawn_refresh(&app, "slow-claim");
    app.store.wait_for_claims(1).await;
    // Waits for the first worker's lease; once it has expired, the first
    // worker's writes may still land (it may have rotated, for all the second
    // knows): it backs off until they would have, then takes over.
    let second = app.refresh("slow-claim", RefreshRequest::default()).await;
    assert!(
        matches!(second, Err(RefreshFailure::BackingOff { .. })),
        "{second:?}"
    );
    let first = first.await.expect("joined");
    app.advance(LATE_WRITE_BOUND.as_secs() as i64);
    let second = app.refresh("slow-claim", RefreshRequest::default()).await;

    assert!(matches!(second, Ok(Refreshed::Rotated(_))), "{second:?}");
    assert!(matches!(first, Err(RefreshFailure::OutOfTime)), "{first:?}");
    assert_single_spend(&app, "slow-claim", calls + 1).await;
}

#[tokio::test]
async fn a_slow_credentials_read_happens_before_the_claim() {
    let app = RefreshApp::start_with(slow_settings()).await;
    due_crm_connection(&app, "slow-secret").await;
    let calls = app.sandbox.sandbox.stats().token_calls;

    app.credentials.slow_next_read(PAST_THE_LEASE);
    let reads = app.credentials.reads();
    let first = spawn_refresh(&app, "slow-secret");
    app.credentials.wait_for_reads(reads + 1).await;
    let second = app.refresh("slow-secret", RefreshRequest::default()).await;
    let first = first.await.expect("joined");

    assert!(matches!(second, Ok(Refreshed::Rotated(_))), "{second:?}");
    assert!(
        matches!(
            first,
            Ok(Refreshed::AlreadyFresh(_) | Refreshed::ByOtherWorker(_))
        ),
        "{first:?}"
    );
    assert_single_spend(&app, "slow-secret", calls + 1).await;
}

#[tokio::test]
async fn a_commit_slowed_past_the_lease_is_rescued_before_the_lease_ends() {
    let app = RefreshApp::start_with(slow_settings()).await;
    let spent = due_crm_connection(&app, "slow-commit").await;
    let calls = app.sandbox.sandbox.stats().token_calls;

    app.store.slow_next_commit(PAST_THE_LEASE);
    let first = spawn_refresh(&app, "slow-commit");
    app.store.wait_for_claims(1).await;
    let second = app.refresh("slow-commit", RefreshRequest::default()).await;
    let first = first.await.expect("joined");

    assert!(
        matches!(first, Err(RefreshFailure::PossiblyLost(_))),
        "{first:?}"
    );
    match second {
        Ok(Refreshed::Restored(c)) => {
            assert_ne!(c.tokens.refresh_token.expose_secret(), spent)
        }
        other => panic!("expected the rescued pair, got {other:?}"),
    }
    assert_single_spend(&app, "slow-commit", calls + 1).await;
    assert!(app.rescues.peek().await.is_empty());
}

/// The probe of a holder whose commit, rescue put and status write are each
/// abandoned at its deadline and applied by AWS afterwards (2.5 s after being
/// sent; the lease is 3 s, the late-write bound 3 s). A second instance (its own
/// clients and gate) arrives as the lease ends: it must neither look for a
/// rescued pair nor present the token before the holder's writes could have
/// landed; once they have, it finds the connection refreshed, the spent token
/// having been presented once. (Before: it took over at the lease's end, found
/// no pair yet, and presented the spent token: the connection's only hope was
/// the late put and the next run.)
#[tokio::test]
async fn a_holder_whose_writes_land_after_its_lease_is_not_taken_over_too_soon() {
    let mut settings = slow_settings();
    settings.late_write_bound = Duration::from_secs(3);
    let app = RefreshApp::start_with(settings).await;
    let spent = due_crm_connection(&app, "late-writes").await;
    let calls = app.sandbox.sandbox.stats().token_calls;
    let other = app.second_instance().await;

    let late = Duration::from_millis(2_500);
    app.store.land_late_next_commit(late);
    app.rescues
        .land_late_next_put(late, app.store.landed_late.clone());
    app.store.land_late_next_update(late);
    let holder = app.refresh("late-writes", RefreshRequest::default()).await;
    assert!(holder.is_err(), "every write was abandoned: {holder:?}");
    // Arrives while the lease is live: waits for it, then for the late writes.
    let id = ConnectionId::in_default_tenant("late-writes").expect("valid");
    let early = other.refresh(&id, RefreshRequest::default()).await;
    assert!(
        matches!(early, Err(RefreshFailure::BackingOff { .. })),
        "{early:?}"
    );
    assert_eq!(
        app.sandbox.sandbox.refresh_calls_for(&spent),
        1,
        "the spent token was presented again"
    );
    // The three late writes land; the bound passes.
    app.store.wait_for_late_landings(3).await;
    app.advance(3);
    let later = other.refresh(&id, RefreshRequest::default()).await;
    assert!(later.is_ok(), "{later:?}");
    app.run().await;
    assert_eq!(app.sandbox.sandbox.refresh_calls_for(&spent), 1);
    assert_single_spend(&app, "late-writes", calls + 1).await;
}

/// A possibly lost connection whose pair another look restores while this
/// refresh was restoring it: the refresh reports the connection as it
/// is stored then (active), not as it read it before waiting, so a run's
/// summary (which feeds the "connections need a person" alarm) does not count
/// it as lost. (Before: PossiblyLost with the stale read.)
#[tokio::test]
async fn a_connection_restored_by_another_look_is_not_reported_lost() {
    let app = RefreshApp::start().await;
    app.connect("found-meanwhile", Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    app.store.fail_commits.store(true, Ordering::SeqCst);
    let outcome = app
        .refresh("found-meanwhile", RefreshRequest::default())
        .await;
    app.store.fail_commits.store(false, Ordering::SeqCst);
    assert!(
        matches!(outcome, Err(RefreshFailure::PossiblyLost(_))),
        "{outcome:?}"
    );
    assert_eq!(app.rescues.peek().await.len(), 1);
    // A refresh finds the pair and is slow to restore it; meanwhile another
    // instance's sweep restores it.
    app.rescues.slow_next_find(Duration::from_millis(1500));
    let engine = app.engine.clone();
    let refresh = tokio::spawn(async move {
        engine
            .refresh(
                &connector::domain::ConnectionId::in_default_tenant("found-meanwhile").expect("id"),
                RefreshRequest::default(),
            )
            .await
    });
    app.rescues.wait_for_found(1).await;
    let drained = app.second_instance().await.drain_rescues().await;
    assert_eq!(drained.restored.len(), 1);
    let refreshed = refresh.await.expect("joined");
    assert!(
        matches!(refreshed, Ok(Refreshed::ByOtherWorker(ref c)) if c.status == ConnectionStatus::Active),
        "{refreshed:?}"
    );
}

/// Commit and status write both fail: the item is left `active` with the spent
/// token and an expired lease whose intent names it.
async fn rotate_with_table_unavailable(app: &RefreshApp, id: &str) -> String {
    let spent = app.connect(id, Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    app.store.fail_commits.store(true, Ordering::SeqCst);
    app.store.fail_updates.store(true, Ordering::SeqCst);
    let outcome = app.refresh(id, RefreshRequest::default()).await;
    assert!(
        matches!(outcome, Err(RefreshFailure::Store(_))),
        "{outcome:?}"
    );
    app.store.fail_commits.store(false, Ordering::SeqCst);
    app.store.fail_updates.store(false, Ordering::SeqCst);
    let stored = app.stored(id).await;
    assert_eq!(stored.status, ConnectionStatus::Active);
    assert_eq!(stored.tokens.refresh_token, spent.tokens.refresh_token);
    assert!(stored.intent.is_some() && stored.lease.is_some());
    spent.tokens.refresh_token.expose_secret().to_owned()
}

#[tokio::test]
async fn the_next_claimer_restores_a_rescued_pair_without_calling_rd() {
    let app = RefreshApp::start().await;
    let spent = rotate_with_table_unavailable(&app, "twice-failed").await;
    // The lease expires; the next caller (not a run) takes over.
    app.advance(3);
    let calls = app.sandbox.sandbox.stats().token_calls;

    match app.refresh("twice-failed", RefreshRequest::default()).await {
        Ok(Refreshed::Restored(c)) => assert_ne!(c.tokens.refresh_token.expose_secret(), spent),
        other => panic!("expected a restore, got {other:?}"),
    }
    let stats = app.sandbox.sandbox.stats();
    assert_eq!(stats.token_calls, calls, "RD was not called");
    assert_eq!(stats.dead_refresh_token_presentations, 0);
    assert_eq!(
        app.stored("twice-failed").await.status,
        ConnectionStatus::Active
    );
    assert!(app.usable("twice-failed").await);
}

#[tokio::test]
async fn a_pair_the_table_refused_waits_on_the_queue_and_the_next_run_restores_it() {
    let app = RefreshApp::start().await;
    rotate_with_table_unavailable(&app, "table-down").await;
    let queued = app.rescues.peek().await;
    assert_eq!(queued.len(), 1);
    assert!(app.sandbox.sandbox.access_token_is_valid(
        rd_sandbox::SandboxProduct::Crm,
        queued[0].tokens.access_token.expose_secret()
    ));
    let calls = app.sandbox.sandbox.stats().token_calls;

    app.advance(3);
    let summary = app.run().await;
    assert_eq!(summary.restored_from_rescue, 1, "{summary:?}");
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls);
    let after = app.stored("table-down").await;
    assert_eq!(after.tokens, queued[0].tokens);
    assert_eq!(after.status, ConnectionStatus::Active);
    assert!(app.rescues.peek().await.is_empty());
    assert_eq!(app.events_of(EventKind::ConnectionRecovered).len(), 1);
    assert!(app.usable("table-down").await);
}

#[tokio::test]
async fn a_pair_neither_table_nor_queue_takes_is_reported_lost_loudly() {
    let app = RefreshApp::start().await;
    app.connect("nowhere", Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    app.store.fail_commits.store(true, Ordering::SeqCst);
    app.rescues.fail_puts.store(true, Ordering::SeqCst);

    let outcome = app.refresh("nowhere", RefreshRequest::default()).await;
    match outcome {
        Err(RefreshFailure::PossiblyLost(c)) => {
            assert_eq!(c.status_reason.as_deref(), Some("rescue_failed"))
        }
        other => panic!("expected possibly_lost, got {other:?}"),
    }
    let lost = app.events_of(EventKind::ConnectionPossiblyLost);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].reason, "rescue_failed");
}

#[tokio::test]
async fn a_grant_rejected_after_a_concurrent_reconnect_returns_the_reconnected_pair() {
    let app = RefreshApp::start().await;
    let before = app.connect("regranted", Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    // The old grant is revoked at RD: the refresh in flight will be refused.
    assert!(
        app.sandbox
            .sandbox
            .revoke(before.tokens.refresh_token.expose_secret())
    );
    let refresh = app
        .refresh_until_rd_is_called("regranted", Duration::from_millis(150))
        .await;
    // A person connects the account again while RD is answering.
    let fresh = app.reconnect_now("regranted").await;

    match refresh.await.expect("joined") {
        Ok(Refreshed::ByOtherWorker(c)) => assert_eq!(c.tokens, fresh),
        other => panic!("expected the reconnected pair, got {other:?}"),
    }
    let after = app.stored("regranted").await;
    assert_eq!(after.status, ConnectionStatus::Active);
    assert!(app.events_of(EventKind::ConnectionNeedsReauth).is_empty());
}

#[tokio::test]
async fn a_run_never_works_past_its_invocation() {
    let app = RefreshApp::start_with(slow_settings()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = format!("late-{i}");
        app.connect(&id, Product::Crm).await;
        ids.push(id);
    }
    app.advance(CRM_NEARLY_EXPIRED);
    app.sandbox
        .sandbox
        .set_token_latency(Duration::from_millis(600));
    // Another worker (a proxy instance that died) holds every lease for 2.9 s more:
    // the run's first refresh waits that long for it before it may claim.
    let held_until = app.clock.now_ms() + 2_900;
    for id in &ids {
        let c = app.stored(id).await;
        let held = connector::domain::Connection {
            lease: Some(Lease {
                id: "dead-worker".to_owned(),
                deadline_ms: held_until,
            }),
            ..c
        };
        app.engine.store.update(&held).await.expect("held");
    }
    let refresher = app.assembly.refresher(1);
    // Room for one lease after the wait (claimed at about 2.9 s, ending by about
    // 5.9 s; the finish line is 6.5 s), not for a second one started after the
    // first's 0.6 s call.
    let deadline = app.clock.now_ms() + 7_500;
    let mut context = Context::default();
    context.deadline = deadline as u64;
    let event = LambdaEvent::new(
        serde_json::from_str(include_str!("../fixtures/eventbridge/scheduled-event.json"))
            .expect("EventBridge event"),
        context,
    );
    let summary = refresher.handle(event).await.expect("handled");

    let returned_at = app.clock.now_ms();
    let lease_ends = app.store.claimed_lease_ends();
    assert!(!lease_ends.is_empty(), "{summary:?}");
    // A lease may run past the invocation; the work under it may not: each
    // holder works to the earlier of its lease and the run's finish line (one
    // second before the deadline, kept to report), and the handler returns only
    // once every refresh it started is over.
    assert!(
        returned_at <= deadline,
        "the run returned {} ms after its invocation ended",
        returned_at - deadline
    );
    assert!(summary.left_for_next_run >= 1, "{summary:?}");
    for id in &ids {
        let c = app.stored(id).await;
        assert!(
            c.live_lease(returned_at).is_none(),
            "{id}: a lease was left live when the handler returned"
        );
        assert_eq!(c.status, ConnectionStatus::Active);
    }
    assert_eq!(app.sandbox.sandbox.stats().overlapping_presentations, 0);
}

#[tokio::test]
async fn a_run_whose_every_due_index_query_failed_is_a_failed_invocation() {
    let app = RefreshApp::start().await;
    // A table the run's store cannot find: every shard query fails.
    let missing = integration_tests::moto::unique_name("no-such-table");
    let store = connector::outbound::dynamodb::DynamoStore::new(
        integration_tests::moto::dynamodb().await,
        missing,
    );
    let mut engine = app.engine.clone();
    engine.store = std::sync::Arc::new(store);
    let refresher = Refresher {
        engine,
        concurrency: 1,
        run_lock: std::sync::Arc::new(connector::outbound::memory::MemoryStore::new()),
        shard_leases: std::sync::Arc::new(connector::outbound::memory::MemoryStore::new()),
        legacy_rescues: None,
        work_queue: None,
        tenants: std::sync::Arc::new(connector::outbound::memory::MemoryStore::new()),
    };
    let mut context = Context::default();
    context.deadline = (app.clock.now_ms() + 60_000) as u64;
    let event = LambdaEvent::new(
        serde_json::from_str(include_str!("../fixtures/eventbridge/scheduled-event.json"))
            .expect("EventBridge event"),
        context,
    );
    match refresher.handle(event).await {
        Err(connector::inbound::schedule::HandlerError::DueIndexUnavailable { shards }) => {
            assert!(shards > 0)
        }
        other => panic!("expected a failed invocation, got {other:?}"),
    }
}

/// Found by the fault soak: a commit that landed while every answer to it was
/// lost left a Marketing connection `possibly_lost` for good. Its refresh token is
/// stable, so "the spent token is still stored" held after the commit too; the
/// rescued pair was then found superseded and nothing ever cleared the status.
#[tokio::test]
async fn a_commit_that_landed_with_its_answers_lost_leaves_the_connection_active() {
    for product in [Product::Marketing, Product::Crm] {
        let app = RefreshApp::start().await;
        let before = app.connect("landed", product).await;
        app.store.lose_commit_answers.store(true, Ordering::SeqCst);
        let outcome = app.refresh("landed", RefreshRequest::forced()).await;
        app.store.lose_commit_answers.store(false, Ordering::SeqCst);
        assert!(outcome.is_ok(), "{product:?}: {outcome:?}");
        let stored = app.stored("landed").await;
        assert_eq!(stored.status, ConnectionStatus::Active, "{product:?}");
        assert_ne!(stored.tokens.access_token, before.tokens.access_token);
        assert!(app.usable("landed").await, "{product:?}");
        // The rescued copy is found superseded; nothing changes.
        app.run().await;
        let after = app.stored("landed").await;
        assert_eq!(after.status, ConnectionStatus::Active, "{product:?}");
        assert_eq!(after.tokens, stored.tokens);
    }
}
