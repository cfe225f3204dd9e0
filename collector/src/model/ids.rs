//! The ids the collector gives alerts and silences: 64-bit values written as 16 lowercase
//! hex digits on every wire and in the store. A string becomes an id once, here; past that
//! no code parses or compares id strings.

use std::fmt;
use std::str::FromStr;

use alarmnet_protocol::IdError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every id here looks like, in words.
const HEX16: &str = "16 lowercase hex digits";

/// The value of `s` when it is exactly 16 lowercase hex digits (the only form written, so
/// that parsing and printing are each other's inverse and the store's text stays the key).
fn parse_hex16(what: &'static str, s: &str) -> Result<u64, IdError> {
    let canonical = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    canonical
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
        .ok_or_else(|| IdError {
            what,
            value: s.chars().take(80).collect(),
            rule: HEX16,
        })
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// The id of value `v`.
            pub const fn new(v: u64) -> Self {
                Self(v)
            }

            /// The id's value.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "\"{self}\"")
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_hex16($what, s).map(Self)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// An alert's id: the fingerprint of its rule and subject (`alerts::fingerprint`), so a
    /// new firing of the same alert keeps its id.
    AlertId,
    "alert id"
);

hex_id!(
    /// A silence's id, drawn at random when the silence is created.
    SilenceId,
    "silence id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_as_16_lowercase_hex_digits() {
        let id = AlertId::new(0xab);
        assert_eq!(id.to_string(), "00000000000000ab");
        assert_eq!("00000000000000ab".parse::<AlertId>(), Ok(id));
        assert_eq!(
            serde_json::to_string(&id).expect("json"),
            "\"00000000000000ab\""
        );
        assert_eq!(
            serde_json::from_str::<AlertId>("\"00000000000000ab\"").expect("json"),
            id
        );
        let s: SilenceId = "ffffffffffffffff".parse().expect("id");
        assert_eq!(s.get(), u64::MAX);
        assert_eq!(s.to_string(), "ffffffffffffffff");
    }

    #[test]
    fn other_spellings_are_not_ids() {
        for bad in [
            "",
            "ab",
            "nope",
            "00000000000000AB",
            "+0000000000000ab",
            "000000000000000ab",
            "0000000000000 ab",
        ] {
            let e = bad.parse::<AlertId>().expect_err(bad);
            assert_eq!((e.what, e.rule), ("alert id", HEX16), "{bad}");
            assert!(bad.parse::<SilenceId>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<AlertId>("\"nope\"").is_err());
    }
}
