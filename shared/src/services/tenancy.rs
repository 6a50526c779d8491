//! Which tenant a caller acts in. The IAM identity API Gateway vouched for is
//! matched against the operator principals (from the deployment's settings),
//! then against each tenant's principals (from the tenant registry, which an
//! operator changes without a redeploy). A deployment with no tenant
//! configured puts every admitted caller in the default tenant, as before
//! tenants existed.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::domain::{PrincipalPattern, TenantId, Tenants, TenantsError};
use crate::ports::{StoreError, TenantRegistry};
use crate::services::caller_policy::{CallerPolicy, CallerRefused};

/// The request header an operator names the tenant it acts in with (a tenant
/// caller may name only its own). Never sent on to RD.
pub const TENANT_HEADER: &str = "x-rdconn-tenant";

/// What a caller may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerScope {
    /// The connections of this tenant only.
    Tenant(TenantId),
    /// Every tenant's connections, and the tenants themselves.
    Operator,
}

/// Why a request may not act in the tenant it names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeRefused {
    /// A caller that is not an operator named a tenant other than its own.
    #[error("only an operator principal may name another tenant")]
    NotAnOperator,
    /// The named tenant is not a valid name.
    #[error(transparent)]
    InvalidTenant(#[from] crate::domain::TenantIdError),
}

impl CallerScope {
    /// The tenant a request acts in: a tenant caller's own; the one an operator
    /// names, or the default tenant when it names none.
    ///
    /// # Errors
    /// [`ScopeRefused`] when a tenant caller names another tenant, or the name
    /// is invalid.
    pub fn acting_in(&self, named: Option<&str>) -> Result<TenantId, ScopeRefused> {
        let named = named.map(TenantId::parse).transpose()?;
        match (self, named) {
            (Self::Tenant(own), None) => Ok(own.clone()),
            (Self::Tenant(own), Some(named)) if named == *own => Ok(named),
            (Self::Tenant(_), Some(_)) => Err(ScopeRefused::NotAnOperator),
            (Self::Operator, named) => Ok(named.unwrap_or_default()),
        }
    }

    /// Whether the caller may manage tenants and see every tenant's connections.
    pub fn is_operator(&self) -> bool {
        matches!(self, Self::Operator)
    }
}

/// Why changing the tenants failed.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    /// The change itself is refused (a principal another tenant lists, too many).
    #[error(transparent)]
    Refused(#[from] TenantsError),
    /// Other operators kept changing the registry; nothing was written.
    #[error("the tenant registry kept changing under this write; try again")]
    Contended,
    /// The registry could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Attempts of one change against a registry other operators change too.
const WRITE_ATTEMPTS: usize = 5;

/// Resolves callers to their scope, and changes the tenants.
#[derive(Clone)]
pub struct Tenancy {
    /// Who is admitted at all (`ALLOWED_CALLER_ARNS`).
    pub policy: CallerPolicy,
    /// Principals that act as operators (`OPERATOR_ARNS`).
    pub operators: Vec<PrincipalPattern>,
    /// Where the tenants are kept.
    pub registry: Arc<dyn TenantRegistry>,
    /// The clock the cache ages by.
    pub clock: Arc<dyn Clock>,
    /// How long one instance uses the registry it read before reading it
    /// again: the longest a change (a principal removed) takes to apply.
    pub cache_ms: i64,
    cached: Arc<Mutex<Option<CachedTenants>>>,
}

/// The tenants one instance read, and when (ms since the epoch).
type CachedTenants = (i64, Arc<Tenants>);

impl Tenancy {
    /// Resolution with `policy`, `operators` and the tenants in `registry`,
    /// each read kept for `cache_ms`.
    pub fn new(
        policy: CallerPolicy,
        operators: Vec<PrincipalPattern>,
        registry: Arc<dyn TenantRegistry>,
        clock: Arc<dyn Clock>,
        cache_ms: i64,
    ) -> Self {
        Self {
            policy,
            operators,
            registry,
            clock,
            cache_ms,
            cached: Arc::default(),
        }
    }

    /// The scope of the caller known by the principal ARN the authorizer
    /// vouched for (if any). `make run` (no IAM) is an operator.
    ///
    /// # Errors
    /// [`CallerRefused`] when the caller is not admitted, belongs to no tenant
    /// while tenants are configured, or the registry cannot be read.
    pub async fn scope(&self, caller_arn: Option<&str>) -> Result<CallerScope, CallerRefused> {
        if matches!(self.policy, CallerPolicy::LocalUnauthenticated) {
            return Ok(CallerScope::Operator);
        }
        self.policy.check(caller_arn)?;
        // `check` refuses a missing or empty identity in IAM mode.
        let arn = caller_arn.unwrap_or_default();
        if self.operators.iter().any(|p| p.matches(arn)) {
            return Ok(CallerScope::Operator);
        }
        let tenants = self.current().await.map_err(|e| {
            tracing::error!(error = %e, "the tenant registry could not be read");
            CallerRefused::RegistryUnavailable
        })?;
        match tenants.tenant_of(arn) {
            Some(tenant) => Ok(CallerScope::Tenant(tenant.clone())),
            None if tenants.is_empty() => Ok(CallerScope::Tenant(TenantId::default_tenant())),
            None => Err(CallerRefused::NoTenant),
        }
    }

    /// The tenants, read now (an operator's view, never cached).
    ///
    /// # Errors
    /// [`StoreError`] when the registry cannot be read.
    pub async fn tenants(&self) -> Result<Tenants, StoreError> {
        let tenants = self.registry.tenants().await?;
        self.remember(&tenants).await;
        Ok(tenants)
    }

    /// Adds `tenant` or replaces its principals; returns the tenants as stored.
    ///
    /// # Errors
    /// [`TenancyError`] when the change is refused or cannot be stored.
    pub async fn set_tenant(
        &self,
        tenant: TenantId,
        principals: Vec<PrincipalPattern>,
    ) -> Result<Tenants, TenancyError> {
        self.change(|tenants| tenants.with(tenant.clone(), principals.clone()).map(Some))
            .await
            .map(|(tenants, _)| tenants)
    }

    /// Removes `tenant`: its principals act in no tenant any more (the API
    /// removes only a tenant without connections). `false` when it was not
    /// configured.
    ///
    /// # Errors
    /// [`TenancyError`] when the registry cannot be written.
    pub async fn remove_tenant(&self, tenant: &TenantId) -> Result<bool, TenancyError> {
        self.change(|tenants| {
            let (next, removed) = tenants.without(tenant);
            Ok(removed.then_some(next))
        })
        .await
        .map(|(_, changed)| changed)
    }

    /// Applies `edit` to the stored tenants and writes the result at the
    /// version read, reading again when another write came first. `edit`
    /// answering `None` changes nothing.
    async fn change(
        &self,
        edit: impl Fn(&Tenants) -> Result<Option<Tenants>, TenantsError>,
    ) -> Result<(Tenants, bool), TenancyError> {
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.registry.tenants().await?;
            let Some(next) = edit(&current)? else {
                return Ok((current, false));
            };
            if let Some(stored) = self.registry.replace_tenants(&next).await? {
                self.remember(&stored).await;
                return Ok((stored, true));
            }
        }
        Err(TenancyError::Contended)
    }

    /// The tenants as this instance last read them, read again once older
    /// than `cache_ms`. The lock is held across the read: requests arriving
    /// together on a cold instance wait for one read instead of each making
    /// their own.
    async fn current(&self) -> Result<Arc<Tenants>, StoreError> {
        let mut cached = self.cached.lock().await;
        let now = self.clock.now_ms();
        if let Some((at, tenants)) = cached.as_ref()
            && now - at < self.cache_ms
        {
            return Ok(tenants.clone());
        }
        let tenants = Arc::new(self.registry.tenants().await?);
        *cached = Some((self.clock.now_ms(), tenants.clone()));
        Ok(tenants)
    }

    async fn remember(&self, tenants: &Tenants) {
        *self.cached.lock().await = Some((self.clock.now_ms(), Arc::new(tenants.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::OffsetClock;
    use crate::outbound::memory::MemoryStore;

    fn pattern(p: &str) -> PrincipalPattern {
        PrincipalPattern::parse(p).expect("valid")
    }

    fn tenant(t: &str) -> TenantId {
        TenantId::parse(t).expect("valid")
    }

    fn tenancy(registry: Arc<MemoryStore>, clock: Arc<OffsetClock>) -> Tenancy {
        Tenancy::new(
            CallerPolicy::Iam {
                allowed_arns: Vec::new(),
            },
            vec![pattern("arn:aws:iam::1:role/ops")],
            registry,
            clock,
            30_000,
        )
    }

    #[tokio::test]
    async fn without_tenants_every_caller_acts_in_the_default_tenant() {
        let t = tenancy(Arc::new(MemoryStore::new()), Arc::new(OffsetClock::new()));
        assert_eq!(
            t.scope(Some("arn:aws:iam::1:user/a")).await,
            Ok(CallerScope::Tenant(TenantId::default_tenant()))
        );
        assert_eq!(
            t.scope(Some("arn:aws:iam::1:role/ops")).await,
            Ok(CallerScope::Operator)
        );
        assert_eq!(t.scope(None).await, Err(CallerRefused::NoIdentity));
    }

    #[tokio::test]
    async fn with_tenants_a_caller_acts_in_its_own_or_is_refused() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(OffsetClock::new());
        let ops = tenancy(store.clone(), clock.clone());
        ops.set_tenant(tenant("acme"), vec![pattern("arn:aws:iam::1:user/acme-*")])
            .await
            .expect("stored");
        // Another instance, with its own cache.
        let other = tenancy(store, clock.clone());
        assert_eq!(
            other.scope(Some("arn:aws:iam::1:user/acme-app")).await,
            Ok(CallerScope::Tenant(tenant("acme")))
        );
        assert_eq!(
            other.scope(Some("arn:aws:iam::1:user/beta-app")).await,
            Err(CallerRefused::NoTenant)
        );
        // A removal reaches the other instance once its read has aged out.
        assert!(ops.remove_tenant(&tenant("acme")).await.expect("removed"));
        assert_eq!(
            other.scope(Some("arn:aws:iam::1:user/acme-app")).await,
            Ok(CallerScope::Tenant(tenant("acme")))
        );
        clock.advance(31);
        assert_eq!(
            other.scope(Some("arn:aws:iam::1:user/acme-app")).await,
            Ok(CallerScope::Tenant(TenantId::default_tenant()))
        );
    }

    #[test]
    fn only_an_operator_names_another_tenant() {
        let acme = CallerScope::Tenant(tenant("acme"));
        assert_eq!(acme.acting_in(None), Ok(tenant("acme")));
        assert_eq!(acme.acting_in(Some("acme")), Ok(tenant("acme")));
        assert_eq!(
            acme.acting_in(Some("beta")),
            Err(ScopeRefused::NotAnOperator)
        );
        assert_eq!(
            CallerScope::Operator.acting_in(None),
            Ok(TenantId::default_tenant())
        );
        assert_eq!(
            CallerScope::Operator.acting_in(Some("beta")),
            Ok(tenant("beta"))
        );
        assert!(CallerScope::Operator.acting_in(Some("Beta")).is_err());
    }
}
