//! The single-spend refresh protocol against DynamoDB on moto and the RD Station
//! sandbox over loopback, under races, held calls, lost answers, failing commits,
//! revoked grants and refused credentials.

use std::sync::atomic::Ordering;
use std::time::Duration;

use connector::clock::Clock;
use connector::domain::{ConnectionId, ConnectionStatus, Product};
use connector::ports::EventKind;
use connector::secret::ExposeSecret;
use connector::services::refresh_protocol::{
    RefreshFailure, RefreshRequest, RefreshSettings, Refreshed,
};
use integration_tests::refresh_app::{RefreshApp, crowd_settings, test_settings};
use rd_sandbox::Fault;

/// Seconds until a fresh CRM pair (2 h) is inside the 15-minute margin.
const CRM_NEARLY_EXPIRED: i64 = 7_200 - 300;

/// Seconds until a fresh pair of `product` is inside its refresh margin.
fn nearly_expired(product: Product) -> i64 {
    match product {
        Product::Crm => CRM_NEARLY_EXPIRED,
        Product::Marketing => 86_400 - 300,
    }
}

/// A sandbox where `product`'s refresh tokens roll on every use: CRM always, and
/// Marketing as RD's newer Marketing OAuth server does.
async fn rolling_app(product: Product) -> RefreshApp {
    rolling_app_with(product, test_settings()).await
}

/// [`rolling_app`] with `settings`.
async fn rolling_app_with(product: Product, settings: RefreshSettings) -> RefreshApp {
    let app = RefreshApp::start_with(settings).await;
    if product == Product::Marketing {
        app.sandbox.sandbox.set_marketing_rolling(true);
    }
    app
}

/// Runs a protocol case for CRM and for Marketing with rolling refresh tokens.
macro_rules! for_rolling_products {
    ($case:ident: $crm:ident, $marketing:ident) => {
        #[tokio::test]
        async fn $crm() {
            $case(Product::Crm).await;
        }

        #[tokio::test]
        async fn $marketing() {
            $case(Product::Marketing).await;
        }
    };
}

for_rolling_products!(fifty_concurrent_refreshes_and_a_run_spend_the_token_once:
    fifty_concurrent_refreshes_and_a_run_spend_a_crm_token_once,
    fifty_concurrent_refreshes_and_a_run_spend_a_rolling_marketing_token_once);

/// With [`crowd_settings`]: fifty waiting callers' reads queue the holder's
/// commit behind them on moto.
async fn fifty_concurrent_refreshes_and_a_run_spend_the_token_once(product: Product) {
    let app = rolling_app_with(product, crowd_settings()).await;
    let before = app.connect("race", product).await;
    app.advance(nearly_expired(product));
    let calls_before = app.sandbox.sandbox.stats().token_calls;
    // Two instances, as two Lambda environments: own SDK clients, own gate.
    let engines = [app.engine.clone(), app.second_instance().await];

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let engine = engines[i % 2].clone();
        let id = before.id.clone();
        tasks.spawn(async move {
            engine
                .refresh(&id, RefreshRequest::default())
                .await
                .map(|r| {
                    (
                        matches!(r, Refreshed::Rotated(_)),
                        r.connection().tokens.clone(),
                    )
                })
        });
    }
    let run = app.run();
    let (results, summary) = tokio::join!(tasks.join_all(), run);

    let after = app.stored("race").await;
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls - calls_before,
        1,
        "exactly one token call"
    );
    assert_eq!(
        app.sandbox
            .sandbox
            .refresh_calls_for(before.tokens.refresh_token.expose_secret()),
        1
    );
    let mut rotations = summary.refreshed;
    for result in &results {
        let (rotated, tokens) = result.as_ref().expect("every caller gets a pair");
        assert_eq!(tokens, &after.tokens);
        rotations += u64::from(*rotated);
    }
    assert_eq!(
        rotations, 1,
        "one caller (or the run) rotated; the rest got its pair"
    );
    // The run may query the index before or after the commit.
    assert_eq!(summary.refreshed + summary.fresh_already, summary.due);
    assert_eq!(
        after.version,
        before.version + 2,
        "one claim and one commit"
    );
    assert_ne!(after.tokens.refresh_token, before.tokens.refresh_token);
    assert!(after.lease.is_none() && after.intent.is_none());
    assert!(app.usable("race").await);
}

for_rolling_products!(a_held_call_is_never_doubled_and_a_later_attempt_succeeds:
    a_held_crm_call_is_never_doubled_and_a_later_attempt_succeeds,
    a_held_rolling_marketing_call_is_never_doubled_and_a_later_attempt_succeeds);

async fn a_held_call_is_never_doubled_and_a_later_attempt_succeeds(product: Product) {
    let app = rolling_app(product).await;
    let before = app.connect("held", product).await;
    let token = before.tokens.refresh_token.expose_secret().to_owned();
    app.advance(nearly_expired(product));
    // Held well past T (500 ms) without being processed.
    app.sandbox
        .sandbox
        .inject_fault(Fault::hang(Duration::from_secs(3)), 1);

    match app.refresh("held", RefreshRequest::default()).await {
        Err(RefreshFailure::Ambiguous { .. }) => {}
        other => panic!("expected an ambiguous outcome, got {other:?}"),
    }
    assert_eq!(
        app.sandbox.sandbox.token_calls_held(),
        1,
        "RD is still holding the call"
    );
    let stored = app.stored("held").await;
    assert!(stored.intent.as_ref().is_some_and(|i| i.ambiguous));
    assert_eq!(stored.status, ConnectionStatus::Active);

    // While it is held, nobody presents the token again: not callers (on this
    // instance or another), not a run.
    let engines = [app.engine.clone(), app.second_instance().await];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let engine = engines[i % 2].clone();
        let id = before.id.clone();
        tasks.spawn(async move { engine.refresh(&id, RefreshRequest::default()).await });
    }
    let (results, summary) = tokio::join!(tasks.join_all(), app.run());
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(RefreshFailure::BackingOff { .. })))
    );
    // The backoff moved its due time: the index does not even return it.
    assert_eq!(summary.due, 0);
    assert_eq!(summary.backing_off, 0);
    assert_eq!(app.sandbox.sandbox.refresh_calls_for(&token), 1);

    app.sandbox.sandbox.wait_until_idle().await;
    assert_eq!(app.sandbox.sandbox.refresh_calls_for(&token), 1);

    // After the ambiguous-retry wait, the same token is presented again and works.
    app.advance(61);
    match app.refresh("held", RefreshRequest::default()).await {
        Ok(Refreshed::Rotated(c)) => {
            assert_ne!(c.tokens.refresh_token, before.tokens.refresh_token)
        }
        other => panic!("expected a rotation, got {other:?}"),
    }
    assert_eq!(app.sandbox.sandbox.refresh_calls_for(&token), 2);
    assert_eq!(
        app.sandbox.sandbox.stats().dead_refresh_token_presentations,
        0
    );
    let after = app.stored("held").await;
    assert!(after.intent.is_none() && after.backoff.failures == 0);
    assert!(app.usable("held").await);
}

for_rolling_products!(a_rotation_lost_in_flight_is_possibly_lost_never_needs_reauth:
    a_crm_rotation_lost_in_flight_is_possibly_lost_never_needs_reauth,
    a_rolling_marketing_rotation_lost_in_flight_is_possibly_lost_never_needs_reauth);

async fn a_rotation_lost_in_flight_is_possibly_lost_never_needs_reauth(product: Product) {
    let app = rolling_app(product).await;
    app.connect("dropped", product).await;
    app.advance(nearly_expired(product));
    app.sandbox
        .sandbox
        .inject_fault(Fault::DropAfterProcessing, 1);

    assert!(matches!(
        app.refresh("dropped", RefreshRequest::default()).await,
        Err(RefreshFailure::Ambiguous { .. })
    ));
    app.advance(61);
    assert!(matches!(
        app.refresh("dropped", RefreshRequest::default()).await,
        Err(RefreshFailure::PossiblyLost(_))
    ));
    let stored = app.stored("dropped").await;
    assert_eq!(stored.status, ConnectionStatus::PossiblyLost);
    assert_eq!(stored.status_reason.as_deref(), Some("lost_in_flight"));
    let lost = app.events_of(EventKind::ConnectionPossiblyLost);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].reason, "lost_in_flight");
    assert_eq!(lost[0].connection_id.as_ref(), Some(&stored.id));
    assert!(app.events_of(EventKind::ConnectionNeedsReauth).is_empty());

    // No more provider calls for it.
    let calls = app.sandbox.sandbox.stats().token_calls;
    app.advance(3_600);
    let summary = app.run().await;
    assert_eq!(summary.due, 0);
    assert!(matches!(
        app.refresh("dropped", RefreshRequest::forced()).await,
        Err(RefreshFailure::PossiblyLost(_))
    ));
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls);
}

#[tokio::test]
async fn a_dead_holders_lease_is_taken_and_its_intent_classifies_the_outcome() {
    let app = RefreshApp::start().await;
    let c = app.connect("orphan", Product::Crm).await;
    // A worker claimed, RD rotated, and the worker died before committing.
    let claimed = connector::domain::Connection {
        lease: Some(connector::domain::Lease {
            id: "dead-worker".to_owned(),
            deadline_ms: app.clock.now_ms() + 1_000,
        }),
        intent: Some(connector::domain::RefreshIntent {
            refresh_token_fingerprint: c.tokens.refresh_token.fingerprint(),
            ambiguous: false,
        }),
        ..c.clone()
    };
    app.engine.store.update(&claimed).await.expect("claimed");
    let credentials = connector::ports::ClientCredentials {
        client_id: app.sandbox_config.crm.client_id.clone(),
        client_secret: connector::secret::ClientSecret::new(
            app.sandbox_config.crm.client_secret.clone(),
        ),
    };
    app.engine
        .token_endpoint
        .refresh(Product::Crm, &credentials, &c.tokens.refresh_token)
        .await
        .expect("RD rotated for the dead worker");
    app.advance(CRM_NEARLY_EXPIRED);

    assert!(matches!(
        app.refresh("orphan", RefreshRequest::default()).await,
        Err(RefreshFailure::PossiblyLost(_))
    ));
    let stored = app.stored("orphan").await;
    assert_eq!(stored.status_reason.as_deref(), Some("lost_in_flight"));
}

#[tokio::test]
async fn failed_commits_go_to_a_rescue_item_and_the_next_run_restores_them() {
    let app = RefreshApp::start().await;
    let before = app.connect("rescued", Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    app.store.fail_commits.store(true, Ordering::SeqCst);

    match app.refresh("rescued", RefreshRequest::default()).await {
        Err(RefreshFailure::PossiblyLost(c)) => {
            assert_eq!(c.status_reason.as_deref(), Some("commit_failed"))
        }
        other => panic!("expected possibly_lost, got {other:?}"),
    }
    let rescues = app.rescues.peek().await;
    assert_eq!(rescues.len(), 1);
    let rescued = &rescues[0];
    assert_ne!(rescued.tokens.refresh_token, before.tokens.refresh_token);
    assert!(app.sandbox.sandbox.access_token_is_valid(
        rd_sandbox::SandboxProduct::Crm,
        rescued.tokens.access_token.expose_secret()
    ));
    assert_eq!(
        app.stored("rescued").await.status,
        ConnectionStatus::PossiblyLost
    );
    let lost = app.events_of(EventKind::ConnectionPossiblyLost);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].reason, "commit_failed");

    app.store.fail_commits.store(false, Ordering::SeqCst);
    // The next run is another instance's (its own clients and gate).
    let other = app.second_instance().await;
    let summary = connector::services::scheduled_refresh::run(
        &other,
        &connector::services::scheduled_refresh::RunLimits {
            concurrency: 32,
            finish_by_ms: None,
            counted_tenants: vec![connector::domain::TenantId::default_tenant()],
        },
    )
    .await;
    assert_eq!(summary.restored_from_rescue, 1);
    let after = app.stored("rescued").await;
    assert_eq!(after.status, ConnectionStatus::Active);
    assert_eq!(after.tokens, rescued.tokens);
    assert!(app.rescues.peek().await.is_empty());
    assert_eq!(app.events_of(EventKind::ConnectionRecovered).len(), 1);
    assert!(app.usable("rescued").await);
    // The restored refresh token is alive: it refreshes.
    assert!(matches!(
        other.refresh(&before.id, RefreshRequest::forced()).await,
        Ok(Refreshed::Rotated(_))
    ));
}

/// Leaves connection `id`'s rotated pair in the rescue store and the item's intent
/// naming the spent refresh token: RD rotates, then the commit and the status
/// write after it both fail. Returns the spent token's fingerprint and the
/// rescued pairs. The store is left failing plain updates (not lease writes).
async fn strand_a_rescued_pair(
    app: &RefreshApp,
    id: &str,
) -> (String, Vec<connector::ports::RescuedPair>) {
    let before = app.connect(id, Product::Crm).await;
    let spent = rd_sandbox::fingerprint(before.tokens.refresh_token.expose_secret());
    app.advance(CRM_NEARLY_EXPIRED);
    app.store.fail_commits.store(true, Ordering::SeqCst);
    app.store.fail_updates.store(true, Ordering::SeqCst);
    match app.refresh(id, RefreshRequest::default()).await {
        Err(RefreshFailure::Store(_)) => {}
        other => panic!("expected a store failure, got {other:?}"),
    }
    let rescued = app.rescues.peek().await;
    assert_eq!(rescued.len(), 1);
    app.store.fail_commits.store(false, Ordering::SeqCst);
    (spent, rescued)
}

/// How many times RD was shown the refresh token with fingerprint `spent`.
fn presentations(app: &RefreshApp, spent: &str) -> Option<u64> {
    app.sandbox
        .sandbox
        .stats()
        .rolling_calls_by_refresh_token
        .get(spent)
        .copied()
}

#[tokio::test]
async fn a_rescued_pair_that_cannot_be_restored_yet_keeps_the_spent_token_from_rd() {
    let app = RefreshApp::start().await;
    let (spent, rescued) = strand_a_rescued_pair(&app, "stranded").await;

    // The lease runs out. The store takes lease writes again but not yet plain
    // updates, so the next refresh finds the pair and cannot restore it.
    app.advance(10);
    match app.refresh("stranded", RefreshRequest::default()).await {
        Err(RefreshFailure::Store(_)) => {}
        other => panic!("expected a store failure, got {other:?}"),
    }
    assert_eq!(
        presentations(&app, &spent),
        Some(1),
        "RD was shown the spent refresh token again"
    );
    assert_eq!(
        app.sandbox.sandbox.stats().dead_refresh_token_presentations,
        0
    );
    // Still there for the next lookup, and a run's sweep reports it waiting, with
    // its age (what the rescue alarms watch).
    assert_eq!(app.rescues.peek().await.len(), 1);
    let summary = app.run().await;
    assert_eq!(summary.rescued_pairs_waiting, 1, "{summary:?}");
    assert!(summary.oldest_rescued_pair_age_seconds >= 10, "{summary:?}");
    assert_eq!(presentations(&app, &spent), Some(1));
    assert_eq!(
        app.stored("stranded").await.status,
        ConnectionStatus::Active
    );

    app.store.fail_updates.store(false, Ordering::SeqCst);
    match app.refresh("stranded", RefreshRequest::default()).await {
        Ok(Refreshed::Restored(c)) => assert_eq!(c.tokens, rescued[0].tokens),
        other => panic!("expected the rescued pair restored, got {other:?}"),
    }
    assert!(app.rescues.peek().await.is_empty());
    assert!(app.usable("stranded").await);
    assert_eq!(presentations(&app, &spent), Some(1));
}

#[tokio::test]
async fn a_takeover_on_another_instance_finds_the_pair_a_slow_sweep_holds() {
    let app = RefreshApp::start().await;
    let (spent, rescued) = strand_a_rescued_pair(&app, "in-flight").await;
    app.store.fail_updates.store(false, Ordering::SeqCst);
    app.advance(10);

    // One instance's scheduled sweep reads the pair and is slow to restore it.
    app.rescues.slow_next_find(Duration::from_millis(1500));
    let engine = app.engine.clone();
    let sweep = tokio::spawn(async move { engine.drain_rescues().await });
    app.rescues.wait_for_found(1).await;
    // Another instance (its own clients, no shared gate) takes the connection over
    // meanwhile: it must find the pair by key, not conclude that none was saved
    // and spend the token again.
    let other = app.second_instance().await;
    let outcome = other
        .refresh(
            &ConnectionId::in_default_tenant("in-flight").expect("id"),
            RefreshRequest::default(),
        )
        .await;
    match &outcome {
        Ok(Refreshed::Restored(c)) => assert_eq!(c.tokens, rescued[0].tokens),
        other => panic!("expected the other instance to restore the pair, got {other:?}"),
    }
    let report = sweep.await.expect("sweep");
    assert!(report.restored.is_empty(), "{report:?}");
    assert_eq!(report.superseded, 1, "{report:?}");
    assert_eq!(
        presentations(&app, &spent),
        Some(1),
        "RD was shown the spent refresh token again"
    );
    let stored = app.stored("in-flight").await;
    assert_eq!(stored.status, ConnectionStatus::Active);
    assert_eq!(stored.tokens, rescued[0].tokens);
    assert!(app.rescues.peek().await.is_empty());
    assert!(app.usable("in-flight").await);
}

#[tokio::test]
async fn a_revoked_grant_needs_reauth_after_one_call_and_is_left_alone() {
    let app = RefreshApp::start().await;
    for (id, product) in [("gone-mkt", Product::Marketing), ("gone-crm", Product::Crm)] {
        let c = app.connect(id, product).await;
        assert!(
            app.sandbox
                .sandbox
                .revoke(c.tokens.refresh_token.expose_secret())
        );
    }
    app.advance(86_400);
    let calls = app.sandbox.sandbox.stats().token_calls;
    let summary = app.run().await;
    assert_eq!(summary.due, 2);
    assert_eq!(summary.needs_reauth, 2);
    assert_eq!(
        summary.connections_needing_reauth, 0,
        "the gauge is counted as the run starts"
    );
    assert_eq!(
        app.sandbox.sandbox.stats().token_calls - calls,
        2,
        "one call each"
    );
    for id in ["gone-mkt", "gone-crm"] {
        let stored = app.stored(id).await;
        assert_eq!(stored.status, ConnectionStatus::NeedsReauth);
        assert_eq!(stored.status_reason.as_deref(), Some("revoked"));
    }
    let events = app.events_of(EventKind::ConnectionNeedsReauth);
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.reason == "revoked"));

    app.advance(86_400);
    let summary = app.run().await;
    assert_eq!(
        summary.due, 0,
        "needs_reauth connections leave the due index"
    );
    // ...and stay on the dashboard's gauge, counted on the attention index.
    assert_eq!(summary.connections_needing_reauth, 2);
    assert_eq!(summary.connections_possibly_lost, 0);
    assert_eq!(app.sandbox.sandbox.stats().token_calls - calls, 2);
}

#[tokio::test]
async fn two_hours_of_server_errors_mark_nothing_dead() {
    let app = RefreshApp::start().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        for product in Product::ALL {
            let id = format!("{product}-{i}");
            let c = app.connect(&id, product).await;
            ids.push((id, c.tokens.refresh_token.expose_secret().to_owned()));
        }
    }
    // Everything comes due; RD answers 500 to every token call, without processing.
    app.advance(86_400 - 600);
    app.sandbox
        .sandbox
        .inject_fault(Fault::ServerError, 1_000_000);
    let mut next_allowed = std::collections::HashMap::new();
    let mut calls_seen = std::collections::HashMap::new();
    let steps = 24;
    for _ in 0..=steps {
        app.run().await;
        let now = app.clock.now();
        for (id, token) in &ids {
            let calls = app.sandbox.sandbox.refresh_calls_for(token);
            let before = calls_seen.insert(id.clone(), calls).unwrap_or(0);
            if calls > before {
                assert_eq!(calls - before, 1, "{id}: one call per run at most");
                if let Some(allowed) = next_allowed.get(id) {
                    assert!(now >= *allowed, "{id}: called before its next_attempt_at");
                }
            }
            let stored = app.stored(id).await;
            assert_eq!(
                stored.status,
                ConnectionStatus::Active,
                "{id} must stay active"
            );
            if let Some(next) = stored.backoff.next_attempt_at {
                next_allowed.insert(id.clone(), next);
            }
        }
        app.advance(300);
    }
    for (id, token) in &ids {
        let calls = app.sandbox.sandbox.refresh_calls_for(token);
        println!(
            "{id}: {calls} token calls in two hours of 500s ({} runs)",
            steps + 1
        );
        assert!((2..=steps as u64 + 1).contains(&calls), "{id}: {calls}");
    }

    // RD recovers: every connection refreshes on the first run past its backoff.
    app.sandbox.sandbox.clear_faults();
    app.advance(901);
    let summary = app.run().await;
    assert_eq!(summary.refreshed, ids.len() as u64, "{summary:?}");
    for (id, _) in &ids {
        let stored = app.stored(id).await;
        assert_eq!(stored.status, ConnectionStatus::Active);
        assert_eq!(stored.backoff.failures, 0);
        assert!(app.usable(id).await);
    }
    assert_eq!(
        app.sandbox.sandbox.stats().dead_refresh_token_presentations,
        0
    );
}

#[tokio::test]
async fn refused_client_credentials_leave_connections_active_with_one_event_a_run() {
    let app = RefreshApp::start().await;
    for i in 0..3 {
        app.connect(&format!("creds-{i}"), Product::Crm).await;
    }
    let mut wrong = app.sandbox_config.clone();
    wrong.crm.client_secret = "a-secret-rd-does-not-know".to_owned();
    integration_tests::moto::secretsmanager()
        .await
        .put_secret_value()
        .secret_id(&app.secret_name)
        .secret_string(integration_tests::app::credentials_json(&wrong))
        .send()
        .await
        .expect("put");
    app.advance(CRM_NEARLY_EXPIRED);

    for run in 1..=2 {
        let summary = app.run().await;
        assert!(summary.deployment_credential_errors >= 1, "{summary:?}");
        assert_eq!(summary.needs_reauth + summary.possibly_lost, 0);
        assert_eq!(
            app.events_of(EventKind::DeploymentCredentialsRejected)
                .len(),
            run
        );
    }
    for i in 0..3 {
        let stored = app.stored(&format!("creds-{i}")).await;
        assert_eq!(stored.status, ConnectionStatus::Active);
        assert!(stored.lease.is_none());
    }
    assert!(app.events_of(EventKind::ConnectionNeedsReauth).is_empty());

    // Callers racing on one connection: the holder tries (and retries once after
    // re-reading the secret); those who waited for it do not call RD themselves.
    let calls = app.sandbox.sandbox.stats().token_calls;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let engine = app.engine.clone();
        let id = connector::domain::ConnectionId::in_default_tenant("creds-0").expect("valid");
        tasks.spawn(async move { engine.refresh(&id, RefreshRequest::default()).await });
    }
    let results = tasks.join_all().await;
    let rejected = results
        .iter()
        .filter(|r| matches!(r, Err(RefreshFailure::DeploymentCredentialsRejected)))
        .count();
    let token_calls = app.sandbox.sandbox.stats().token_calls - calls;
    assert!(rejected >= 1);
    assert_eq!(
        token_calls,
        2 * rejected as u64,
        "only lease holders call RD"
    );
    assert!(results.iter().all(|r| matches!(
        r,
        Err(RefreshFailure::DeploymentCredentialsRejected | RefreshFailure::HolderFailed)
    )));
}

#[tokio::test]
async fn an_idle_crm_connection_is_kept_alive_for_thirty_days() {
    let app = RefreshApp::start().await;
    // Long-lived access tokens: only the refresh token's idle limit drives refreshes.
    app.sandbox
        .sandbox
        .set_access_ttl(rd_sandbox::SandboxProduct::Crm, 40 * 86_400);
    app.connect("idle", Product::Crm).await;
    let mut refreshed = 0;
    for _ in 0..30 {
        app.advance(86_400);
        refreshed += app.run().await.refreshed;
    }
    assert!((4..=5).contains(&refreshed), "refreshed {refreshed} times");
    assert_eq!(app.stored("idle").await.status, ConnectionStatus::Active);
    assert!(
        matches!(
            app.refresh("idle", RefreshRequest::forced()).await,
            Ok(Refreshed::Rotated(_))
        ),
        "the refresh token is still alive after 30 days"
    );
    assert_eq!(
        app.sandbox.sandbox.stats().dead_refresh_token_presentations,
        0
    );
}

#[tokio::test]
async fn a_caller_holding_an_old_access_token_gets_the_newer_one_without_a_call() {
    let app = RefreshApp::start().await;
    let before = app.connect("held-token", Product::Marketing).await;
    let rotated = app
        .refresh("held-token", RefreshRequest::forced())
        .await
        .expect("refreshed");
    let calls = app.sandbox.sandbox.stats().token_calls;
    let again = app
        .refresh(
            "held-token",
            RefreshRequest::rejected(before.tokens.access_token.clone()),
        )
        .await
        .expect("fresh");
    assert!(matches!(again, Refreshed::AlreadyFresh(_)));
    assert_eq!(again.connection().tokens, rotated.connection().tokens);
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls);
    // Marketing refresh tokens are stable, and the stored one stays.
    assert_eq!(
        again.connection().tokens.refresh_token,
        before.tokens.refresh_token
    );
}

#[tokio::test]
async fn a_reconnect_during_a_refresh_wins_and_the_old_grants_pair_is_not_restored() {
    let app = RefreshApp::start().await;
    app.connect("reconnected", Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    let refresh = app
        .refresh_until_rd_is_called("reconnected", Duration::from_millis(400))
        .await;

    // A person connects the account again while RD is answering the refresh.
    assert!(
        app.stored("reconnected").await.lease.is_some(),
        "the refresh holds the lease"
    );
    let fresh = app.reconnect_now("reconnected").await;

    match refresh.await.expect("joined") {
        Ok(Refreshed::ByOtherWorker(c)) => assert_eq!(c.tokens, fresh),
        other => panic!("expected the reconnect's pair, got {other:?}"),
    }
    // The refresh's own pair was saved, not dropped, but never restored over the newer one.
    assert_eq!(app.rescues.peek().await.len(), 1);
    let summary = app.run().await;
    assert_eq!(summary.restored_from_rescue, 0);
    assert!(app.rescues.peek().await.is_empty());
    let after = app.stored("reconnected").await;
    assert_eq!(after.tokens, fresh);
    assert_eq!(after.status, ConnectionStatus::Active);
    assert!(app.events_of(EventKind::ConnectionPossiblyLost).is_empty());
}

#[tokio::test]
async fn a_caller_that_goes_away_mid_refresh_does_not_lose_the_rotated_pair() {
    let app = RefreshApp::start().await;
    let before = app.connect("abandoned", Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    let calls = app.sandbox.sandbox.stats().token_calls;
    let caller = app
        .refresh_until_rd_is_called("abandoned", Duration::from_millis(200))
        .await;
    // The request that started the refresh is dropped while RD is answering.
    caller.abort();

    // The next caller waits for the lease like any loser and gets the committed pair.
    match app.refresh("abandoned", RefreshRequest::default()).await {
        Ok(Refreshed::ByOtherWorker(c)) => {
            assert_ne!(c.tokens.refresh_token, before.tokens.refresh_token)
        }
        other => panic!("expected the abandoned refresh's pair, got {other:?}"),
    }
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls + 1);
    assert_eq!(
        app.stored("abandoned").await.status,
        ConnectionStatus::Active
    );
    assert!(app.usable("abandoned").await);
}

#[tokio::test]
async fn a_rate_limit_is_not_processed_and_its_retry_after_is_honoured() {
    let app = RefreshApp::start().await;
    let before = app.connect("limited", Product::Marketing).await;
    app.advance(86_400 - 1_800);
    app.sandbox.sandbox.inject_fault(
        Fault::RateLimited {
            retry_after_seconds: 600,
        },
        1,
    );
    let now = app.clock.now();
    match app.refresh("limited", RefreshRequest::default()).await {
        Err(RefreshFailure::NotProcessed { until }) => assert!(until >= now.plus_seconds(600)),
        other => panic!("expected not processed, got {other:?}"),
    }
    let stored = app.stored("limited").await;
    assert_eq!(stored.status, ConnectionStatus::Active);
    assert!(stored.lease.is_none());
    assert!(
        stored.intent.is_none(),
        "RD provably did nothing: no ambiguous history"
    );
    assert_eq!(stored.backoff.failures, 1);
    assert_eq!(stored.backoff.last_error.as_deref(), Some("rate_limited"));
    assert!(stored.backoff.next_attempt_at.expect("persisted") >= now.plus_seconds(600));

    // Nobody calls RD before then; afterwards the same token works.
    let calls = app.sandbox.sandbox.stats().token_calls;
    app.advance(300);
    assert!(matches!(
        app.refresh("limited", RefreshRequest::default()).await,
        Err(RefreshFailure::BackingOff { .. })
    ));
    assert_eq!(app.run().await.due, 0);
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls);
    app.advance(301);
    assert!(matches!(
        app.refresh("limited", RefreshRequest::default()).await,
        Ok(Refreshed::Rotated(_))
    ));
    assert_eq!(
        app.stored("limited").await.tokens.refresh_token,
        before.tokens.refresh_token
    );
}

#[tokio::test]
async fn a_rescued_marketing_pair_never_overwrites_a_newer_access_token() {
    let app = RefreshApp::start().await;
    let before = app.connect("stable", Product::Marketing).await;
    let (access, _, expires_in) = app
        .sandbox
        .sandbox
        .issue_pair(rd_sandbox::SandboxProduct::Marketing);
    // A pair saved from a failed commit: Marketing kept its (stable) refresh token.
    let rescued = connector::ports::RescuedPair {
        connection_id: before.id.clone(),
        lease_id: "lease-1".to_owned(),
        tokens: connector::domain::TokenPair {
            access_token: connector::secret::AccessToken::new(access),
            refresh_token: before.tokens.refresh_token.clone(),
            access_expires_at: app.clock.now().plus_seconds(expires_in),
        },
        spent_refresh_token: before.tokens.refresh_token.fingerprint(),
        replaced_access_token: before.tokens.access_token.fingerprint(),
        rescued_at: app.clock.now(),
    };
    let restored = app
        .engine
        .restore(&rescued)
        .await
        .expect("store up")
        .expect("restored onto the pair it replaced");
    assert_eq!(restored.tokens, rescued.tokens);

    // A later refresh stores a newer access token under the same refresh token...
    let newer = app
        .refresh("stable", RefreshRequest::forced())
        .await
        .expect("refreshed");
    assert_eq!(
        newer.connection().tokens.refresh_token,
        before.tokens.refresh_token
    );
    // ...and the queue delivers the same rescued pair again (SQS is at-least-once).
    assert!(
        app.engine
            .restore(&rescued)
            .await
            .expect("store up")
            .is_none(),
        "superseded"
    );
    assert_eq!(
        app.stored("stable").await.tokens,
        newer.connection().tokens,
        "the newer access token stays"
    );
}

#[tokio::test]
async fn refreshes_that_keep_failing_are_flagged_but_never_marked_dead() {
    let mut settings = integration_tests::refresh_app::test_settings();
    settings.failing_after = 3;
    let app = RefreshApp::start_with(settings).await;
    app.connect("flaky", Product::Crm).await;
    app.advance(CRM_NEARLY_EXPIRED);
    app.sandbox.sandbox.inject_fault(Fault::ServerError, 1_000);

    for attempt in 1..=5u32 {
        let outcome = app.refresh("flaky", RefreshRequest::default()).await;
        assert!(
            matches!(
                outcome,
                Err(RefreshFailure::NotProcessed { .. } | RefreshFailure::Ambiguous { .. })
            ),
            "{outcome:?}"
        );
        let stored = app.stored("flaky").await;
        assert_eq!(stored.status, ConnectionStatus::Active);
        assert_eq!(stored.backoff.failures, attempt);
        let flagged = stored.status_reason.as_deref() == Some("refresh_failing");
        assert_eq!(flagged, attempt >= 3, "attempt {attempt}");
        app.advance(901);
    }
    let failing = app.events_of(EventKind::ConnectionRefreshFailing);
    assert_eq!(failing.len(), 1, "one event when the threshold is crossed");
    assert_eq!(
        failing[0].connection_id.as_ref().map(|c| c.name()),
        Some("flaky")
    );

    app.sandbox.sandbox.clear_faults();
    assert!(matches!(
        app.refresh("flaky", RefreshRequest::default()).await,
        Ok(Refreshed::Rotated(_))
    ));
    let stored = app.stored("flaky").await;
    assert_eq!(stored.status_reason, None);
    assert_eq!(stored.backoff.failures, 0);
}

#[tokio::test]
async fn a_token_rd_refused_is_refreshed_even_when_the_connection_is_not_due() {
    let app = RefreshApp::start().await;
    let before = app.connect("refused-now", Product::Crm).await;
    // Fresh, not due; but RD just answered 401 to this very access token.
    match app
        .refresh(
            "refused-now",
            RefreshRequest::rejected(before.tokens.access_token.clone()),
        )
        .await
    {
        Ok(Refreshed::Rotated(c)) => {
            assert_ne!(c.tokens.access_token, before.tokens.access_token)
        }
        other => panic!("expected a rotation, got {other:?}"),
    }
    // The schedule leaves a connection that is not due alone.
    let calls = app.sandbox.sandbox.stats().token_calls;
    assert!(matches!(
        app.refresh("refused-now", RefreshRequest::default()).await,
        Ok(Refreshed::AlreadyFresh(_))
    ));
    assert_eq!(app.sandbox.sandbox.stats().token_calls, calls);
}
