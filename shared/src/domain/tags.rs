//! Tags: a few `key=value` labels a caller puts on a connection (at session
//! creation or later) to find it again ("the connection of customer 42")
//! without keeping a mapping of its own. Returned, filterable in lists, and
//! carried on events.

use std::collections::BTreeMap;

use serde::Serialize;

/// The most tags one connection carries.
pub const MAX_TAGS: usize = 10;
/// The longest tag key.
pub const MAX_TAG_KEY: usize = 64;
/// The longest tag value, in characters.
pub const MAX_TAG_VALUE: usize = 256;

/// A connection's tags, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Tags(BTreeMap<String, String>);

/// Why tags were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TagsError {
    /// More than [`MAX_TAGS`].
    #[error("a connection carries at most {MAX_TAGS} tags")]
    TooMany,
    /// A key outside `[A-Za-z0-9_.:-]{1,64}`.
    #[error("tag key {0:?} is not 1 to 64 letters, digits, '_', '.', ':' or '-'")]
    InvalidKey(String),
    /// A value too long or with a control character.
    #[error("the value of tag {0:?} is over 256 characters or holds a control character")]
    InvalidValue(String),
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_TAG_KEY
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn valid_value(value: &str) -> bool {
    value.chars().count() <= MAX_TAG_VALUE && !value.chars().any(char::is_control)
}

impl Tags {
    /// Validates `tags`.
    ///
    /// # Errors
    /// [`TagsError`] naming the first key or value refused.
    pub fn parse(tags: BTreeMap<String, String>) -> Result<Self, TagsError> {
        if tags.len() > MAX_TAGS {
            return Err(TagsError::TooMany);
        }
        for (key, value) in &tags {
            if !valid_key(key) {
                return Err(TagsError::InvalidKey(key.clone()));
            }
            if !valid_value(value) {
                return Err(TagsError::InvalidValue(key.clone()));
            }
        }
        Ok(Self(tags))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each tag, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether the tag `key` has `value`.
    pub fn has(&self, key: &str, value: &str) -> bool {
        self.0.get(key).is_some_and(|v| v == value)
    }
}

/// A list filter on one tag: `key=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFilter {
    /// The key.
    pub key: String,
    /// The value it must have.
    pub value: String,
}

impl TagFilter {
    /// `key=value`, with a valid key and value.
    ///
    /// # Errors
    /// [`TagsError`] for a missing `=`, or a key or value refused.
    pub fn parse(text: &str) -> Result<Self, TagsError> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| TagsError::InvalidKey(text.to_owned()))?;
        if !valid_key(key) {
            return Err(TagsError::InvalidKey(key.to_owned()));
        }
        if !valid_value(value) {
            return Err(TagsError::InvalidValue(key.to_owned()));
        }
        Ok(Self {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_few_plain_tags_pass_and_the_rest_is_named() {
        let tags = Tags::parse(map(&[("customer", "42"), ("plan", "Pro anual")])).expect("valid");
        assert!(tags.has("customer", "42") && !tags.has("customer", "4"));
        assert_eq!(
            Tags::parse(map(&[("a b", "x")])),
            Err(TagsError::InvalidKey("a b".to_owned()))
        );
        assert_eq!(
            Tags::parse(map(&[("", "x")])),
            Err(TagsError::InvalidKey(String::new()))
        );
        assert_eq!(
            Tags::parse(map(&[("k", "line\nbreak")])),
            Err(TagsError::InvalidValue("k".to_owned()))
        );
        let long = "é".repeat(MAX_TAG_VALUE + 1);
        assert_eq!(
            Tags::parse(map(&[("k", long.as_str())])),
            Err(TagsError::InvalidValue("k".to_owned()))
        );
        let many: BTreeMap<String, String> = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(Tags::parse(many), Err(TagsError::TooMany));
    }

    #[test]
    fn a_filter_is_key_equals_value() {
        assert_eq!(
            TagFilter::parse("customer=42=b"),
            Ok(TagFilter {
                key: "customer".to_owned(),
                value: "42=b".to_owned()
            })
        );
        assert!(TagFilter::parse("customer").is_err());
        assert!(TagFilter::parse("=42").is_err());
    }
}
