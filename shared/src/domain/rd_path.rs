//! A path on RD Station's API that a caller may reach through the proxy.
//!
//! The path comes from the caller, so it is checked before it gets near a URL:
//! nothing in it may change the host (absolute URLs, `@`, backslashes, encoded
//! slashes or dots, `..`, empty segments, control characters), and RD's OAuth
//! endpoints are refused outright: a caller has no business with tokens.

use url::Url;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefused {
    /// The path could change the host or escape the API's base path.
    #[error("the path is not a plain path on RD Station's API")]
    Unsafe,
    /// The path leads to RD's OAuth endpoints (an `auth`, `oauth` or `oauth2`
    /// segment).
    #[error("RD Station's OAuth endpoints cannot be reached through the proxy")]
    OAuthEndpoint,
}

/// A checked path (still percent-encoded as the caller sent it) and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdPath {
    path: String,
    query: Option<String>,
}

/// Segments that lead to RD's token, revoke or consent endpoints.
const OAUTH_SEGMENTS: [&str; 3] = ["auth", "oauth", "oauth2"];

impl RdPath {
    /// Checks `path` (without a leading slash, percent-encoded) and `query`.
    ///
    /// # Errors
    /// [`PathRefused`] for anything but a plain path off RD's OAuth endpoints.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Self, PathRefused> {
        let lowered = path.to_ascii_lowercase();
        let plain = !path.is_empty()
            && path.len() <= 2_048
            && path.bytes().all(|b| b.is_ascii_graphic())
            && !path.contains(['\\', '@', '?', '#'])
            // Encoded slash, backslash, dot, percent, '@' or control characters.
            && !["%2f", "%5c", "%2e", "%25", "%40", "%00", "%0a", "%0d", "%09"]
                .iter()
                .any(|e| lowered.contains(e))
            && path
                .split('/')
                .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
            // `http:` and the like as a first segment could read as a scheme.
            && !path.split('/').next().is_some_and(|s| s.contains(':'));
        if !plain {
            return Err(PathRefused::Unsafe);
        }
        // Anywhere in the path, not only first: hosts in front of the service may
        // resolve `x/../auth/token` before it gets here.
        if lowered
            .split('/')
            .any(|segment| OAUTH_SEGMENTS.contains(&segment))
        {
            return Err(PathRefused::OAuthEndpoint);
        }
        let query = query
            .filter(|q| !q.is_empty())
            .map(|q| {
                (q.len() <= 8_192 && q.bytes().all(|b| b.is_ascii_graphic()) && !q.contains('#'))
                    .then(|| q.to_owned())
                    .ok_or(PathRefused::Unsafe)
            })
            .transpose()?;
        Ok(Self {
            path: path.to_owned(),
            query,
        })
    }

    /// The path with segments that may carry ids or personal data (numbers, values
    /// with digits, `@`, `:`, long values; `v2` stays) replaced by `{}`: what a log
    /// line may show.
    pub fn template(&self) -> String {
        self.path
            .split('/')
            .map(|s| {
                let digits = s.bytes().filter(u8::is_ascii_digit).count();
                let id_like = s.len() > 24
                    || s.bytes().any(|b| matches!(b, b'@' | b':' | b'%'))
                    || digits == s.len()
                    || (digits > 0 && s.len() >= 5);
                if id_like { "{}" } else { s }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The URL on `base` (RD's API): base path + this path, this query. Returns
    /// `None` if the result would leave `base`'s origin or path (it cannot, after
    /// [`RdPath::parse`]; checked again all the same).
    pub fn url_on(&self, base: &Url) -> Option<Url> {
        let mut url = base.clone();
        let base_path = base.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}/{}", self.path));
        url.set_query(self.query.as_deref());
        url.set_fragment(None);
        let stays = url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default()
            && url
                .path()
                .strip_prefix(base_path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
            && url.username().is_empty()
            && url.password().is_none();
        stays.then_some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://api.rd.services/").expect("url")
    }

    #[test]
    fn plain_paths_and_queries_pass_and_stay_on_the_base() {
        let p = RdPath::parse("platform/contacts/email:ana%2Bx%40", None);
        assert_eq!(p, Err(PathRefused::Unsafe), "encoded @");
        let p = RdPath::parse("crm/v2/contacts", Some("page[number]=2&q=ana")).expect("plain");
        assert_eq!(
            p.url_on(&base()).expect("url").as_str(),
            "https://api.rd.services/crm/v2/contacts?page[number]=2&q=ana"
        );
        let nested = Url::parse("https://rd.example/api/").expect("url");
        let p = RdPath::parse("platform/contacts", None).expect("plain");
        assert_eq!(
            p.url_on(&nested).expect("url").as_str(),
            "https://rd.example/api/platform/contacts"
        );
    }

    #[test]
    fn nothing_in_the_path_can_change_the_host() {
        for raw in [
            "",
            "/platform",
            "platform//contacts",
            "../admin",
            "platform/../auth/token",
            "platform/%2e%2e/auth",
            "platform%2Fcontacts",
            "http://evil.example/x",
            "https:evil.example",
            "@evil.example/x",
            "evil.example@api.rd.services",
            "platform\\contacts",
            "platform/contacts\r\nHost: evil",
            "platform/%0d%0ahost",
            "platform/con tacts",
            "platform/ca\u{e7}a",
            "platform/%252e%252e",
        ] {
            assert_eq!(
                RdPath::parse(raw, None),
                Err(PathRefused::Unsafe),
                "{raw:?}"
            );
        }
        assert_eq!(
            RdPath::parse("platform", Some("a=1#frag")),
            Err(PathRefused::Unsafe)
        );
    }

    #[test]
    fn oauth_endpoints_are_refused() {
        for raw in [
            "auth/token",
            "AUTH/revoke",
            "oauth2/token",
            "oauth/authorize",
        ] {
            assert_eq!(
                RdPath::parse(raw, None),
                Err(PathRefused::OAuthEndpoint),
                "{raw}"
            );
        }
        assert!(RdPath::parse("authors/list", None).is_ok());
    }

    #[test]
    fn templates_hide_ids_and_personal_data() {
        let p = RdPath::parse("platform/contacts/email:ana", None).expect("plain");
        assert_eq!(p.template(), "platform/contacts/{}");
        let p = RdPath::parse("crm/v2/deals/6512f0a1", None).expect("plain");
        assert_eq!(p.template(), "crm/v2/deals/{}");
    }
}
