//! One way to turn an AWS SDK error into a [`StoreError`], for every adapter on
//! AWS: the service's error code and message when it answered, the whole error
//! chain when it did not (a timeout, a refused connection).

// Every SDK crate re-exports these same two items from the smithy runtime.
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::ports::StoreError;

/// `err` as [`StoreError::Unavailable`], its text starting with `what` (empty, or
/// the store's name and a colon) when given.
pub fn unavailable<E>(what: &str, err: &E) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let detail = match err.code() {
        Some(code) => format!("{code}: {}", err.message().unwrap_or("no message")),
        None => DisplayErrorContext(err).to_string(),
    };
    StoreError::Unavailable(if what.is_empty() {
        detail
    } else {
        format!("{what}: {detail}")
    })
}
