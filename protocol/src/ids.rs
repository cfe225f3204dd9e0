//! Identifiers of the protocol, as newtypes that can only hold values the contract allows.
//!
//! Once a string has become a [`NodeId`] (or any other type here) no code needs to check it
//! again: the constructors and `Deserialize` impls are the only ways in.

use std::borrow::Borrow;
use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol_str::SmolStr;

/// Why a string is not a valid identifier of some kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: must be {rule}")]
pub struct IdError {
    /// The kind of identifier, e.g. `node id`.
    pub what: &'static str,
    /// The rejected value, shortened when very long.
    pub value: String,
    /// The rule it broke, in words.
    pub rule: &'static str,
}

/// `A-Z a-z 0-9 _ -`
fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// `A-Z a-z 0-9 _ . -`
fn is_name_char(c: u8) -> bool {
    is_id_char(c) || c == b'.'
}

/// `a-z 0-9 _`
fn is_metric_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'
}

fn shorten(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_owned();
    }
    let mut end = 77;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Reads an identifier from a string without first copying it into a `String`: a JSON
/// string without escapes is checked in place, and an id of up to 23 bytes never allocates.
struct IdVisitor<T>(&'static str, fn(&str) -> Result<T, IdError>);

impl<T> Visitor<'_> for IdVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} string", self.0)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.1)(s).map_err(E::custom)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:literal, $max:literal, $pred:path, $rule:literal) => {
        id_type!($(#[$doc])* $name, $what, $min, $max, $pred, $rule, reserved: []);
    };
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:literal, $max:literal, $pred:path, $rule:literal, reserved: [$($reserved:literal),*]) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(SmolStr);

        impl $name {
            /// What this identifier must look like, in words.
            pub const RULE: &'static str = $rule;

            /// Checks `s` against the rule and wraps it.
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                if (($min)..=($max)).contains(&s.len()) && s.bytes().all($pred) $(&& s != $reserved)* {
                    Ok(Self(SmolStr::new(s)))
                } else {
                    Err(IdError { what: $what, value: shorten(s), rule: $rule })
                }
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Unwraps the inner string.
            pub fn into_string(self) -> String {
                self.0.as_str().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.into_string()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(IdVisitor($what, |s| Self::new(s)))
            }
        }
    };
}

id_type!(
    /// A region (city, county): 1 to 64 characters of `A-Z a-z 0-9 _ -`. A lone `_` is
    /// reserved (it stands for "no site / no node" in alert topics), for sites and nodes too.
    RegionId, "region id", 1, 64, is_id_char, "1 to 64 characters of A-Z a-z 0-9 _ -, not `_` alone",
    reserved: ["_"]
);
id_type!(
    /// A site within a region: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    SiteId, "site id", 1, 64, is_id_char, "1 to 64 characters of A-Z a-z 0-9 _ -, not `_` alone",
    reserved: ["_"]
);
id_type!(
    /// A node, unique in the whole network; also the agent's MQTT client id.
    NodeId, "node id", 1, 64, is_id_char, "1 to 64 characters of A-Z a-z 0-9 _ -, not `_` alone",
    reserved: ["_"]
);
id_type!(
    /// The identity of one run of an agent process: 8 to 64 characters of `A-Z a-z 0-9 _ -`.
    BootId, "boot", 8, 64, is_id_char, "8 to 64 characters of A-Z a-z 0-9 _ -"
);
id_type!(
    /// A command id, also used as a drill id: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    CmdId, "command id", 1, 64, is_id_char, "1 to 64 characters of A-Z a-z 0-9 _ -"
);
id_type!(
    /// Which collector key signed a command (`kid`): 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    KeyId, "key id", 1, 64, is_id_char, "1 to 64 characters of A-Z a-z 0-9 _ -"
);
id_type!(
    /// A collector's id (its MQTT client id): 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    CollectorId, "collector id", 1, 64, is_id_char, "1 to 64 characters of A-Z a-z 0-9 _ -"
);
id_type!(
    /// A check, fault code, test kind, node kind or rule: 1 to 64 of `A-Z a-z 0-9 _ . -`.
    Name, "name", 1, 64, is_name_char, "1 to 64 characters of A-Z a-z 0-9 _ . -"
);
id_type!(
    /// A metric or tag key: 1 to 64 characters of `a-z 0-9 _`.
    MetricName, "metric name", 1, 64, is_metric_char, "1 to 64 characters of a-z 0-9 _"
);

impl BootId {
    /// A fresh boot id of 16 hex digits from the given random bits.
    pub fn from_random(bits: u64) -> Self {
        Self(SmolStr::new(format!("{bits:016x}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_allowed_alphabet() {
        assert!(NodeId::new("lz-cg-s001").is_ok());
        assert!(NodeId::new("A_b-9").is_ok());
        assert!(NodeId::new("x".repeat(64)).is_ok());
        assert!(Name::new("amplifier.2").is_ok());
        assert!(MetricName::new("battery_v").is_ok());
        assert_eq!(BootId::from_random(0xab).as_str(), "00000000000000ab");
    }

    #[test]
    fn ids_reject_everything_else() {
        for bad in [
            "",
            "_",
            "a/b",
            "a+b",
            "a#",
            "$sys",
            "a b",
            "a.b",
            "节点",
            &"x".repeat(65),
        ] {
            let err = NodeId::new(bad).expect_err(bad);
            assert_eq!(err.what, "node id");
        }
        assert!(BootId::new("short").is_err());
        assert!(MetricName::new("CPU").is_err());
        assert!(MetricName::new("cpu-pct").is_err());
        assert!(Name::new("a/b").is_err());
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let err = NodeId::new("y".repeat(10_000)).expect_err("too long");
        assert!(err.value.len() <= 80, "{}", err.value.len());
    }
}
