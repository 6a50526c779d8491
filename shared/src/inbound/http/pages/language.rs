//! The language of a page: Brazilian Portuguese or English, as the browser's
//! `Accept-Language` asks. The people who click our links work for Brazilian
//! companies, so Portuguese is the answer when neither is asked for.

use axum::http::{HeaderMap, header};

/// A language the pages are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    /// Brazilian Portuguese (`pt-BR`).
    Portuguese,
    /// English.
    English,
}

impl Language {
    /// The language the request's `Accept-Language` prefers among ours (by
    /// weight, then order); Portuguese when it names neither (or is absent).
    pub fn of(headers: &HeaderMap) -> Self {
        let Some(accept) = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
        else {
            return Self::Portuguese;
        };
        accept_language::parse_with_quality(accept)
            .into_iter()
            .filter(|(_, quality)| *quality > 0.0)
            .find_map(|(tag, _)| {
                let primary = tag.split('-').next().unwrap_or_default();
                if primary.eq_ignore_ascii_case("pt") {
                    Some(Self::Portuguese)
                } else if primary.eq_ignore_ascii_case("en") {
                    Some(Self::English)
                } else {
                    None
                }
            })
            .unwrap_or(Self::Portuguese)
    }

    /// The page's `lang` attribute.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Portuguese => "pt-BR",
            Self::English => "en",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn of(accept: &str) -> Language {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_str(accept).expect("ascii"),
        );
        Language::of(&headers)
    }

    #[test]
    fn the_preferred_of_our_two_languages_wins() {
        assert_eq!(of("en-US,en;q=0.9"), Language::English);
        assert_eq!(of("pt-BR,pt;q=0.9,en;q=0.8"), Language::Portuguese);
        assert_eq!(of("de-DE,en;q=0.5,pt;q=0.4"), Language::English);
        assert_eq!(of("pt;q=0.3,en;q=0.7"), Language::English);
        assert_eq!(of("EN-gb"), Language::English);
    }

    #[test]
    fn portuguese_when_neither_is_asked_for() {
        assert_eq!(Language::of(&HeaderMap::new()), Language::Portuguese);
        assert_eq!(of("de-DE,fr;q=0.5"), Language::Portuguese);
        assert_eq!(of("en;q=0,de"), Language::Portuguese);
        assert_eq!(of(";;;,,=q"), Language::Portuguese);
    }
}
