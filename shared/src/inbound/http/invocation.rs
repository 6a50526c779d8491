//! When the invocation serving a request ends. On Lambda it is the context's
//! deadline: work still running then is cut off mid-way, so a refresh that has
//! RD rotate a token after it would leave the new pair in memory only. Every
//! route that may start a refresh or wait on RD passes it down.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// Time kept back from the invocation's end to answer the caller.
pub const ANSWER_MARGIN_MS: i64 = 500;

/// The end of the invocation serving a request, in milliseconds since the epoch
/// (the Lambda context's deadline, or `make run`'s own request deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvocationDeadline(pub i64);

impl InvocationDeadline {
    /// By when the work must be over: the deadline less [`ANSWER_MARGIN_MS`].
    pub fn finish_by_ms(self) -> i64 {
        self.0 - ANSWER_MARGIN_MS
    }
}

/// The request's `finish_by_ms`, when its host set a deadline (extractor).
#[derive(Clone, Copy, Debug)]
pub struct FinishBy(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for FinishBy {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<InvocationDeadline>()
                .map(|d| d.finish_by_ms()),
        ))
    }
}
