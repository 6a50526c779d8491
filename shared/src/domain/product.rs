use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The RD Station product a connection belongs to. Each has its own OAuth app,
/// endpoints and refresh-token rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Product {
    /// RD Station Marketing: stable refresh tokens, 24 h access tokens.
    Marketing,
    /// RD Station CRM v2: refresh tokens roll on every use and die after 14 idle days.
    Crm,
}

impl Product {
    /// Both products, in a fixed order.
    pub const ALL: [Product; 2] = [Product::Marketing, Product::Crm];

    /// The lower-case name used in the API, the store and the credentials secret.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Marketing => "marketing",
            Product::Crm => "crm",
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A product name that is neither `marketing` nor `crm`.
#[derive(Debug, thiserror::Error)]
#[error("unknown product {0:?}: expected \"marketing\" or \"crm\"")]
pub struct UnknownProduct(pub String);

impl FromStr for Product {
    type Err = UnknownProduct;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "marketing" => Ok(Product::Marketing),
            "crm" => Ok(Product::Crm),
            other => Err(UnknownProduct(other.to_owned())),
        }
    }
}
