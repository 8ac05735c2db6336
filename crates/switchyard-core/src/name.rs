//! Names of kinds, providers and operations, and the routing keys built from them.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The pattern every kind, provider and operation name must match.
pub const NAME_PATTERN: &str = "^[a-z][a-z0-9_]{0,62}$";

/// A kind, provider or operation name: `[a-z][a-z0-9_]{0,62}`.
///
/// Constructed only through validation, so a `Name` is always safe to use as a routing-key
/// segment, a queue-name segment and a metric label.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid name: expected 1 to 63 characters of [a-z0-9_], starting with a letter"
)]
pub struct InvalidName(pub String);

impl Name {
    /// Validates `s` as a name.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
        let s = s.into();
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if valid {
            Ok(Self(s))
        } else {
            Err(InvalidName(s))
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0
    }
}

impl FromStr for Name {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl JsonSchema for Name {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "A kind, provider or operation name."
        })
    }
}

/// `{kind}.{provider}.{operation}`: where a command is routed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutingKey {
    /// Integration kind, e.g. `payment`.
    pub kind: Name,
    /// Provider, e.g. `stripe`.
    pub provider: Name,
    /// Operation, e.g. `charge`.
    pub operation: Name,
}

/// Why a routing key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoutingKey {
    /// Not three dot-separated segments.
    #[error("routing key {0:?} is not of the form kind.provider.operation")]
    Shape(String),
    /// A segment is not a valid name.
    #[error(transparent)]
    Segment(#[from] InvalidName),
}

impl FromStr for RoutingKey {
    type Err = InvalidRoutingKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(p), Some(o), None) => Ok(Self {
                kind: k.parse()?,
                provider: p.parse()?,
                operation: o.parse()?,
            }),
            _ => Err(InvalidRoutingKey::Shape(s.to_owned())),
        }
    }
}

impl fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.kind, self.provider, self.operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract_pattern() {
        for ok in ["a", "payment", "send_sms", "v2", &"a".repeat(63)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "1abc",
            "_x",
            "pay-ment",
            "pay.ment",
            "é",
            &"a".repeat(64),
        ] {
            assert!(Name::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routing_keys_round_trip() {
        let rk: RoutingKey = "payment.stripe.charge".parse().unwrap();
        assert_eq!(rk.to_string(), "payment.stripe.charge");
        assert!("payment.stripe".parse::<RoutingKey>().is_err());
        assert!("payment.stripe.charge.x".parse::<RoutingKey>().is_err());
        assert!("payment.Stripe.charge".parse::<RoutingKey>().is_err());
    }
}
