//! Who may call the caller-facing routes (`POST /connect/sessions`).
//!
//! In AWS, API Gateway's IAM authorizer checks the SigV4 signature and puts the
//! caller's identity in the request context; the handler still refuses a request
//! without one (a route misconfigured without the authorizer must not open
//! sessions for anybody), and applies an optional allow-list of caller ARNs.

use lambda_http::request::RequestContext;

/// How callers of the caller-facing routes are checked.
#[derive(Clone, Debug)]
pub enum CallerPolicy {
    /// Behind API Gateway's IAM authorizer: the request must carry the caller's
    /// IAM identity and, if `allowed_arns` is not empty, match one of them (an
    /// entry ending in `*` matches every ARN that starts with the rest, e.g. all
    /// sessions of one assumed role).
    Iam {
        /// `ALLOWED_CALLER_ARNS`.
        allowed_arns: Vec<String>,
    },
    /// `make run` on localhost: no IAM, anyone on the machine may call.
    LocalUnauthenticated,
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallerRefused {
    /// The request carries no IAM identity.
    #[error("the request carries no IAM caller identity; sign it with SigV4")]
    NoIdentity,
    /// The caller is not on the allow-list.
    #[error("this IAM principal may not open connect sessions")]
    NotAllowed,
}

/// The IAM principal ARN API Gateway put in the request context, if any.
pub fn iam_caller(context: Option<&RequestContext>) -> Option<String> {
    match context? {
        RequestContext::ApiGatewayV2(ctx) => ctx
            .authorizer
            .as_ref()?
            .iam
            .as_ref()?
            .user_arn
            .clone()
            .filter(|arn| !arn.is_empty()),
        _ => None,
    }
}

impl CallerPolicy {
    /// Checks the caller of one request.
    ///
    /// # Errors
    /// [`CallerRefused`] when the policy refuses it.
    pub fn check(&self, context: Option<&RequestContext>) -> Result<(), CallerRefused> {
        let Self::Iam { allowed_arns } = self else {
            return Ok(());
        };
        let arn = iam_caller(context).ok_or(CallerRefused::NoIdentity)?;
        let allowed = allowed_arns.is_empty()
            || allowed_arns
                .iter()
                .any(|entry| match entry.strip_suffix('*') {
                    Some(prefix) => arn.starts_with(prefix),
                    None => *entry == arn,
                });
        allowed.then_some(()).ok_or(CallerRefused::NotAllowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_mode_needs_no_identity_and_iam_mode_does() {
        assert!(CallerPolicy::LocalUnauthenticated.check(None).is_ok());
        let iam = CallerPolicy::Iam {
            allowed_arns: Vec::new(),
        };
        assert_eq!(iam.check(None), Err(CallerRefused::NoIdentity));
    }
}
