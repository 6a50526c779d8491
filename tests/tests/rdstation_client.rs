//! The RD Station client against the sandbox over loopback: both products' code
//! exchange, refresh and revoke, and the classification of every failure.

use std::time::Duration;

use connector::domain::{IssuedTokens, Product, TokenCallError};
use connector::outbound::rdstation::{RdStationClient, RdStationEndpoints};
use connector::ports::ClientCredentials;
use connector::secret::{AuthCode, ClientSecret, ExposeSecret, RefreshToken};
use rd_sandbox::{Fault, RunningSandbox, Sandbox, SandboxConfig, SandboxProduct};

const REDIRECT: &str = "https://connect.example.com/oauth/callback";

struct Rd {
    sandbox: RunningSandbox,
    client: RdStationClient,
    config: SandboxConfig,
}

async fn rd_with_timeout(timeout: Duration) -> Rd {
    integration_tests::logs::install();
    let config = SandboxConfig::default();
    let sandbox = Sandbox::new(config.clone())
        .spawn_local()
        .await
        .expect("sandbox");
    let client = RdStationClient::new(
        RdStationEndpoints {
            api_base: sandbox.base_url.clone(),
            marketing_authorize: sandbox.url("/auth/dialog"),
            crm_authorize: sandbox.url("/oauth/authorize"),
        },
        timeout,
    )
    .expect("client");
    Rd {
        sandbox,
        client,
        config,
    }
}

async fn rd() -> Rd {
    rd_with_timeout(Duration::from_secs(2)).await
}

fn sandbox_product(product: Product) -> SandboxProduct {
    match product {
        Product::Marketing => SandboxProduct::Marketing,
        Product::Crm => SandboxProduct::Crm,
    }
}

impl Drop for Rd {
    fn drop(&mut self) {
        let mut secrets = self.sandbox.sandbox.issued_secrets();
        secrets.push(self.config.marketing.client_secret.clone());
        secrets.push(self.config.crm.client_secret.clone());
        integration_tests::logs::record_secrets_for_suite_scan(&secrets);
    }
}

impl Rd {
    fn credentials(&self, product: Product) -> ClientCredentials {
        let app = match product {
            Product::Marketing => &self.config.marketing,
            Product::Crm => &self.config.crm,
        };
        ClientCredentials {
            client_id: app.client_id.clone(),
            client_secret: ClientSecret::new(app.client_secret.clone()),
        }
    }

    fn wrong_credentials(&self, product: Product) -> ClientCredentials {
        ClientCredentials {
            client_secret: ClientSecret::new("not-the-secret"),
            ..self.credentials(product)
        }
    }

    fn code(&self, product: Product) -> AuthCode {
        AuthCode::new(
            self.sandbox
                .sandbox
                .approve_consent(sandbox_product(product), REDIRECT),
        )
    }

    async fn exchange(&self, product: Product) -> IssuedTokens {
        self.client
            .exchange_code(
                product,
                &self.credentials(product),
                &self.code(product),
                REDIRECT,
            )
            .await
            .expect("exchange succeeds")
    }

    async fn refresh(
        &self,
        product: Product,
        token: &RefreshToken,
    ) -> Result<IssuedTokens, TokenCallError> {
        self.client
            .refresh(product, &self.credentials(product), token)
            .await
    }
}

fn refresh_token(issued: &IssuedTokens) -> RefreshToken {
    issued.refresh_token.clone().expect("a refresh token")
}

#[tokio::test]
async fn exchanges_codes_for_both_products() {
    let rd = rd().await;
    for product in Product::ALL {
        let issued = rd.exchange(product).await;
        assert!(rd.sandbox.sandbox.access_token_is_valid(
            sandbox_product(product),
            issued.access_token.expose_secret()
        ));
        let expected = if product == Product::Crm {
            7_200
        } else {
            86_400
        };
        assert_eq!(issued.expires_in, Some(expected));
    }
}

#[tokio::test]
async fn crm_refresh_tokens_roll_and_the_old_one_dies() {
    let rd = rd().await;
    let first = refresh_token(&rd.exchange(Product::Crm).await);
    let second = refresh_token(&rd.refresh(Product::Crm, &first).await.expect("refreshes"));
    assert_ne!(first, second);
    match rd.refresh(Product::Crm, &first).await {
        Err(TokenCallError::InvalidGrant { .. }) => {}
        other => panic!("expected invalid_grant, got {other:?}"),
    }
    let stats = rd.sandbox.sandbox.stats();
    assert_eq!(stats.dead_refresh_token_presentations, 1);
    assert_eq!(
        stats.dead_presentations_by_refresh_token,
        std::collections::HashMap::from([(rd_sandbox::fingerprint(first.expose_secret()), 1)])
    );
    assert_eq!(
        rd.sandbox.sandbox.refresh_calls_for(first.expose_secret()),
        2
    );
    rd.refresh(Product::Crm, &second)
        .await
        .expect("the new one works");
}

#[tokio::test]
async fn marketing_refresh_tokens_are_stable() {
    let rd = rd().await;
    let token = refresh_token(&rd.exchange(Product::Marketing).await);
    for _ in 0..3 {
        let issued = rd
            .refresh(Product::Marketing, &token)
            .await
            .expect("refreshes");
        assert_eq!(refresh_token(&issued), token);
    }
}

#[tokio::test]
async fn crm_refresh_tokens_die_after_fourteen_idle_days() {
    let rd = rd().await;
    let token = refresh_token(&rd.exchange(Product::Crm).await);
    rd.sandbox.sandbox.advance_clock(13 * 86_400);
    let token = refresh_token(
        &rd.refresh(Product::Crm, &token)
            .await
            .expect("alive at 13 days"),
    );
    rd.sandbox.sandbox.advance_clock(14 * 86_400);
    assert!(matches!(
        rd.refresh(Product::Crm, &token).await,
        Err(TokenCallError::InvalidGrant { .. })
    ));
}

#[tokio::test]
async fn codes_are_single_use_and_expire() {
    let rd = rd().await;
    for (product, ttl) in [(Product::Marketing, 3_600), (Product::Crm, 300)] {
        let code = rd.code(product);
        let creds = rd.credentials(product);
        rd.client
            .exchange_code(product, &creds, &code, REDIRECT)
            .await
            .expect("first use");
        assert!(
            matches!(
                rd.client
                    .exchange_code(product, &creds, &code, REDIRECT)
                    .await,
                Err(TokenCallError::ExpiredCode { .. })
            ),
            "{product}: a reused code is refused"
        );

        let late = rd.code(product);
        rd.sandbox.sandbox.advance_clock(ttl);
        assert!(
            matches!(
                rd.client
                    .exchange_code(product, &creds, &late, REDIRECT)
                    .await,
                Err(TokenCallError::ExpiredCode { .. })
            ),
            "{product}: an expired code is refused"
        );
    }
}

#[tokio::test]
async fn wrong_client_credentials_are_invalid_client_for_both_products() {
    let rd = rd().await;
    for product in Product::ALL {
        let code = rd.code(product);
        assert!(matches!(
            rd.client
                .exchange_code(product, &rd.wrong_credentials(product), &code, REDIRECT)
                .await,
            Err(TokenCallError::InvalidClient { .. })
        ));
        let token = refresh_token(&rd.exchange(product).await);
        assert!(matches!(
            rd.client
                .refresh(product, &rd.wrong_credentials(product), &token)
                .await,
            Err(TokenCallError::InvalidClient { .. })
        ));
        rd.refresh(product, &token)
            .await
            .expect("the token was not spent");
    }
}

#[tokio::test]
async fn a_refresh_token_of_one_product_is_refused_by_the_other() {
    let rd = rd().await;
    let crm = refresh_token(&rd.exchange(Product::Crm).await);
    assert!(matches!(
        rd.refresh(Product::Marketing, &crm).await,
        Err(TokenCallError::InvalidGrant { .. })
    ));
}

#[tokio::test]
async fn server_errors_are_ambiguous_and_rate_limits_carry_retry_after() {
    let rd = rd().await;
    let token = refresh_token(&rd.exchange(Product::Crm).await);
    rd.sandbox.sandbox.inject_fault(Fault::ServerError, 1);
    assert!(matches!(
        rd.refresh(Product::Crm, &token).await,
        Err(TokenCallError::Transient {
            ambiguous: true,
            ..
        })
    ));
    rd.sandbox.sandbox.inject_fault(
        Fault::RateLimited {
            retry_after_seconds: 17,
        },
        1,
    );
    match rd.refresh(Product::Crm, &token).await {
        Err(TokenCallError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(17)))
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    // Neither fault processed the call: the token still works.
    rd.refresh(Product::Crm, &token).await.expect("still valid");
}

#[tokio::test]
async fn a_held_call_times_out_as_ambiguous() {
    let rd = rd_with_timeout(Duration::from_millis(300)).await;
    let token = refresh_token(&rd.exchange(Product::Crm).await);
    rd.sandbox
        .sandbox
        .inject_fault(Fault::hang(Duration::from_secs(5)), 1);
    match rd.refresh(Product::Crm, &token).await {
        Err(TokenCallError::Transient {
            ambiguous: true,
            detail,
        }) => assert_eq!(detail, "timed out"),
        other => panic!("expected an ambiguous timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_answer_our_timeout_abandons_is_recorded_and_leaves_the_token_unspent() {
    let rd = rd_with_timeout(Duration::from_millis(200)).await;
    let token = refresh_token(&rd.exchange(Product::Crm).await);
    let fingerprint = rd_sandbox::fingerprint(token.expose_secret());
    // No injected fault: RD is merely slower than our timeout.
    rd.sandbox.sandbox.set_token_latency(Duration::from_secs(2));
    assert!(matches!(
        rd.refresh(Product::Crm, &token).await,
        Err(TokenCallError::Transient {
            ambiguous: true,
            ..
        })
    ));
    // Our client hung up while RD waited; RD dropped the call unprocessed, and
    // says so, which is what lets a soak tell this repeat from a protocol fault.
    rd.sandbox.sandbox.wait_until_idle().await;
    let stats = rd.sandbox.sandbox.stats();
    assert_eq!(
        stats.abandoned_calls_by_refresh_token.get(&fingerprint),
        Some(&1)
    );
    assert!(!stats.faults_by_refresh_token.contains_key(&fingerprint));
    rd.sandbox.sandbox.set_token_latency(Duration::ZERO);
    rd.refresh(Product::Crm, &token)
        .await
        .expect("the token was never spent");
    let stats = rd.sandbox.sandbox.stats();
    assert_eq!(
        stats.abandoned_calls_by_refresh_token.get(&fingerprint),
        Some(&1),
        "an answered call is not abandoned"
    );
}

#[tokio::test]
async fn a_connection_dropped_after_processing_is_ambiguous_and_the_token_is_spent() {
    let rd = rd().await;
    let token = refresh_token(&rd.exchange(Product::Crm).await);
    rd.sandbox
        .sandbox
        .inject_fault(Fault::DropAfterProcessing, 1);
    match rd.refresh(Product::Crm, &token).await {
        Err(TokenCallError::Transient {
            ambiguous: true, ..
        }) => {}
        other => panic!("expected an ambiguous failure, got {other:?}"),
    }
    // RD rotated before the connection dropped: the old token is gone.
    assert!(matches!(
        rd.refresh(Product::Crm, &token).await,
        Err(TokenCallError::InvalidGrant { .. })
    ));
}

#[tokio::test]
async fn an_unreachable_rd_is_not_processed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = listener.local_addr().expect("addr");
    drop(listener);
    let base = url::Url::parse(&format!("http://{closed}")).expect("url");
    let client = RdStationClient::new(
        RdStationEndpoints {
            api_base: base.clone(),
            marketing_authorize: base.clone(),
            crm_authorize: base,
        },
        Duration::from_secs(2),
    )
    .expect("client");
    let creds = ClientCredentials {
        client_id: "id".to_owned(),
        client_secret: ClientSecret::new("secret"),
    };
    assert!(matches!(
        client
            .refresh(Product::Crm, &creds, &RefreshToken::new("rt"))
            .await,
        Err(TokenCallError::Transient {
            ambiguous: false,
            ..
        })
    ));
}

#[tokio::test]
async fn revoke_kills_both_tokens() {
    let rd = rd().await;
    let issued = rd.exchange(Product::Marketing).await;
    let pair = issued
        .into_pair(Product::Marketing, None, connector::clock::Timestamp(0))
        .expect("pair");
    rd.client.revoke(&pair).await.expect("revoked");
    assert!(
        !rd.sandbox
            .sandbox
            .access_token_is_valid(SandboxProduct::Marketing, pair.access_token.expose_secret())
    );
    assert!(matches!(
        rd.refresh(Product::Marketing, &pair.refresh_token).await,
        Err(TokenCallError::InvalidGrant { .. })
    ));
}

#[tokio::test]
async fn protected_routes_answer_like_rd() {
    let rd = rd().await;
    rd.sandbox.sandbox.set_access_ttl(SandboxProduct::Crm, 60);
    let crm = rd.exchange(Product::Crm).await;
    assert_eq!(crm.expires_in, Some(60));
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = http.get(rd.sandbox.url(path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send()
    };
    let crm_token = crm.access_token.expose_secret();
    assert_eq!(
        get("/crm/v2/contacts", Some(crm_token))
            .await
            .expect("ok")
            .status(),
        200
    );

    let wrong_product = get("/platform/contacts", Some(crm_token))
        .await
        .expect("answer");
    assert_eq!(wrong_product.status(), 401);
    let body: serde_json::Value = wrong_product.json().await.expect("json");
    assert_eq!(body["errors"]["error_type"], "UNAUTHORIZED");

    let missing = get("/crm/v2/contacts", None).await.expect("answer");
    assert_eq!(missing.status(), 401);
    let body: serde_json::Value = missing.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");

    rd.sandbox.sandbox.advance_clock(61);
    let expired = get("/crm/v2/contacts", Some(crm_token))
        .await
        .expect("answer");
    assert_eq!(expired.status(), 401);
    let challenge = expired.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(challenge.contains("error=\"expired_token\""), "{challenge}");
    let body: serde_json::Value = expired.json().await.expect("json");
    assert_eq!(body["errors"][0]["error_type"], "UNAUTHORIZED");
}

#[tokio::test]
async fn the_control_api_steers_the_sandbox_over_http() {
    let rd = rd().await;
    let token = refresh_token(&rd.exchange(Product::Crm).await);
    let http = reqwest::Client::new();
    let injected = http
        .post(rd.sandbox.url("/_sandbox/faults"))
        .json(&serde_json::json!({"kind": "rate_limited", "retry_after_seconds": 3, "count": 2}))
        .send()
        .await
        .expect("answer");
    assert_eq!(injected.status(), 204);
    for _ in 0..2 {
        assert!(matches!(
            rd.refresh(Product::Crm, &token).await,
            Err(TokenCallError::RateLimited { .. })
        ));
    }
    rd.refresh(Product::Crm, &token)
        .await
        .expect("faults used up");
    let stats: serde_json::Value = http
        .get(rd.sandbox.url("/_sandbox/stats"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["stats"]["token_calls"], 4);
    assert_eq!(
        stats["stats"]["calls_by_refresh_token"][token.fingerprint()],
        3,
        "counted by fingerprint, never by value"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let rd = rd().await;
    // A host that answers every call with a redirect to the real token endpoint.
    let target = rd.sandbox.url("/oauth2/token").to_string();
    let redirector = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { axum::response::Redirect::temporary(&target) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base =
        url::Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move { axum::serve(listener, redirector).await });
    let client = RdStationClient::new(
        RdStationEndpoints {
            api_base: base.clone(),
            marketing_authorize: base.clone(),
            crm_authorize: base,
        },
        Duration::from_secs(2),
    )
    .expect("client");
    let token = refresh_token(&rd.exchange(Product::Crm).await);
    let calls = rd.sandbox.sandbox.stats().token_calls;
    match client
        .refresh(Product::Crm, &rd.credentials(Product::Crm), &token)
        .await
    {
        Err(TokenCallError::Other { status: 307, .. }) => {}
        other => panic!("expected the redirect as a refusal, got {other:?}"),
    }
    assert_eq!(
        rd.sandbox.sandbox.stats().token_calls,
        calls,
        "the redirect was not followed"
    );
}
