//! The operator's brand on the pages a person sees: the product name, a support
//! contact, a logo and an accent colour, all from configuration and checked
//! once at cold start.

use url::Url;

/// The accent colour when none is configured.
pub const DEFAULT_ACCENT: &str = "#1d4ed8";

/// Why a brand setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrandError {
    /// The name is empty, too long or holds control characters.
    #[error("a name of 1 to 60 printable characters")]
    Name,
    /// The support contact is neither an e-mail address nor an https URL.
    #[error("an e-mail address or an https:// URL")]
    Support,
    /// The logo is not an https URL.
    #[error("an https:// URL of an image")]
    Logo,
    /// The colour is not `#rrggbb`.
    #[error("a colour written #rrggbb")]
    Accent,
}

/// How a person reaches the operator's support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SupportContact {
    /// An e-mail address (linked with `mailto:`).
    Email(String),
    /// A support page.
    Page(Url),
}

impl SupportContact {
    /// An e-mail address (one `@`, no spaces or markup) or an https URL.
    ///
    /// # Errors
    /// [`BrandError::Support`] otherwise.
    pub fn parse(value: &str) -> Result<Self, BrandError> {
        let value = value.trim();
        if value.starts_with("https://") {
            return Url::parse(value)
                .map(Self::Page)
                .map_err(|_| BrandError::Support);
        }
        let plain = value.len() <= 254
            && value
                .chars()
                .all(|c| c.is_ascii_graphic() && !"<>\"'()[]\\,;:".contains(c));
        match value.split_once('@') {
            Some((local, domain))
                if plain && !local.is_empty() && domain.contains('.') && !domain.contains('@') =>
            {
                Ok(Self::Email(value.to_owned()))
            }
            _ => Err(BrandError::Support),
        }
    }

    /// The link's target.
    pub fn href(&self) -> String {
        match self {
            Self::Email(address) => format!("mailto:{address}"),
            Self::Page(url) => url.to_string(),
        }
    }

    /// The link's text.
    pub fn label(&self) -> &str {
        match self {
            Self::Email(address) => address,
            Self::Page(url) => url.host_str().unwrap_or(url.as_str()),
        }
    }
}

/// The operator's brand. The default is no brand: the pages then speak of
/// RD Station alone, in the default accent colour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Brand {
    /// The operator's product name, shown at the top of every page.
    pub name: Option<String>,
    /// Where a person asks for help.
    pub support: Option<SupportContact>,
    /// The operator's logo; the pages' policy allows images from its origin only.
    pub logo: Option<Url>,
    /// The accent colour, `#rrggbb`.
    pub accent: String,
}

impl Default for Brand {
    fn default() -> Self {
        Self {
            name: None,
            support: None,
            logo: None,
            accent: DEFAULT_ACCENT.to_owned(),
        }
    }
}

impl Brand {
    /// Checks a product name.
    ///
    /// # Errors
    /// [`BrandError::Name`] for an empty, over-long or control-character name.
    pub fn name(value: &str) -> Result<String, BrandError> {
        let value = value.trim();
        let fits = (1..=60).contains(&value.chars().count());
        (fits && !value.chars().any(char::is_control))
            .then(|| value.to_owned())
            .ok_or(BrandError::Name)
    }

    /// Checks a logo URL: https only, so the page never loads a mixed image.
    ///
    /// # Errors
    /// [`BrandError::Logo`] otherwise.
    pub fn logo(value: &str) -> Result<Url, BrandError> {
        Url::parse(value.trim())
            .ok()
            .filter(|url| url.scheme() == "https" && url.host_str().is_some())
            .ok_or(BrandError::Logo)
    }

    /// Checks an accent colour, `#rrggbb` (kept lower-case).
    ///
    /// # Errors
    /// [`BrandError::Accent`] otherwise.
    pub fn accent(value: &str) -> Result<String, BrandError> {
        let value = value.trim();
        let hex = value.strip_prefix('#').ok_or(BrandError::Accent)?;
        (hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| value.to_ascii_lowercase())
            .ok_or(BrandError::Accent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_is_an_address_or_an_https_page() {
        assert_eq!(
            SupportContact::parse("suporte@acme.com.br"),
            Ok(SupportContact::Email("suporte@acme.com.br".to_owned()))
        );
        let page = SupportContact::parse("https://acme.com.br/ajuda").expect("page");
        assert_eq!(page.label(), "acme.com.br");
        for bad in [
            "",
            "acme",
            "@acme.com",
            "a@b",
            "a@b@c.com",
            "x<script>@a.com",
            "http://acme.com",
            "a b@c.com",
        ] {
            assert_eq!(
                SupportContact::parse(bad),
                Err(BrandError::Support),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_logos_and_colours_are_checked() {
        assert_eq!(Brand::name(" Acme Vendas "), Ok("Acme Vendas".to_owned()));
        assert_eq!(Brand::name(""), Err(BrandError::Name));
        assert_eq!(Brand::name(&"a".repeat(61)), Err(BrandError::Name));
        assert_eq!(Brand::name("a\nb"), Err(BrandError::Name));
        assert!(Brand::logo("https://cdn.acme.com/logo.png").is_ok());
        assert_eq!(
            Brand::logo("http://cdn.acme.com/logo.png"),
            Err(BrandError::Logo)
        );
        assert_eq!(
            Brand::logo("data:image/png;base64,AA"),
            Err(BrandError::Logo)
        );
        assert_eq!(Brand::accent("#0A7B3E"), Ok("#0a7b3e".to_owned()));
        for bad in ["0a7b3e", "#0a7b3", "#0a7b3g", "red", "#0a7b3e;x"] {
            assert_eq!(Brand::accent(bad), Err(BrandError::Accent), "{bad}");
        }
    }
}
