//! Who may open connect sessions.
//!
//! In AWS, API Gateway's IAM authorizer checks the SigV4 signature and puts the
//! caller's identity in the request context; the service still refuses a request
//! without one (a route misconfigured without the authorizer must not open
//! sessions for anybody), and applies an optional allow-list of caller ARNs.

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
    /// Tenants are configured and the caller's principal acts in none.
    #[error("this IAM principal acts in no tenant; an operator adds it with rdconn tenants set")]
    NoTenant,
    /// The tenant registry could not be read, so the caller's tenant is unknown.
    #[error("the tenant registry is unavailable; try again")]
    RegistryUnavailable,
}

impl CallerPolicy {
    /// Checks the caller of one request, known by the IAM principal ARN the
    /// authorizer vouched for (if any).
    ///
    /// # Errors
    /// [`CallerRefused`] when the policy refuses it.
    pub fn check(&self, caller_arn: Option<&str>) -> Result<(), CallerRefused> {
        let Self::Iam { allowed_arns } = self else {
            return Ok(());
        };
        let arn = caller_arn
            .filter(|a| !a.is_empty())
            .ok_or(CallerRefused::NoIdentity)?;
        let allowed = allowed_arns.is_empty()
            || allowed_arns
                .iter()
                .any(|entry| match entry.strip_suffix('*') {
                    Some(prefix) => arn.starts_with(prefix),
                    None => entry == arn,
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
        assert_eq!(iam.check(Some("")), Err(CallerRefused::NoIdentity));
        assert!(iam.check(Some("arn:aws:iam::1:user/a")).is_ok());
    }

    #[test]
    fn an_allow_list_admits_exact_and_prefixed_arns_only() {
        let policy = CallerPolicy::Iam {
            allowed_arns: vec![
                "arn:aws:iam::1:user/ops".to_owned(),
                "arn:aws:sts::1:assumed-role/worker/*".to_owned(),
            ],
        };
        assert!(policy.check(Some("arn:aws:iam::1:user/ops")).is_ok());
        assert!(
            policy
                .check(Some("arn:aws:sts::1:assumed-role/worker/s1"))
                .is_ok()
        );
        assert_eq!(
            policy.check(Some("arn:aws:iam::1:user/ops2")),
            Err(CallerRefused::NotAllowed)
        );
        assert_eq!(
            policy.check(Some("arn:aws:sts::1:assumed-role/other/s1")),
            Err(CallerRefused::NotAllowed)
        );
    }
}
