//! Webhook endpoints: where a tenant (or the deployment) wants connection events
//! delivered, signed the Standard Webhooks way, and which addresses an endpoint
//! may have.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::TenantId;
use crate::clock::Timestamp;
use crate::secret::WebhookSecret;

/// How many endpoints one tenant (or the deployment) may register.
pub const MAX_WEBHOOKS_PER_SCOPE: usize = 5;

/// How long a rotated-out secret still signs deliveries beside the new one, so
/// a receiver can switch over without dropping a delivery.
pub const SECRET_OVERLAP_SECONDS: i64 = 86_400;

/// Whose events an endpoint receives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WebhookScope {
    /// One tenant's connection events.
    Tenant(TenantId),
    /// Every tenant's connection events and the deployment's own.
    Deployment,
}

impl WebhookScope {
    /// The scope's name in the store and in answers: the tenant, or `*`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Tenant(tenant) => tenant.as_str(),
            Self::Deployment => "*",
        }
    }
}

/// A registered endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// `wh_` and 16 URL-safe random characters.
    pub id: String,
    /// Where deliveries are posted (https; checked when registered and at
    /// every delivery).
    pub url: Url,
    /// The current signing secret.
    pub secret: WebhookSecret,
    /// The secret before the last rotation and until when it still signs.
    pub previous_secret: Option<(WebhookSecret, Timestamp)>,
    /// When it was registered.
    pub created_at: Timestamp,
}

impl Webhook {
    /// A new endpoint at `url` with a fresh secret.
    pub fn new(url: Url, now: Timestamp) -> Self {
        Self {
            id: format!("wh_{}", &super::session_nonce()[..16]),
            url,
            secret: WebhookSecret::generate(),
            previous_secret: None,
            created_at: now,
        }
    }

    /// This endpoint with a fresh secret; the current one keeps signing for
    /// [`SECRET_OVERLAP_SECONDS`].
    pub fn rotated(&self, now: Timestamp) -> Self {
        Self {
            secret: WebhookSecret::generate(),
            previous_secret: Some((
                self.secret.clone(),
                now.plus_seconds(SECRET_OVERLAP_SECONDS),
            )),
            ..self.clone()
        }
    }

    /// The secrets a delivery at `now` is signed with: the current one, and the
    /// previous one while it overlaps.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&WebhookSecret> {
        let mut secrets = vec![&self.secret];
        if let Some((previous, until)) = &self.previous_secret
            && *until > now
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// The endpoints of one scope, as stored (version 0: never written).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Webhooks {
    /// Bumped by every write; each write is conditional on it.
    pub version: u64,
    /// The endpoints, oldest first.
    pub endpoints: Vec<Webhook>,
}

/// Why an endpoint URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointRefused {
    /// Not a URL.
    #[error("url is not an absolute URL")]
    NotAUrl,
    /// Not `https`.
    #[error("url must be https")]
    NotHttps,
    /// It carries a user name or password.
    #[error("url must not carry a user name or password")]
    Credentials,
    /// It names, or its name resolves to, an address deliveries may not reach.
    #[error(
        "url must reach a public address (not private, loopback, link-local or otherwise reserved)"
    )]
    PrivateAddress,
    /// Its name does not resolve.
    #[error("url's host name does not resolve")]
    Unresolvable,
}

/// `raw` as an endpoint URL, or why not. An IP-literal host is checked here; a
/// name is checked against what it resolves to ([`address_allowed`]), by the
/// caller, when registering and again at each delivery.
///
/// # Errors
/// [`EndpointRefused`].
pub fn endpoint_url(raw: &str, allow_loopback: bool) -> Result<Url, EndpointRefused> {
    let url = Url::parse(raw).map_err(|_| EndpointRefused::NotAUrl)?;
    if url.scheme() != "https" {
        return Err(EndpointRefused::NotHttps);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointRefused::Credentials);
    }
    let literal = match url.host() {
        None => return Err(EndpointRefused::NotAUrl),
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(Host::Domain(_)) => None,
    };
    if literal.is_some_and(|ip| !address_allowed(ip, allow_loopback)) {
        return Err(EndpointRefused::PrivateAddress);
    }
    Ok(url)
}

/// Whether a delivery may go to `ip`: a public unicast address, or loopback
/// when the deployment allows it (`make run`, the tests).
pub fn address_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4, allow_loopback),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_allowed(v4, allow_loopback),
            None => v6_allowed(v6, allow_loopback),
        },
    }
}

fn v4_allowed(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return allow_loopback;
    }
    let [a, b, ..] = ip.octets();
    let reserved = ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0.0.0.0/8, carrier-grade NAT 100.64.0.0/10, benchmarking
        // 198.18.0.0/15, 240.0.0.0/4 (reserved), 192.0.0.0/24 (protocol
        // assignments).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (18..20).contains(&b))
        || a >= 240
        || (a == 192 && b == 0 && ip.octets()[2] == 0);
    !reserved
}

fn v6_allowed(ip: Ipv6Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return allow_loopback;
    }
    let first = ip.segments()[0];
    let reserved = ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10,
        // documentation 2001:db8::/32, NAT64 64:ff9b::/96 (reaches IPv4 of
        // any kind), discard 100::/64.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)
        || first == 0x0100;
    !reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_without_credentials_are_endpoints() {
        assert!(endpoint_url("https://hooks.example.com/rd", false).is_ok());
        assert_eq!(
            endpoint_url("http://hooks.example.com/", false),
            Err(EndpointRefused::NotHttps)
        );
        assert_eq!(
            endpoint_url("https://u:p@hooks.example.com/", false),
            Err(EndpointRefused::Credentials)
        );
        assert_eq!(endpoint_url("hooks", false), Err(EndpointRefused::NotAUrl));
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused() {
        for raw in [
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[64:ff9b::a00:1]/",
        ] {
            assert_eq!(
                endpoint_url(raw, false),
                Err(EndpointRefused::PrivateAddress),
                "{raw}"
            );
        }
        assert!(endpoint_url("https://93.184.215.14/", false).is_ok());
        assert!(endpoint_url("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/", false).is_ok());
    }

    #[test]
    fn loopback_only_when_the_deployment_allows_it() {
        assert!(endpoint_url("https://127.0.0.1:8443/", true).is_ok());
        assert!(endpoint_url("https://[::1]:8443/", true).is_ok());
        assert_eq!(
            endpoint_url("https://10.1.2.3/", true),
            Err(EndpointRefused::PrivateAddress),
            "private stays refused"
        );
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_for_a_day() {
        let url = Url::parse("https://hooks.example.com/").expect("url");
        let hook = Webhook::new(url, Timestamp(1_000));
        assert_eq!(hook.signing_secrets(Timestamp(1_000)).len(), 1);
        let rotated = hook.rotated(Timestamp(2_000));
        assert_ne!(rotated.secret, hook.secret);
        assert_eq!(rotated.id, hook.id);
        assert_eq!(
            rotated.signing_secrets(Timestamp(2_000)),
            vec![&rotated.secret, &hook.secret]
        );
        assert_eq!(
            rotated.signing_secrets(Timestamp(2_000 + SECRET_OVERLAP_SECONDS)),
            vec![&rotated.secret]
        );
    }
}
