//! What RD Station's token endpoint answers: the tokens it issued, or how the
//! call failed. The services decide on these; the RD Station adapter produces them.

use std::time::Duration;

use super::{Product, TokenPair};
use crate::clock::Timestamp;
use crate::secret::{AccessToken, RefreshToken};

/// What RD's token endpoint answered with on success.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The new access token.
    pub access_token: AccessToken,
    /// The refresh token RD returned, if it returned one.
    pub refresh_token: Option<RefreshToken>,
    /// Access-token lifetime in seconds, when RD said.
    pub expires_in: Option<i64>,
}

impl IssuedTokens {
    /// The pair to store: RD's new refresh token, or `previous` when RD sent none;
    /// expiry from `expires_in`, else the product's documented lifetime.
    ///
    /// Returns `None` only when there is no refresh token at all (a code exchange
    /// whose answer lacked one).
    pub fn into_pair(
        self,
        product: Product,
        previous: Option<RefreshToken>,
        now: Timestamp,
    ) -> Option<TokenPair> {
        let refresh_token = self.refresh_token.clone().or(previous)?;
        Some(self.pair_with(product, refresh_token, now))
    }

    /// The pair after a refresh that spent `spent`: RD's new refresh token, or
    /// `spent` itself when RD returned none (Marketing's may be stable).
    pub fn refreshed_pair(
        self,
        product: Product,
        spent: RefreshToken,
        now: Timestamp,
    ) -> TokenPair {
        let refresh_token = self.refresh_token.clone().unwrap_or(spent);
        self.pair_with(product, refresh_token, now)
    }

    fn pair_with(self, product: Product, refresh_token: RefreshToken, now: Timestamp) -> TokenPair {
        let lifetime = self.expires_in.unwrap_or(match product {
            Product::Marketing => 86_400,
            Product::Crm => 7_200,
        });
        TokenPair {
            access_token: self.access_token,
            refresh_token,
            access_expires_at: now.plus_seconds(lifetime),
        }
    }
}

/// How a call to RD's token endpoint ended, when it did not end in a token pair.
#[derive(Debug, thiserror::Error)]
pub enum TokenCallError {
    /// The refresh token or code is not valid any more (`INVALID_REFRESH_TOKEN`,
    /// `invalid_grant`): the grant is dead.
    #[error("RD Station rejected the grant: {detail}")]
    InvalidGrant {
        /// RD's error type and message.
        detail: String,
    },
    /// The authorization code is older than its lifetime or was used already
    /// (`EXPIRED_CODE_GRANT`).
    #[error("RD Station says the authorization code expired or was used: {detail}")]
    ExpiredCode {
        /// RD's error type and message.
        detail: String,
    },
    /// Our client id or secret was refused (`invalid_client`, `ACCESS_DENIED` "Wrong
    /// credentials"): the deployment is misconfigured, not the connection.
    #[error("RD Station rejected the client credentials: {detail}")]
    InvalidClient {
        /// RD's error type and message.
        detail: String,
    },
    /// RD refused to process the call for now (429).
    #[error("RD Station rate limited the call (retry after {retry_after:?})")]
    RateLimited {
        /// How long RD asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// No usable answer. When `ambiguous` is true the request was sent and RD may
    /// have processed it (timeout after sending, connection dropped mid-response,
    /// 5xx, unreadable 200); when false, RD provably did not see it (connect error).
    #[error("RD Station call failed ({detail}); may have been processed: {ambiguous}")]
    Transient {
        /// Whether RD may have acted on the request.
        ambiguous: bool,
        /// What happened, without request or response content.
        detail: String,
    },
    /// Any other refusal (bad request, redirect_uri mismatch, unexpected status).
    #[error("RD Station refused the call with status {status}: {detail}")]
    Other {
        /// The HTTP status.
        status: u16,
        /// RD's error type and message.
        detail: String,
    },
}
