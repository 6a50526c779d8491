//! The RD Station OAuth client for both products: consent URLs, code exchange,
//! refresh and revoke, exactly as RD documents them (see the README's reference).
//!
//! Every call has a hard timeout and follows no redirects. Token responses are read
//! leniently (`expires_in` as number or string, `refresh_token` optional on
//! refresh), because a strict parse would turn a good rotation into a lost token.

pub mod api_client;
mod errors;

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde::Deserialize;
use url::Url;

pub use errors::{RdError, classify_token_failure, parse_error_body};

use async_trait::async_trait;

use crate::domain::{IssuedTokens, Product, TokenCallError, TokenPair};
use crate::ports::{ClientCredentials, TokenEndpoint};
use crate::secret::{AccessToken, AuthCode, ExposeSecret, RefreshToken, StateToken};

/// Where RD Station lives. Production defaults are in [`crate::config`].
#[derive(Clone, Debug)]
pub struct RdStationEndpoints {
    /// API and token host, e.g. `https://api.rd.services`.
    pub api_base: Url,
    /// Marketing consent page, e.g. `https://api.rd.services/auth/dialog`.
    pub marketing_authorize: Url,
    /// CRM v2 consent page; configurable because RD documents more than one.
    pub crm_authorize: Url,
}

/// The token endpoint's success body, read leniently.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: AccessToken,
    #[serde(default)]
    refresh_token: Option<RefreshToken>,
    #[serde(default, deserialize_with = "lenient_seconds")]
    expires_in: Option<i64>,
}

fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Talks to RD Station's OAuth endpoints.
#[derive(Clone, Debug)]
pub struct RdStationClient {
    http: reqwest::Client,
    endpoints: RdStationEndpoints,
}

/// Why an HTTP client for RD Station could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// The OAuth client's TLS could not be initialised.
    #[error("could not build the RD Station HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The API client's TLS (the platform's certificate verifier) could not be
    /// initialised.
    #[error("could not set up TLS for RD Station's API: {0}")]
    Tls(#[from] rustls::Error),
    /// RD's configured API base is not a URL a request can be sent to.
    #[error("RD Station's API base is not usable: {0}")]
    Base(String),
}

/// An HTTP client for RD Station: every call ends within `timeout` (connect
/// included), and no redirect is followed (one could carry a secret elsewhere).
///
/// # Errors
/// [`ClientBuildError`] if TLS cannot be initialised.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, ClientBuildError> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("rdstation-connector/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

impl RdStationClient {
    /// A client whose every call ends within `timeout` (connect included).
    ///
    /// # Errors
    /// [`ClientBuildError`] if TLS cannot be initialised.
    pub fn new(endpoints: RdStationEndpoints, timeout: Duration) -> Result<Self, ClientBuildError> {
        Ok(Self {
            http: http_client(timeout)?,
            endpoints,
        })
    }

    /// The page where a person grants our app access to `product`, which sends
    /// them back to `redirect_uri` with `code` and `state`.
    pub fn consent_url(
        &self,
        product: Product,
        client_id: &str,
        redirect_uri: &str,
        state: &StateToken,
    ) -> Url {
        let mut url = match product {
            Product::Marketing => self.endpoints.marketing_authorize.clone(),
            Product::Crm => self.endpoints.crm_authorize.clone(),
        };
        {
            let mut query = url.query_pairs_mut();
            if product == Product::Crm {
                query.append_pair("response_type", "code");
            }
            query
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("state", state.expose_secret());
        }
        url
    }

    /// Exchanges an authorization code for a token pair. Marketing: JSON to
    /// `/auth/token?token_by=code`; CRM: form to `/oauth2/token`.
    ///
    /// # Errors
    /// The classified [`TokenCallError`].
    pub async fn exchange_code(
        &self,
        product: Product,
        credentials: &ClientCredentials,
        code: &AuthCode,
        redirect_uri: &str,
    ) -> Result<IssuedTokens, TokenCallError> {
        let secret = credentials.client_secret.expose_secret();
        let request = match product {
            Product::Marketing => self
                .http
                .post(self.url("/auth/token"))
                .query(&[("token_by", "code")])
                .json(&serde_json::json!({
                    "client_id": credentials.client_id,
                    "client_secret": secret,
                    "code": code.expose_secret(),
                })),
            Product::Crm => self.http.post(self.url("/oauth2/token")).form(&[
                ("grant_type", "authorization_code"),
                ("client_id", credentials.client_id.as_str()),
                ("client_secret", secret),
                ("code", code.expose_secret()),
                ("redirect_uri", redirect_uri),
            ]),
        };
        self.token_call(request).await
    }

    /// Spends `refresh_token` for a new pair. Marketing: JSON to `/auth/token`; CRM:
    /// form with `grant_type=refresh_token` to `/oauth2/token`. A CRM refresh token
    /// is dead once RD has processed this call, whatever reaches us.
    ///
    /// # Errors
    /// The classified [`TokenCallError`].
    pub async fn refresh(
        &self,
        product: Product,
        credentials: &ClientCredentials,
        refresh_token: &RefreshToken,
    ) -> Result<IssuedTokens, TokenCallError> {
        let secret = credentials.client_secret.expose_secret();
        let request = match product {
            Product::Marketing => {
                self.http
                    .post(self.url("/auth/token"))
                    .json(&serde_json::json!({
                        "client_id": credentials.client_id,
                        "client_secret": secret,
                        "refresh_token": refresh_token.expose_secret(),
                    }))
            }
            Product::Crm => self.http.post(self.url("/oauth2/token")).form(&[
                ("grant_type", "refresh_token"),
                ("client_id", credentials.client_id.as_str()),
                ("client_secret", secret),
                ("refresh_token", refresh_token.expose_secret()),
            ]),
        };
        self.token_call(request).await
    }

    /// Revokes the grant behind `tokens` (`POST /auth/revoke`); afterwards both
    /// tokens are refused.
    ///
    /// # Errors
    /// The classified [`TokenCallError`].
    pub async fn revoke(&self, tokens: &TokenPair) -> Result<(), TokenCallError> {
        let response = self
            .http
            .post(self.url("/auth/revoke"))
            .bearer_auth(tokens.access_token.expose_secret())
            .form(&[
                ("token", tokens.refresh_token.expose_secret()),
                ("token_type_hint", "refresh_token"),
            ])
            .send()
            .await
            .map_err(transport_failure)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = header_text(&response, RETRY_AFTER);
        let body = response.bytes().await.map_err(transport_failure)?;
        Err(classify_token_failure(
            status.as_u16(),
            retry_after.as_deref(),
            &body,
        ))
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.endpoints.api_base.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// One call to the token endpoint, measured (see [`crate::metrics::token_call`]).
    async fn token_call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<IssuedTokens, TokenCallError> {
        let started = std::time::Instant::now();
        let result = self.unmeasured_token_call(request).await;
        crate::metrics::emit(
            crate::metrics::TOKEN_CALL_NAMESPACE,
            &crate::metrics::token_call(started.elapsed(), result.is_err()),
        );
        result
    }

    async fn unmeasured_token_call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<IssuedTokens, TokenCallError> {
        let response = request.send().await.map_err(transport_failure)?;
        let status = response.status();
        let retry_after = header_text(&response, RETRY_AFTER);
        // Reading the body can fail after RD has processed the call (a dropped
        // connection), which makes the outcome ambiguous, not a refusal.
        let body = response.bytes().await.map_err(transport_failure)?;
        if !status.is_success() {
            return Err(classify_token_failure(
                status.as_u16(),
                retry_after.as_deref(),
                &body,
            ));
        }
        // Never quote this body anywhere: it holds the tokens.
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| TokenCallError::Transient {
                ambiguous: true,
                detail: format!("status {status} with a body that is not a token response"),
            })?;
        Ok(IssuedTokens {
            access_token: parsed.access_token,
            refresh_token: parsed.refresh_token,
            expires_in: parsed.expires_in,
        })
    }
}

#[async_trait]
impl TokenEndpoint for RdStationClient {
    fn consent_url(
        &self,
        product: Product,
        client_id: &str,
        redirect_uri: &str,
        state: &StateToken,
    ) -> Url {
        RdStationClient::consent_url(self, product, client_id, redirect_uri, state)
    }

    async fn exchange_code(
        &self,
        product: Product,
        credentials: &ClientCredentials,
        code: &AuthCode,
        redirect_uri: &str,
    ) -> Result<IssuedTokens, TokenCallError> {
        RdStationClient::exchange_code(self, product, credentials, code, redirect_uri).await
    }

    async fn revoke(&self, tokens: &TokenPair) -> Result<(), TokenCallError> {
        RdStationClient::revoke(self, tokens).await
    }

    async fn refresh(
        &self,
        product: Product,
        credentials: &ClientCredentials,
        refresh_token: &RefreshToken,
    ) -> Result<IssuedTokens, TokenCallError> {
        RdStationClient::refresh(self, product, credentials, refresh_token).await
    }
}

fn header_text(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A transport failure: a connect error means RD never saw the request; anything
/// after that (timeout, reset, truncated body) may have been processed.
fn transport_failure(err: reqwest::Error) -> TokenCallError {
    let err = err.without_url();
    let ambiguous = !err.is_connect();
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "connection dropped while reading the answer"
    } else {
        "request failed"
    };
    TokenCallError::Transient {
        ambiguous,
        detail: kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> RdStationClient {
        RdStationClient::new(
            RdStationEndpoints {
                api_base: Url::parse("https://api.example.test/base/").expect("url"),
                marketing_authorize: Url::parse("https://api.example.test/auth/dialog")
                    .expect("url"),
                crm_authorize: Url::parse("https://accounts.example.test/oauth/authorize")
                    .expect("url"),
            },
            Duration::from_secs(5),
        )
        .expect("client")
    }

    #[test]
    fn consent_urls_follow_each_product() {
        let state = StateToken::new("st");
        let mkt = client().consent_url(Product::Marketing, "cid", "https://cb/x", &state);
        assert_eq!(
            mkt.as_str(),
            "https://api.example.test/auth/dialog?client_id=cid&redirect_uri=https%3A%2F%2Fcb%2Fx&state=st"
        );
        let crm = client().consent_url(Product::Crm, "cid", "https://cb/x", &state);
        assert!(crm.as_str().starts_with(
            "https://accounts.example.test/oauth/authorize?response_type=code&client_id=cid"
        ));
    }

    #[test]
    fn token_paths_keep_the_base_path() {
        assert_eq!(
            client().url("/oauth2/token").as_str(),
            "https://api.example.test/base/oauth2/token"
        );
    }

    #[test]
    fn token_response_is_read_leniently() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":"600"}"#).expect("parses");
        assert_eq!(r.expires_in, Some(600));
        assert!(r.refresh_token.is_none());
        let issued = IssuedTokens {
            access_token: r.access_token,
            refresh_token: r.refresh_token,
            expires_in: r.expires_in,
        };
        let pair = issued
            .into_pair(
                Product::Marketing,
                Some(RefreshToken::new("old")),
                crate::clock::Timestamp(10),
            )
            .expect("keeps the old refresh token");
        assert_eq!(pair.refresh_token.expose_secret(), "old");
        assert_eq!(pair.access_expires_at, crate::clock::Timestamp(610));
    }
}
