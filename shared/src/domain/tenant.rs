//! Tenants: the owners connections and connect sessions belong to. A caller acts
//! in one tenant (its IAM principal mapped to it) and never sees another's
//! connections; an operator acts in any.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The name of a tenant: 1 to 40 characters from `[a-z0-9-]`, starting with a
/// letter or digit. Kept to that alphabet because it becomes part of the
/// store's keys, next to separators (`#`, `@`) it can then never contain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// The tenant every connection belongs to in a deployment with no tenants
/// configured, and every connection stored before tenants existed.
pub const DEFAULT_TENANT: &str = "default";

/// Why a string is not a valid [`TenantId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantIdError {
    /// Empty or longer than 40 characters.
    #[error("a tenant is 1 to 40 characters long")]
    Length,
    /// A character outside `[a-z0-9-]`, or a leading `-`.
    #[error(
        "a tenant may only contain lower-case letters, digits and '-', and starts with a letter or digit"
    )]
    InvalidCharacter,
}

impl TenantId {
    /// Validates `value` as a tenant name.
    ///
    /// # Errors
    /// [`TenantIdError`] when it is not one.
    pub fn parse(value: &str) -> Result<Self, TenantIdError> {
        if value.is_empty() || value.len() > 40 {
            return Err(TenantIdError::Length);
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !value.chars().all(allowed) || value.starts_with('-') {
            return Err(TenantIdError::InvalidCharacter);
        }
        Ok(Self(value.to_owned()))
    }

    /// The [`DEFAULT_TENANT`].
    pub fn default_tenant() -> Self {
        Self(DEFAULT_TENANT.to_owned())
    }

    /// Whether this is the [`DEFAULT_TENANT`], whose connections keep the keys
    /// they had before tenants existed.
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_TENANT
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::default_tenant()
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may act in a tenant: an IAM principal ARN, or (ending in `*`) every ARN
/// that starts with the rest, such as all sessions of one assumed role.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PrincipalPattern(String);

/// Why a string is not a valid [`PrincipalPattern`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a principal is an IAM ARN (arn:...), at most 2,048 characters, with '*' only at its end")]
pub struct PrincipalPatternError;

impl PrincipalPattern {
    /// Validates `value` as a principal pattern.
    ///
    /// # Errors
    /// [`PrincipalPatternError`] when it is not one.
    pub fn parse(value: &str) -> Result<Self, PrincipalPatternError> {
        let body = value.strip_suffix('*').unwrap_or(value);
        let valid = value.starts_with("arn:")
            && value.len() <= 2_048
            && !body.contains('*')
            && value.chars().all(|c| c.is_ascii_graphic());
        valid
            .then(|| Self(value.to_owned()))
            .ok_or(PrincipalPatternError)
    }

    /// Whether the principal `arn` matches.
    pub fn matches(&self, arn: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => arn.starts_with(prefix),
            None => self.0 == arn,
        }
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PrincipalPattern {
    type Error = PrincipalPatternError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PrincipalPattern> for String {
    fn from(value: PrincipalPattern) -> Self {
        value.0
    }
}

/// The most principals one tenant lists.
pub const MAX_PRINCIPALS_PER_TENANT: usize = 20;

/// Every configured tenant and the principals that act in it, as stored (one
/// record, written conditionally on its version).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tenants {
    /// Bumped by every write; 0 when nothing was ever stored.
    pub version: u64,
    entries: BTreeMap<TenantId, Vec<PrincipalPattern>>,
}

/// Why a tenant's principals were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TenantsError {
    /// More than [`MAX_PRINCIPALS_PER_TENANT`].
    #[error("a tenant lists at most {MAX_PRINCIPALS_PER_TENANT} principals")]
    TooManyPrincipals,
    /// Another tenant lists the same pattern: a caller must map to one tenant.
    #[error("principal {pattern} already acts in tenant {tenant}")]
    PrincipalTaken {
        /// The pattern.
        pattern: String,
        /// The tenant that lists it.
        tenant: TenantId,
    },
}

impl Tenants {
    /// The tenants as stored at `version`.
    pub fn from_entries(
        version: u64,
        entries: impl IntoIterator<Item = (TenantId, Vec<PrincipalPattern>)>,
    ) -> Self {
        Self {
            version,
            entries: entries.into_iter().collect(),
        }
    }

    /// The same tenants, as stored at `version`.
    pub fn at_version(&self, version: u64) -> Self {
        Self {
            version,
            ..self.clone()
        }
    }

    /// Whether no tenant is configured: every admitted caller then acts in the
    /// default tenant, as before tenants existed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each tenant and its principals, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&TenantId, &[PrincipalPattern])> {
        self.entries.iter().map(|(t, p)| (t, p.as_slice()))
    }

    /// Every tenant connections may be in: the default one and each
    /// configured, by name.
    pub fn all_with_default(&self) -> Vec<TenantId> {
        let mut names: Vec<TenantId> = self.entries.keys().cloned().collect();
        if !self.entries.contains_key(&TenantId::default_tenant()) {
            names.push(TenantId::default_tenant());
            names.sort();
        }
        names
    }

    /// The principals of `tenant`, if it is configured.
    pub fn principals(&self, tenant: &TenantId) -> Option<&[PrincipalPattern]> {
        self.entries.get(tenant).map(Vec::as_slice)
    }

    /// The tenant the principal `arn` acts in: the one whose matching pattern is
    /// the longest (an exact ARN beats a prefix of it).
    pub fn tenant_of(&self, arn: &str) -> Option<&TenantId> {
        self.entries
            .iter()
            .flat_map(|(tenant, patterns)| patterns.iter().map(move |p| (tenant, p)))
            .filter(|(_, pattern)| pattern.matches(arn))
            .max_by_key(|(_, pattern)| (pattern.as_str().len(), !pattern.as_str().ends_with('*')))
            .map(|(tenant, _)| tenant)
    }

    /// These tenants with `tenant` (added or replaced) acting for `principals`.
    ///
    /// # Errors
    /// [`TenantsError`] when the principals are too many or another tenant lists one.
    pub fn with(
        &self,
        tenant: TenantId,
        principals: Vec<PrincipalPattern>,
    ) -> Result<Self, TenantsError> {
        if principals.len() > MAX_PRINCIPALS_PER_TENANT {
            return Err(TenantsError::TooManyPrincipals);
        }
        for pattern in &principals {
            let taken_by = self
                .entries
                .iter()
                .find(|(other, theirs)| **other != tenant && theirs.contains(pattern));
            if let Some((other, _)) = taken_by {
                return Err(TenantsError::PrincipalTaken {
                    pattern: pattern.as_str().to_owned(),
                    tenant: other.clone(),
                });
            }
        }
        let mut principals = principals;
        principals.sort();
        principals.dedup();
        let mut next = self.clone();
        next.entries.insert(tenant, principals);
        Ok(next)
    }

    /// These tenants without `tenant`, and whether it was there.
    pub fn without(&self, tenant: &TenantId) -> (Self, bool) {
        let mut next = self.clone();
        let removed = next.entries.remove(tenant).is_some();
        (next, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lower_case_names_and_refuses_the_rest() {
        for ok in ["a", "acme", "agency-42", "0x", &"a".repeat(40)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(TenantId::parse(""), Err(TenantIdError::Length));
        assert_eq!(TenantId::parse(&"a".repeat(41)), Err(TenantIdError::Length));
        for bad in ["Acme", "a_b", "a#b", "a@b", "-a", "a b", "a/b", "é"] {
            assert_eq!(
                TenantId::parse(bad),
                Err(TenantIdError::InvalidCharacter),
                "{bad}"
            );
        }
        assert!(TenantId::default_tenant().is_default());
        assert!(!TenantId::parse("acme").expect("valid").is_default());
    }

    fn pattern(p: &str) -> PrincipalPattern {
        PrincipalPattern::parse(p).expect("valid")
    }

    fn tenant(t: &str) -> TenantId {
        TenantId::parse(t).expect("valid")
    }

    #[test]
    fn patterns_are_arns_with_a_star_only_at_the_end() {
        assert!(pattern("arn:aws:iam::1:user/a").matches("arn:aws:iam::1:user/a"));
        assert!(!pattern("arn:aws:iam::1:user/a").matches("arn:aws:iam::1:user/ab"));
        assert!(
            pattern("arn:aws:sts::1:assumed-role/r/*").matches("arn:aws:sts::1:assumed-role/r/s")
        );
        for bad in [
            "",
            "user/a",
            "arn:*:x",
            "arn:a b",
            &format!("arn:{}", "a".repeat(2_045)),
        ] {
            assert_eq!(
                PrincipalPattern::parse(bad),
                Err(PrincipalPatternError),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_caller_acts_in_the_tenant_of_its_most_specific_pattern() {
        let tenants = Tenants::default()
            .with(
                tenant("agency"),
                vec![pattern("arn:aws:sts::1:assumed-role/*")],
            )
            .and_then(|t| {
                t.with(
                    tenant("acme"),
                    vec![pattern("arn:aws:sts::1:assumed-role/acme/*")],
                )
            })
            .expect("valid");
        assert_eq!(
            tenants.tenant_of("arn:aws:sts::1:assumed-role/acme/s1"),
            Some(&tenant("acme"))
        );
        assert_eq!(
            tenants.tenant_of("arn:aws:sts::1:assumed-role/beta/s1"),
            Some(&tenant("agency"))
        );
        assert_eq!(tenants.tenant_of("arn:aws:iam::1:user/x"), None);
    }

    #[test]
    fn a_pattern_belongs_to_one_tenant_and_a_tenant_lists_a_few() {
        let tenants = Tenants::default()
            .with(tenant("acme"), vec![pattern("arn:aws:iam::1:user/a")])
            .expect("valid");
        assert_eq!(
            tenants.with(tenant("beta"), vec![pattern("arn:aws:iam::1:user/a")]),
            Err(TenantsError::PrincipalTaken {
                pattern: "arn:aws:iam::1:user/a".to_owned(),
                tenant: tenant("acme"),
            })
        );
        // The same tenant may list it again (a replace).
        assert!(
            tenants
                .with(tenant("acme"), vec![pattern("arn:aws:iam::1:user/a")])
                .is_ok()
        );
        let many = (0..=MAX_PRINCIPALS_PER_TENANT)
            .map(|i| pattern(&format!("arn:aws:iam::1:user/u{i}")))
            .collect();
        assert_eq!(
            tenants.with(tenant("beta"), many),
            Err(TenantsError::TooManyPrincipals)
        );
        assert_eq!(
            tenants.all_with_default(),
            [tenant("acme"), TenantId::default_tenant()]
        );
        let (without, removed) = tenants.without(&tenant("acme"));
        assert!(removed && without.is_empty());
    }
}
