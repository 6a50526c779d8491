//! A route's one path parameter, as text. axum's own `Path` refuses a parameter
//! that is not UTF-8 once percent-decoded with a plain-text 400; this answers our
//! JSON error (or a page, for a browser that asked for one) instead.

use axum::extract::{FromRef, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::Response;

use super::error::ApiError;
use super::pages::{Notice, Pages};

/// The decoded path parameter.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam
where
    Pages: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(_) => Err(Pages::from_ref(state).error(
                &parts.headers,
                ApiError::bad_request(
                    "invalid_path",
                    "a path segment is not valid UTF-8 once decoded",
                ),
                &Notice::NotFound,
            )),
        }
    }
}
