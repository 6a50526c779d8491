//! A path on RD Station's API that a caller may reach through the proxy.
//!
//! The path comes from the caller, so it is checked before it gets near a URL:
//! nothing in it may change the host or climb out of RD's base path (absolute
//! URLs, backslashes, encoded slashes or dots, `..`, empty segments, control
//! characters), and RD's OAuth endpoints are refused outright, in any spelling
//! (`%61uth` is `auth`): a caller has no business with tokens. Characters RD's
//! own routes use pass: `@`, `:`, `+` and `%40` (Marketing's
//! `platform/contacts/email:ana@example.com`). A `@` cannot become a user-info
//! part here: the URI is built from RD's configured scheme and host, and the
//! path always follows a `/`.

use std::fmt;

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

/// Percent-escapes refused in a path (compared in lower case): slash, backslash,
/// dot, percent and control characters.
const REFUSED_ESCAPES: [[u8; 2]; 8] = [
    *b"2f", *b"5c", *b"2e", *b"25", *b"00", *b"0a", *b"0d", *b"09",
];

/// Whether the bytes after a '%' encode a refused character.
fn refused_escape(after_percent: &[u8]) -> bool {
    match after_percent {
        [a, b, ..] => REFUSED_ESCAPES.contains(&[a.to_ascii_lowercase(), b.to_ascii_lowercase()]),
        _ => false,
    }
}

/// A plain relative path: printable ASCII without `\`, `?` or `#`, no refused
/// escape, no empty, `.` or `..` segment, and no `:` in the first segment
/// (`http:` and the like could read as a scheme). One pass over the bytes: this
/// runs on every proxied request.
fn is_plain(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.is_empty() || bytes.len() > 2_048 {
        return false;
    }
    let characters_ok = bytes.iter().enumerate().all(|(i, &b)| {
        b.is_ascii_graphic()
            && !matches!(b, b'\\' | b'?' | b'#')
            && (b != b'%' || !refused_escape(&bytes[i + 1..]))
    });
    characters_ok
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
        && !path.split('/').next().is_some_and(|s| s.contains(':'))
}

/// Whether `segment`, its percent-escapes decoded, is `word` (ASCII, any case):
/// RD decodes `%61uth` to `auth`, so the refusal must too.
fn decodes_to_ignoring_case(segment: &str, word: &str) -> bool {
    let mut bytes = segment.bytes();
    let mut expected = word.bytes();
    loop {
        let decoded = match bytes.next() {
            None => return expected.next().is_none(),
            Some(b'%') => {
                let high = bytes.next().and_then(|b| char::from(b).to_digit(16));
                let low = bytes.next().and_then(|b| char::from(b).to_digit(16));
                match (high, low) {
                    // Both digits are below 16, so the byte fits.
                    (Some(high), Some(low)) => u8::try_from(high * 16 + low).unwrap_or(0),
                    _ => return false,
                }
            }
            Some(b) => b,
        };
        if expected
            .next()
            .is_none_or(|e| !e.eq_ignore_ascii_case(&decoded))
        {
            return false;
        }
    }
}

impl RdPath {
    /// Checks `path` (without a leading slash, percent-encoded) and `query`.
    ///
    /// # Errors
    /// [`PathRefused`] for anything but a plain path off RD's OAuth endpoints.
    pub fn parse(path: &str, query: Option<&str>) -> Result<Self, PathRefused> {
        if !is_plain(path) {
            return Err(PathRefused::Unsafe);
        }
        // Anywhere in the path, not only first: hosts in front of the service may
        // resolve `x/../auth/token` before it gets here.
        if path.split('/').any(|segment| {
            OAUTH_SEGMENTS
                .iter()
                .any(|oauth| decodes_to_ignoring_case(segment, oauth))
        }) {
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

    /// Whether the path is on the other product's API than `product`'s: RD
    /// serves Marketing under `platform/` and CRM v2 under `crm/`, and one
    /// product's token is refused (a 401) by the other's API every time.
    pub fn belongs_to_other_product_than(&self, product: crate::domain::Product) -> bool {
        let first = self.path.split('/').next().unwrap_or_default();
        let other = match product {
            crate::domain::Product::Marketing => "crm",
            crate::domain::Product::Crm => "platform",
        };
        first.eq_ignore_ascii_case(other)
    }

    /// What a log line may show of this path (see [`PathTemplate`]).
    pub fn template(&self) -> PathTemplate<'_> {
        PathTemplate(&self.path)
    }

    /// The path and query to request under RD's API base path `base_path` (the
    /// path part of RD's configured base, e.g. `""` or `"/api"`, without a
    /// trailing slash): `{base_path}/{path}?{query}`. Nothing in a checked path
    /// can climb out of `base_path` or name another host.
    pub fn path_and_query_under(&self, base_path: &str) -> String {
        let query_len = self.query.as_ref().map_or(0, |q| q.len() + 1);
        let mut out = String::with_capacity(base_path.len() + 1 + self.path.len() + query_len);
        out.push_str(base_path);
        out.push('/');
        out.push_str(&self.path);
        if let Some(query) = &self.query {
            out.push('?');
            out.push_str(query);
        }
        out
    }
}

/// A path with the segments that may carry ids or personal data (numbers, values
/// with digits, `@`, `:`, `%`, long values; `v2` stays) shown as `{}`: what a log
/// line may show. Formats lazily, so a log line nobody records costs nothing.
#[derive(Clone, Copy, Debug)]
pub struct PathTemplate<'a>(&'a str);

impl<'a> PathTemplate<'a> {
    /// The template of a path [`RdPath::parse`] accepted, as the caller sent it.
    pub fn of_checked(path: &'a str) -> Self {
        Self(path)
    }
}

impl fmt::Display for PathTemplate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.split('/').enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            let digits = segment.bytes().filter(u8::is_ascii_digit).count();
            let id_like = segment.len() > 24
                || segment.bytes().any(|b| matches!(b, b'@' | b':' | b'%'))
                || digits == segment.len()
                || (digits > 0 && segment.len() >= 5);
            f.write_str(if id_like { "{}" } else { segment })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_queries_pass_and_stay_on_the_base() {
        for routed in [
            "platform/contacts/email:ana%2Bx%40example.com",
            "platform/contacts/email:ana+x@example.com",
            "platform/contacts/uuid:6512f0a1",
        ] {
            let p = RdPath::parse(routed, None).expect(routed);
            assert_eq!(p.path_and_query_under(""), format!("/{routed}"));
        }
        let p = RdPath::parse("crm/v2/contacts", Some("page[number]=2&q=ana")).expect("plain");
        assert_eq!(
            p.path_and_query_under(""),
            "/crm/v2/contacts?page[number]=2&q=ana"
        );
        let p = RdPath::parse("platform/contacts", None).expect("plain");
        assert_eq!(p.path_and_query_under("/api"), "/api/platform/contacts");
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
            "platform\\contacts",
            "platform/contacts\r\nHost: evil",
            "platform/%0d%0ahost",
            "platform/con tacts",
            "platform/ca\u{e7}a",
            "platform/%252e%252e",
            "platform/%2F",
            "platform/%5C",
            "platform/%0A",
            ".",
            "platform/.",
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
            "%61uth/token",
            "%41%55%54%48/token",
            "platform/o%61uth2/token",
        ] {
            assert_eq!(
                RdPath::parse(raw, None),
                Err(PathRefused::OAuthEndpoint),
                "{raw}"
            );
        }
        assert!(RdPath::parse("authors/list", None).is_ok());
        assert!(RdPath::parse("%61uthors/list", None).is_ok());
        assert!(RdPath::parse("au%74", None).is_ok(), "'aut' is not 'auth'");
    }

    #[test]
    fn templates_hide_ids_and_personal_data() {
        let p = RdPath::parse("platform/contacts/email:ana", None).expect("plain");
        assert_eq!(p.template().to_string(), "platform/contacts/{}");
        let p = RdPath::parse("crm/v2/deals/6512f0a1/notes", None).expect("plain");
        assert_eq!(p.template().to_string(), "crm/v2/deals/{}/notes");
    }
}
