//! Configuration from environment variables, parsed once at cold start into a typed
//! struct. A missing or malformed variable is a startup error that names it.

use std::time::Duration;

use url::{Origin, Url};

use crate::domain::{DuePolicy, PrincipalPattern};
use crate::inbound::http::{Brand, BrandError, SupportContact};
use crate::outbound::rdstation::RdStationEndpoints;
use crate::services::proxy::ProxySettings;
use crate::services::refresh_protocol::{LeaseTiming, RefreshSettings};
use crate::services::webhooks::WebhookSettings;

/// RD's production API and token host.
pub const DEFAULT_RDSTATION_API_URL: &str = "https://api.rd.services";
/// RD Station Marketing's consent page.
pub const DEFAULT_MARKETING_AUTHORIZE_URL: &str = "https://api.rd.services/auth/dialog";
/// RD Station CRM v2's consent page, as RD's current documentation gives it.
pub const DEFAULT_CRM_AUTHORIZE_URL: &str = "https://accounts.rdstation.com/oauth/authorize";
/// How long a call to RD's token endpoint may take, by default.
pub const DEFAULT_TOKEN_TIMEOUT_SECONDS: u64 = 10;

/// How long an instance uses the tenant registry it read, by default.
pub const DEFAULT_TENANT_CACHE_SECONDS: u32 = 30;

/// The longest a budget slice may live (`PROXY_BUDGET_SLICE_SECONDS`): every
/// second of it is a second a warm instance may still use an ended grant's
/// token, and a second added to the window the budget is paced over.
pub const MAX_BUDGET_SLICE_SECONDS: u64 = 30;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("missing environment variable {0}")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The operator's brand from `BRAND_NAME`, `BRAND_SUPPORT_CONTACT`,
/// `BRAND_LOGO_URL` and `BRAND_ACCENT_COLOR` (see [`Config::brand`]); the local
/// run reads it the same way.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the first setting that is set and unusable.
pub fn brand_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Brand, ConfigError> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    Ok(Brand {
        name: brand_setting("BRAND_NAME", get("BRAND_NAME"), Brand::name)?,
        support: brand_setting(
            "BRAND_SUPPORT_CONTACT",
            get("BRAND_SUPPORT_CONTACT"),
            SupportContact::parse,
        )?,
        logo: brand_setting("BRAND_LOGO_URL", get("BRAND_LOGO_URL"), Brand::logo)?,
        accent: brand_setting(
            "BRAND_ACCENT_COLOR",
            get("BRAND_ACCENT_COLOR"),
            Brand::accent,
        )?
        .unwrap_or_else(|| Brand::default().accent),
    })
}

/// The webhook settings from `lookup` (see [`Config::webhooks`]); the local run
/// reads them the same way.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the first setting that is set and unusable.
pub fn webhook_settings_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<WebhookSettings, ConfigError> {
    webhook_settings(&|name: &'static str| lookup(name).filter(|v| !v.trim().is_empty()))
}

/// The webhook settings from `WEBHOOK_ALLOW_LOOPBACK` (`true`: endpoints on
/// loopback are allowed; for `make run` and tests, never a deployment),
/// `WEBHOOK_EXTRA_CA_FILE` (a PEM file of roots to trust beside the
/// platform's) and `WEBHOOK_RETRY_BASE_SECONDS` (0-900, default 30).
fn webhook_settings(
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<WebhookSettings, ConfigError> {
    let defaults = WebhookSettings::default();
    let allow_loopback = match get("WEBHOOK_ALLOW_LOOPBACK").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ConfigError::Invalid {
                name: "WEBHOOK_ALLOW_LOOPBACK",
                reason: "true or false".to_owned(),
            });
        }
    };
    let extra_roots_pem = get("WEBHOOK_EXTRA_CA_FILE")
        .map(|path| {
            std::fs::read(&path).map_err(|e| ConfigError::Invalid {
                name: "WEBHOOK_EXTRA_CA_FILE",
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let retry_base = match get("WEBHOOK_RETRY_BASE_SECONDS") {
        None => defaults.retry_base,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(seconds @ 0..=900) => Duration::from_secs(seconds),
            _ => {
                return Err(ConfigError::Invalid {
                    name: "WEBHOOK_RETRY_BASE_SECONDS",
                    reason: "a whole number of seconds from 0 to 900".to_owned(),
                });
            }
        },
    };
    Ok(WebhookSettings {
        allow_loopback,
        extra_roots_pem,
        retry_base,
    })
}

/// A brand setting, checked when it is set.
fn brand_setting<T>(
    name: &'static str,
    value: Option<String>,
    check: fn(&str) -> Result<T, BrandError>,
) -> Result<Option<T>, ConfigError> {
    value
        .map(|v| {
            check(&v).map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("expected {e}"),
            })
        })
        .transpose()
}

/// The service's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `CONNECTIONS_TABLE`: the one DynamoDB table holding all state.
    pub connections_table: String,
    /// `CLIENT_CREDENTIALS_SECRET`: name or ARN of the Secrets Manager secret with
    /// the RD Station app credentials.
    pub client_credentials_secret: String,
    /// `PUBLIC_BASE_URL`: where this service is reachable (a custom domain); the
    /// OAuth `redirect_uri` is this plus `/oauth/callback`. Unset: the domain each
    /// request arrived on, as API Gateway reports it.
    pub public_base_url: Option<Url>,
    /// `RDSTATION_API_URL`, `RDSTATION_MARKETING_AUTHORIZE_URL`,
    /// `RDSTATION_CRM_AUTHORIZE_URL`.
    pub rdstation: RdStationEndpoints,
    /// `ALLOWED_RETURN_ORIGINS`: comma-separated origins a connect session may
    /// send the person back to.
    pub allowed_return_origins: Vec<Origin>,
    /// `EVENT_BUS_NAME`: the EventBridge bus for connection events.
    pub event_bus_name: Option<String>,
    /// `ALLOWED_CALLER_ARNS`: comma-separated IAM principal ARNs that may open
    /// connect sessions (a trailing `*` matches a prefix); empty allows any caller
    /// the API's IAM authorizer let through.
    pub allowed_caller_arns: Vec<String>,
    /// `OPERATOR_ARNS`: comma-separated IAM principals (a trailing `*` matches a
    /// prefix) that act as operators: they manage tenants and see and act in
    /// every tenant. Empty: nobody does.
    pub operator_arns: Vec<PrincipalPattern>,
    /// `TENANT_CACHE_SECONDS` (default 30): how long an instance uses the
    /// tenant registry it read, the longest a change of a tenant's principals
    /// takes to apply everywhere.
    pub tenant_cache_seconds: u32,
    /// `RESCUE_BUCKET`: the S3 bucket where pairs whose commit failed wait
    /// (required by every function: each one can refresh).
    pub rescue_bucket: Option<String>,
    /// `LEGACY_RESCUE_QUEUE_URL`: the SQS queue earlier versions rescued pairs to;
    /// the refresher moves what it still holds to the bucket (optional).
    pub legacy_rescue_queue_url: Option<String>,
    /// `REFRESH_WORK_QUEUE_URL`: the SQS queue scheduled runs hand their shards
    /// to, consumed by the refresher function's workers; unset, each scheduled
    /// run refreshes every shard itself.
    pub refresh_work_queue_url: Option<String>,
    /// `WEBHOOK_QUEUE_URL`: the queue webhook deliveries wait in (the webhook
    /// sender's; unset elsewhere).
    pub webhook_queue_url: Option<String>,
    /// `WEBHOOK_ALLOW_LOOPBACK`, `WEBHOOK_EXTRA_CA_FILE`,
    /// `WEBHOOK_RETRY_BASE_SECONDS`.
    pub webhooks: WebhookSettings,
    /// The refresh protocol's timing and due policy: `RDSTATION_TOKEN_TIMEOUT_SECONDS`
    /// (T, the hard timeout of every RD call), `REFRESH_LEASE_SECONDS`,
    /// `REFRESH_COMMIT_BUDGET_SECONDS`, `REFRESH_MARGIN_CRM_SECONDS`,
    /// `REFRESH_MARGIN_MARKETING_SECONDS`, `CRM_KEEPALIVE_DAYS`, `DUE_INDEX_SHARDS`,
    /// `REFRESH_CLOCK_SKEW_MS`, `REFRESH_FAILING_AFTER`.
    pub refresh: RefreshSettings,
    /// The proxy: `PROXY_RATE_LIMIT_PER_MINUTE` (default 120, RD's account limit;
    /// `off` turns the shared budget off).
    pub proxy: ProxySettings,
    /// `REFRESH_CONCURRENCY`: refreshes in flight at once in one refresher run.
    pub refresh_concurrency: usize,
    /// The operator's brand on the pages a person sees: `BRAND_NAME`,
    /// `BRAND_SUPPORT_CONTACT` (an e-mail address or an https URL),
    /// `BRAND_LOGO_URL` (https) and `BRAND_ACCENT_COLOR` (`#rrggbb`); all
    /// optional.
    pub brand: Brand,
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first missing or invalid variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first missing or invalid variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing(name));
        let url = |name: &'static str, default: &str| {
            let value = get(name).unwrap_or_else(|| default.to_owned());
            parse_http_url(name, &value)
        };

        let public_base_url = get("PUBLIC_BASE_URL")
            .map(|v| parse_http_url("PUBLIC_BASE_URL", &v))
            .transpose()?;
        let allowed_return_origins = get("ALLOWED_RETURN_ORIGINS")
            .map(|list| parse_origins(&list))
            .transpose()?
            .unwrap_or_default();
        let positive = |name: &'static str, default: u64| match get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(ConfigError::Invalid {
                    name,
                    reason: "expected a whole number above 0".to_owned(),
                }),
            },
        };
        let token_call_timeout = Duration::from_secs(positive(
            "RDSTATION_TOKEN_TIMEOUT_SECONDS",
            DEFAULT_TOKEN_TIMEOUT_SECONDS,
        )?);
        let mut refresh = RefreshSettings::new(LeaseTiming {
            token_timeout: token_call_timeout,
            commit_budget: Duration::from_secs(positive("REFRESH_COMMIT_BUDGET_SECONDS", 10)?),
            lease: Duration::from_secs(positive("REFRESH_LEASE_SECONDS", 30)?),
            clock_skew: Duration::from_millis(positive("REFRESH_CLOCK_SKEW_MS", 2_000)?),
        })
        .map_err(|e| ConfigError::Invalid {
            name: "REFRESH_LEASE_SECONDS",
            reason: e.to_string(),
        })?;
        let defaults = DuePolicy::default();
        refresh.due = DuePolicy {
            crm_margin_seconds: positive(
                "REFRESH_MARGIN_CRM_SECONDS",
                defaults.crm_margin_seconds as u64,
            )? as i64,
            marketing_margin_seconds: positive(
                "REFRESH_MARGIN_MARKETING_SECONDS",
                defaults.marketing_margin_seconds as u64,
            )? as i64,
            crm_keepalive_seconds: positive("CRM_KEEPALIVE_DAYS", 7)? as i64 * 86_400,
            shards: u32::try_from(positive("DUE_INDEX_SHARDS", u64::from(defaults.shards))?)
                .map_err(|_| ConfigError::Invalid {
                    name: "DUE_INDEX_SHARDS",
                    reason: "too large".to_owned(),
                })?,
        };
        refresh.expiring_warning = match positive("EXPIRING_WARNING_HOURS", 48)? {
            hours @ 1..=336 => Duration::from_secs(hours * 3_600),
            _ => {
                return Err(ConfigError::Invalid {
                    name: "EXPIRING_WARNING_HOURS",
                    reason: "expected 1 to 336 hours (a CRM refresh token lives 14 idle days)"
                        .to_owned(),
                });
            }
        };
        refresh.failing_after =
            u32::try_from(positive("REFRESH_FAILING_AFTER", 6)?).map_err(|_| {
                ConfigError::Invalid {
                    name: "REFRESH_FAILING_AFTER",
                    reason: "too large".to_owned(),
                }
            })?;
        refresh.token_calls_per_second = match get("TOKEN_CALLS_PER_SECOND").as_deref() {
            None | Some("off") => None,
            Some(value) => Some(
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "TOKEN_CALLS_PER_SECOND",
                        reason: "a whole number from 1 to 10000, or off".to_owned(),
                    })?,
            ),
        };
        if refresh.due.crm_keepalive_seconds >= 14 * 86_400 {
            return Err(ConfigError::Invalid {
                name: "CRM_KEEPALIVE_DAYS",
                reason: "must be below 14, RD's idle limit for CRM refresh tokens".to_owned(),
            });
        }
        if get("FUNCTION_TIMEOUT_SECONDS").is_some() {
            let timeout = Duration::from_secs(positive("FUNCTION_TIMEOUT_SECONDS", 1)?);
            check_fits_invocation(&refresh, timeout)?;
        }
        let refresh_concurrency = positive("REFRESH_CONCURRENCY", 32)? as usize;
        let brand = brand_from_lookup(&lookup)?;
        let proxy = ProxySettings {
            rate_limit_per_minute: match get("PROXY_RATE_LIMIT_PER_MINUTE").as_deref() {
                Some("off") => None,
                _ => Some(
                    u32::try_from(positive("PROXY_RATE_LIMIT_PER_MINUTE", 120)?).map_err(|_| {
                        ConfigError::Invalid {
                            name: "PROXY_RATE_LIMIT_PER_MINUTE",
                            reason: "too large".to_owned(),
                        }
                    })?,
                ),
            },
            budget_slice: match get("PROXY_BUDGET_SLICE_SECONDS") {
                None => crate::services::proxy::DEFAULT_BUDGET_SLICE,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(seconds) if seconds <= MAX_BUDGET_SLICE_SECONDS => {
                        Duration::from_secs(seconds)
                    }
                    _ => {
                        return Err(ConfigError::Invalid {
                            name: "PROXY_BUDGET_SLICE_SECONDS",
                            reason: format!("expected 0 to {MAX_BUDGET_SLICE_SECONDS} seconds"),
                        });
                    }
                },
            },
            ..ProxySettings::default()
        };
        Ok(Self {
            connections_table: required("CONNECTIONS_TABLE")?,
            client_credentials_secret: required("CLIENT_CREDENTIALS_SECRET")?,
            public_base_url,
            rdstation: RdStationEndpoints {
                api_base: url("RDSTATION_API_URL", DEFAULT_RDSTATION_API_URL)?,
                marketing_authorize: url(
                    "RDSTATION_MARKETING_AUTHORIZE_URL",
                    DEFAULT_MARKETING_AUTHORIZE_URL,
                )?,
                crm_authorize: url("RDSTATION_CRM_AUTHORIZE_URL", DEFAULT_CRM_AUTHORIZE_URL)?,
            },
            allowed_return_origins,
            event_bus_name: get("EVENT_BUS_NAME"),
            rescue_bucket: get("RESCUE_BUCKET"),
            legacy_rescue_queue_url: get("LEGACY_RESCUE_QUEUE_URL"),
            refresh_work_queue_url: get("REFRESH_WORK_QUEUE_URL"),
            webhook_queue_url: get("WEBHOOK_QUEUE_URL"),
            webhooks: webhook_settings(&get)?,
            allowed_caller_arns: get("ALLOWED_CALLER_ARNS")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            operator_arns: get("OPERATOR_ARNS")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(|a| {
                            PrincipalPattern::parse(a).map_err(|e| ConfigError::Invalid {
                                name: "OPERATOR_ARNS",
                                reason: e.to_string(),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default(),
            tenant_cache_seconds: match get("TENANT_CACHE_SECONDS") {
                None => DEFAULT_TENANT_CACHE_SECONDS,
                Some(v) => {
                    v.parse()
                        .ok()
                        .filter(|n| *n <= 3_600)
                        .ok_or_else(|| ConfigError::Invalid {
                            name: "TENANT_CACHE_SECONDS",
                            reason: "a whole number of seconds from 0 to 3600".to_owned(),
                        })?
                }
            },
            refresh,
            proxy,
            refresh_concurrency,
            brand,
        })
    }
}

fn parse_http_url(name: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim()).map_err(|e| ConfigError::Invalid {
        name,
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::Invalid {
            name,
            reason: "expected an absolute http(s) URL".to_owned(),
        });
    }
    Ok(url)
}

fn parse_origins(list: &str) -> Result<Vec<Origin>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse_http_url("ALLOWED_RETURN_ORIGINS", s).map(|u| u.origin()))
        .collect()
}

/// What a refresh needs of an invocation before it may claim: the token call,
/// the commit budget, the claim itself and the margin kept to answer.
pub fn refresh_needs(refresh: &RefreshSettings) -> Duration {
    refresh.token_timeout()
        + refresh.commit_budget()
        + crate::services::refresh_protocol::CLAIM_ALLOWANCE
        + Duration::from_millis(crate::inbound::http::ANSWER_MARGIN_MS as u64)
}

/// Refuses a function timeout (`FUNCTION_TIMEOUT_SECONDS`, the template's
/// `Timeout`) in which no refresh could ever start: every one would end
/// `out_of_time`, silently.
fn check_fits_invocation(refresh: &RefreshSettings, timeout: Duration) -> Result<(), ConfigError> {
    let needs = refresh_needs(refresh);
    if timeout <= needs {
        return Err(ConfigError::Invalid {
            name: "FUNCTION_TIMEOUT_SECONDS",
            reason: format!(
                "the function's timeout ({timeout:?}) must exceed the RD token timeout ({:?}) plus the commit budget ({:?}) plus {:?} for the claim and {}ms to answer, or no refresh can ever start",
                refresh.token_timeout(),
                refresh.commit_budget(),
                crate::services::refresh_protocol::CLAIM_ALLOWANCE,
                crate::inbound::http::ANSWER_MARGIN_MS,
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::services::connect::PublicBase;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const MINIMAL: [(&str, &str); 2] = [
        ("CONNECTIONS_TABLE", "connections"),
        ("CLIENT_CREDENTIALS_SECRET", "rd/creds"),
    ];

    #[test]
    fn the_brand_is_optional_and_checked_when_set() {
        let config = Config::from_lookup(lookup(&MINIMAL)).expect("valid");
        assert_eq!(config.brand, Brand::default());
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("BRAND_NAME", "Acme Vendas"),
            ("BRAND_SUPPORT_CONTACT", "suporte@acme.com.br"),
            ("BRAND_LOGO_URL", "https://cdn.acme.com.br/logo.png"),
            ("BRAND_ACCENT_COLOR", "#0A7B3E"),
        ]);
        let brand = Config::from_lookup(lookup(&pairs)).expect("valid").brand;
        assert_eq!(brand.name.as_deref(), Some("Acme Vendas"));
        assert_eq!(brand.accent, "#0a7b3e");
        for (name, bad) in [
            ("BRAND_SUPPORT_CONTACT", "call us"),
            ("BRAND_LOGO_URL", "http://cdn.acme.com.br/logo.png"),
            ("BRAND_ACCENT_COLOR", "green"),
        ] {
            let mut pairs = MINIMAL.to_vec();
            pairs.push((name, bad));
            let error = Config::from_lookup(lookup(&pairs)).expect_err(name);
            assert!(
                matches!(error, ConfigError::Invalid { name: n, .. } if n == name),
                "{error}"
            );
        }
    }

    #[test]
    fn without_a_public_base_url_the_request_domain_is_the_base() {
        let config = Config::from_lookup(lookup(&MINIMAL)).expect("valid");
        let base = crate::assembly::Settings::from_config(&config).public_base;
        assert_eq!(base, PublicBase::RequestDomain);
        let url = base
            .resolve(Some("abc123.execute-api.us-east-1.amazonaws.com"))
            .expect("a domain");
        assert_eq!(
            crate::services::connect::redirect_uri(&url),
            "https://abc123.execute-api.us-east-1.amazonaws.com/oauth/callback"
        );
        assert_eq!(base.resolve(None), None, "no domain, no base");
        for spoofed in ["evil.example/x", "a b", "user@evil.example", ""] {
            assert_eq!(base.resolve(Some(spoofed)), None, "{spoofed:?}");
        }
    }

    #[test]
    fn minimal_environment_uses_rd_defaults() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("PUBLIC_BASE_URL", "https://connect.example.com/"));
        let config = Config::from_lookup(lookup(&pairs)).expect("valid");
        let base = crate::assembly::Settings::from_config(&config)
            .public_base
            .resolve(None)
            .expect("configured");
        assert_eq!(
            crate::services::connect::redirect_uri(&base),
            "https://connect.example.com/oauth/callback"
        );
        assert_eq!(
            config.rdstation.api_base.as_str(),
            "https://api.rd.services/"
        );
        assert_eq!(
            config.rdstation.crm_authorize.as_str(),
            DEFAULT_CRM_AUTHORIZE_URL
        );
        assert!(config.allowed_return_origins.is_empty());
        assert_eq!(config.refresh.token_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn names_each_missing_variable() {
        for (missing, _) in MINIMAL {
            let pairs: Vec<_> = MINIMAL
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = Config::from_lookup(lookup(&pairs)).expect_err("missing");
            assert_eq!(err, ConfigError::Missing(missing));
            assert!(err.to_string().contains(missing));
        }
    }

    #[test]
    fn rejects_malformed_values_by_name() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push((
            "ALLOWED_RETURN_ORIGINS",
            "https://ok.example.com, not a url",
        ));
        let err = Config::from_lookup(lookup(&pairs)).expect_err("invalid");
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "ALLOWED_RETURN_ORIGINS",
                ..
            }
        ));

        let mut pairs = MINIMAL.to_vec();
        pairs.push(("RDSTATION_API_URL", "ftp://x"));
        let err = Config::from_lookup(lookup(&pairs)).expect_err("invalid");
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "RDSTATION_API_URL",
                ..
            }
        ));
    }

    #[test]
    fn tenancy_and_the_token_call_cap_are_read_and_checked() {
        let config = Config::from_lookup(lookup(&MINIMAL)).expect("valid");
        assert_eq!(config.refresh.token_calls_per_second, None);
        assert!(config.operator_arns.is_empty());
        assert_eq!(config.tenant_cache_seconds, DEFAULT_TENANT_CACHE_SECONDS);
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("TOKEN_CALLS_PER_SECOND", "50"),
            (
                "OPERATOR_ARNS",
                "arn:aws:iam::1:role/ops, arn:aws:sts::1:assumed-role/x/*",
            ),
            ("TENANT_CACHE_SECONDS", "0"),
        ]);
        let config = Config::from_lookup(lookup(&pairs)).expect("valid");
        assert_eq!(config.refresh.token_calls_per_second, Some(50));
        assert_eq!(config.operator_arns.len(), 2);
        assert_eq!(config.tenant_cache_seconds, 0);
        for (name, bad) in [
            ("TOKEN_CALLS_PER_SECOND", "0"),
            ("TOKEN_CALLS_PER_SECOND", "fast"),
            ("OPERATOR_ARNS", "ops"),
            ("TENANT_CACHE_SECONDS", "3601"),
        ] {
            let mut pairs = MINIMAL.to_vec();
            pairs.push((name, bad));
            let err = Config::from_lookup(lookup(&pairs)).expect_err("invalid");
            assert!(
                matches!(err, ConfigError::Invalid { name: n, .. } if n == name),
                "{name}={bad}: {err}"
            );
        }
    }

    #[test]
    fn the_budget_slice_and_the_work_queue_are_read_and_checked() {
        let config = Config::from_lookup(lookup(&MINIMAL)).expect("valid");
        assert_eq!(
            config.proxy.budget_slice,
            crate::services::proxy::DEFAULT_BUDGET_SLICE
        );
        assert_eq!(config.refresh_work_queue_url, None);
        assert_eq!(
            config.refresh.expiring_warning,
            Duration::from_secs(48 * 3_600)
        );
        let mut pairs = MINIMAL.to_vec();
        pairs.extend([
            ("PROXY_BUDGET_SLICE_SECONDS", "0"),
            (
                "REFRESH_WORK_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/1/work",
            ),
        ]);
        let config = Config::from_lookup(lookup(&pairs)).expect("valid");
        assert_eq!(config.proxy.budget_slice, Duration::ZERO);
        assert!(config.refresh_work_queue_url.is_some());
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("EXPIRING_WARNING_HOURS", "337"));
        assert!(matches!(
            Config::from_lookup(lookup(&pairs)),
            Err(ConfigError::Invalid {
                name: "EXPIRING_WARNING_HOURS",
                ..
            })
        ));
        for bad in ["31", "-1", "soon"] {
            let mut pairs = MINIMAL.to_vec();
            pairs.push(("PROXY_BUDGET_SLICE_SECONDS", bad));
            let err = Config::from_lookup(lookup(&pairs)).expect_err("invalid");
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        name: "PROXY_BUDGET_SLICE_SECONDS",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn refuses_a_function_timeout_no_refresh_fits_in() {
        // T 10 s + commit budget 10 s + 0.5 s claim + 0.5 s to answer = 21 s.
        for (timeout, ok) in [("20", false), ("21", false), ("22", true), ("29", true)] {
            let mut pairs = MINIMAL.to_vec();
            pairs.push(("FUNCTION_TIMEOUT_SECONDS", timeout));
            let result = Config::from_lookup(lookup(&pairs));
            assert_eq!(result.is_ok(), ok, "{timeout}: {result:?}");
            if let Err(ConfigError::Invalid { name, reason }) = result {
                assert_eq!(name, "FUNCTION_TIMEOUT_SECONDS");
                for value in ["10s", "500ms"] {
                    assert!(reason.contains(value), "{value} named in {reason}");
                }
            }
        }
    }

    #[test]
    fn refuses_a_lease_shorter_than_timeout_commit_and_skew() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push(("RDSTATION_TOKEN_TIMEOUT_SECONDS", "19"));
        pairs.push(("REFRESH_COMMIT_BUDGET_SECONDS", "10"));
        pairs.push(("REFRESH_CLOCK_SKEW_MS", "1500"));
        pairs.push(("REFRESH_LEASE_SECONDS", "30"));
        let err = Config::from_lookup(lookup(&pairs)).expect_err("too short");
        let ConfigError::Invalid { name, reason } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*name, "REFRESH_LEASE_SECONDS");
        for value in ["30s", "19s", "10s", "1.5s"] {
            assert!(reason.contains(value), "{value} named in {reason}");
        }
        pairs.pop();
        pairs.push(("REFRESH_LEASE_SECONDS", "31"));
        assert!(Config::from_lookup(lookup(&pairs)).is_ok());

        let mut pairs = MINIMAL.to_vec();
        pairs.push(("CRM_KEEPALIVE_DAYS", "14"));
        let err = Config::from_lookup(lookup(&pairs)).expect_err("past RD's idle limit");
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "CRM_KEEPALIVE_DAYS",
                ..
            }
        ));
    }

    #[test]
    fn parses_return_origins() {
        let mut pairs = MINIMAL.to_vec();
        pairs.push((
            "ALLOWED_RETURN_ORIGINS",
            "https://a.example.com,http://localhost:3000/",
        ));
        let config = Config::from_lookup(lookup(&pairs)).expect("valid");
        assert_eq!(config.allowed_return_origins.len(), 2);
        assert_eq!(
            config.allowed_return_origins[1],
            Url::parse("http://localhost:3000").expect("url").origin()
        );
    }
}
