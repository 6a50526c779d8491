//! The small HTML pages a person sees in a connect flow, in Brazilian Portuguese
//! or English (see [`Language`]) with the operator's [`Brand`]. Only values from
//! a fixed vocabulary, validated ids and the checked brand are placed in them,
//! always escaped. Every page carries a strict Content-Security-Policy: its one
//! stylesheet is allowed by hash, images only from the logo's origin, nothing
//! else loads, nothing frames it.

mod brand;
mod language;
mod notice;

pub use brand::{Brand, BrandError, SupportContact};
pub use language::Language;
pub use notice::Notice;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// Whether the client asked for a page (a browser) rather than JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The policy of an HTML answer that set none of its own: nothing loads,
/// nothing frames it, nothing is submitted, no style applies.
const FALLBACK_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The pages, rendered with one brand. Built once per environment.
#[derive(Clone, Debug)]
pub struct Pages {
    brand: Brand,
    style: String,
    style_hash: String,
    image_source: String,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new(Brand::default())
    }
}

impl Pages {
    /// The pages with `brand`.
    pub fn new(brand: Brand) -> Self {
        let style = stylesheet(&brand.accent);
        let style_hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&style));
        let image_source = brand.logo.as_ref().map_or_else(
            || "'none'".to_owned(),
            |url| url.origin().ascii_serialization(),
        );
        Self {
            brand,
            style,
            style_hash,
            image_source,
        }
    }

    /// The brand the pages carry.
    pub fn brand(&self) -> &Brand {
        &self.brand
    }

    /// `notice` as a page in the language the request asks for.
    pub fn notice(&self, headers: &HeaderMap, status: StatusCode, notice: &Notice) -> Response {
        let language = Language::of(headers);
        let wording = notice.wording(language);
        let body = format!(
            "<p>{}</p><p class=\"next\">{}</p>",
            escape(&wording.message),
            escape(&wording.next_step)
        );
        self.document(language, status, &wording.title, &body, &[])
    }

    /// The error as a page for browsers (saying `notice`), or as JSON for
    /// everything else.
    pub fn error(&self, headers: &HeaderMap, error: ApiError, notice: &Notice) -> Response {
        if wants_html(headers) {
            self.notice(headers, error.status, notice)
        } else {
            error.into_response()
        }
    }

    /// A whole page: the brand's header, `title` as its heading, `body` (markup
    /// the caller built from escaped text) and the support contact. Forms may be
    /// sent to this origin and to `form_targets` (origins a form's answer may
    /// redirect to: the policy applies to the redirects too); with none, forms
    /// are refused.
    pub fn document(
        &self,
        language: Language,
        status: StatusCode,
        title: &str,
        body: &str,
        form_targets: &[String],
    ) -> Response {
        let heading = match (&self.brand.name, language) {
            (Some(name), _) => escape(name),
            (None, Language::Portuguese) => "Conexão com o RD Station".to_owned(),
            (None, Language::English) => "RD Station connection".to_owned(),
        };
        let logo = self.brand.logo.as_ref().map_or_else(String::new, |url| {
            format!("<img src=\"{}\" alt=\"\">", escape(url.as_str()))
        });
        let support = self
            .brand
            .support
            .as_ref()
            .map_or_else(String::new, |contact| {
                let ask = match language {
                    Language::Portuguese => "Precisa de ajuda? Fale com",
                    Language::English => "Need help? Contact",
                };
                format!(
                    "<footer><p>{ask} <a href=\"{}\">{}</a>.</p></footer>",
                    escape(&contact.href()),
                    escape(contact.label())
                )
            });
        let window_title = match &self.brand.name {
            Some(name) => format!("{} · {}", escape(title), escape(name)),
            None => escape(title),
        };
        let html = format!(
            "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>{window_title}</title><style>{style}</style></head>\
             <body><header>{logo}<span>{heading}</span></header>\
             <main><h1>{title}</h1>{body}</main>{support}</body></html>\n",
            lang = language.tag(),
            style = self.style,
            title = escape(title),
        );
        let form_action = if form_targets.is_empty() {
            "'none'".to_owned()
        } else {
            std::iter::once("'self'")
                .chain(form_targets.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let policy = format!(
            "default-src 'none'; style-src 'sha256-{hash}'; img-src {images}; \
             frame-ancestors 'none'; base-uri 'none'; form-action {form_action}",
            hash = self.style_hash,
            images = self.image_source,
        );
        let mut response = (status, Html(html)).into_response();
        if let Ok(policy) = HeaderValue::from_str(&policy) {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, policy);
        }
        response
    }
}

/// The pages' one stylesheet, in the brand's accent colour (checked `#rrggbb`).
fn stylesheet(accent: &str) -> String {
    format!(
        "body{{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;\
         color:#1f2937;background:#f3f4f6;line-height:1.5}}\
         header{{background:{accent};color:#fff;padding:.8em 1.5em;display:flex;\
         align-items:center;gap:.8em;font-weight:600}}\
         header img{{max-height:2em;max-width:10em}}\
         main{{max-width:34em;margin:2.5em auto 1em;background:#fff;padding:1.5em 2em;\
         border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12)}}\
         h1{{font-size:1.4em;margin-top:0}}\
         .next{{font-weight:600}}\
         footer{{max-width:34em;margin:0 auto;padding:0 2em;color:#4b5563}}footer p{{font-size:.9em}}\
         a{{color:{accent}}}\
         form{{display:flex;flex-wrap:wrap;gap:.8em;align-items:flex-end}}\
         label{{display:flex;flex-direction:column;font-size:.9em}}\
         input,select{{font:inherit;padding:.35em}}\
         button{{font:inherit;background:{accent};color:#fff;border:0;border-radius:6px;\
         padding:.45em 1.2em;cursor:pointer}}"
    )
}

/// Every answer: `nosniff`; an HTML answer that set no policy of its own gets the
/// strictest one.
pub async fn protective_headers(mut response: Response) -> Response {
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if is_html && !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(FALLBACK_POLICY),
        );
    }
    response
}

/// A `302 Found` to `location`: what browsers and OAuth providers expect in these
/// flows (axum's `Redirect::to` answers 303).
pub fn found(location: &str) -> Response {
    let mut response = Redirect::to(location).into_response();
    *response.status_mut() = StatusCode::FOUND;
    response
}

/// Marks a response as never to be cached, and its URL (which may hold a code or a
/// state) as never to be sent on as a Referer.
pub fn private(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `text` safe to place in HTML text and quoted attributes.
pub fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    fn policy_of(response: &Response) -> String {
        response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii")
            .to_owned()
    }

    #[test]
    fn the_policy_allows_the_style_it_carries_and_the_logo_origin_only() {
        let brand = Brand {
            name: Some("Acme <Vendas>".to_owned()),
            support: None,
            logo: Some(Brand::logo("https://cdn.acme.com/a/logo.png").expect("logo")),
            accent: "#0a7b3e".to_owned(),
        };
        let pages = Pages::new(brand);
        let page = pages.document(Language::English, StatusCode::OK, "T", "", &[]);
        let policy = policy_of(&page);
        let hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(stylesheet("#0a7b3e")));
        assert!(
            policy.contains(&format!("style-src 'sha256-{hash}'")),
            "{policy}"
        );
        assert!(policy.contains("img-src https://cdn.acme.com;"), "{policy}");
        assert!(policy.contains("form-action 'none'"), "{policy}");
        let with_form = pages.document(
            Language::English,
            StatusCode::OK,
            "T",
            "",
            &["http://127.0.0.1:9".to_owned()],
        );
        assert!(policy_of(&with_form).ends_with("form-action 'self' http://127.0.0.1:9"));
        assert!(!Pages::default().image_source.contains("http"));
    }
}
