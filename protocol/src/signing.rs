//! Signed commands: the Ed25519 signature a collector puts on every `cmd`, and its check.
//!
//! A command can sound a siren, so an agent trusts the collector's key, not the broker. The
//! signature covers the bytes
//! `alarmnet-cmd-v1\n{topic}\n{payload without sig}`, where the payload is the compact JSON
//! object with its members in the order `v cmd id test ts exp kid` (`test` only when `cmd` is
//! `test`). Ids and names can hold no character JSON escapes, so that text is unique.
//!
//! This module only signs and checks signatures. Whether a verified command may run now
//! (expiry, clock skew, retained, replayed id) is the agent's admission decision.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{CmdId, IdError, KeyId};
use crate::payload::{CmdAction, Command, RawCommand, Seal};

/// The domain separation prefix of every signed command.
pub const CONTEXT: &str = "alarmnet-cmd-v1";

/// The bytes a command's signature covers: the context, the topic, and the payload without
/// its `sig` member, each on its own line.
pub fn signed_bytes(topic: &str, command: &Command) -> Vec<u8> {
    let mut raw = RawCommand::from(command.clone());
    raw.sig = None;
    let mut out = Vec::with_capacity(CONTEXT.len() + topic.len() + 160);
    out.extend_from_slice(CONTEXT.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(topic.as_bytes());
    out.push(b'\n');
    // Serializing a struct of ids, names and integers cannot fail.
    out.extend_from_slice(&serde_json::to_vec(&raw).unwrap_or_default());
    out
}

/// An Ed25519 signature (64 bytes), written as base64url without padding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CmdSignature([u8; 64]);

impl CmdSignature {
    pub fn to_bytes(self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for CmdSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CmdSignature({self})")
    }
}

impl fmt::Display for CmdSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl FromStr for CmdSignature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_fixed::<64>(s, "signature").map(Self)
    }
}

impl Serialize for CmdSignature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CmdSignature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A problem with a key, a key file or a signature's encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{what} is not base64url without padding of {len} bytes")]
    Encoding { what: &'static str, len: usize },
    #[error("public key is not a valid Ed25519 point")]
    BadPoint,
    #[error(transparent)]
    KeyId(#[from] IdError),
    #[error("key file: {0}")]
    File(String),
}

fn decode_fixed<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], KeyError> {
    let bad = || KeyError::Encoding { what, len: N };
    let bytes = URL_SAFE_NO_PAD.decode(s.trim()).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// A collector's public key, as agents hold it: base64url of the 32 key bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0.as_bytes()))
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bytes = decode_fixed::<32>(s, "public key")?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| KeyError::BadPoint)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The collector's signing key with its id. `Debug` never shows the secret.
#[derive(Clone)]
pub struct CommandKey {
    kid: KeyId,
    key: SigningKey,
}

impl fmt::Debug for CommandKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandKey")
            .field("kid", &self.kid)
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

const FILE_HEADER: &str =
    "# alarmnet command signing key. Secret: keep it readable by the collector only.";

impl CommandKey {
    /// A key from 32 secret random bytes (the caller draws them from a CSPRNG).
    pub fn from_seed(kid: KeyId, seed: [u8; 32]) -> Self {
        Self {
            kid,
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// A command signed for `topic`, made at `ts`, valid until `exp` (ms).
    pub fn seal(&self, topic: &str, id: CmdId, action: CmdAction, ts: u64, exp: u64) -> Command {
        let mut command = Command {
            id,
            action,
            seal: Some(Seal {
                ts,
                exp,
                kid: self.kid.clone(),
                sig: CmdSignature([0; 64]),
            }),
        };
        let sig = self.key.sign(&signed_bytes(topic, &command)).to_bytes();
        if let Some(seal) = &mut command.seal {
            seal.sig = CmdSignature(sig);
        }
        command
    }

    /// The key file's text: `kid`, the secret seed and (for reference) the public key.
    pub fn to_file_text(&self) -> String {
        format!(
            "{FILE_HEADER}\nkid = {}\nsecret = {}\npublic = {}\n",
            self.kid,
            URL_SAFE_NO_PAD.encode(self.key.to_bytes()),
            self.public_key()
        )
    }

    /// Reads a key file written by [`CommandKey::to_file_text`].
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        let mut kid = None;
        let mut secret = None;
        let mut public = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(KeyError::File(format!(
                    "line {}: expected `name = value`",
                    n + 1
                )));
            };
            let v = v.trim().trim_matches('"');
            match k.trim() {
                "kid" => kid = Some(KeyId::new(v)?),
                "secret" => secret = Some(decode_fixed::<32>(v, "secret")?),
                "public" => public = Some(v.parse::<PublicKey>()?),
                other => {
                    return Err(KeyError::File(format!(
                        "line {}: unknown name `{other}`",
                        n + 1
                    )));
                }
            }
        }
        let kid = kid.ok_or_else(|| KeyError::File("no `kid` line".into()))?;
        let secret = secret.ok_or_else(|| KeyError::File("no `secret` line".into()))?;
        let key = Self::from_seed(kid, secret);
        if public.is_some_and(|p| p != key.public_key()) {
            return Err(KeyError::File(
                "`public` does not belong to `secret` (a damaged or edited file)".into(),
            ));
        }
        Ok(key)
    }
}

/// Why a command's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("unsigned")]
    Unsigned,
    #[error("signed by unknown key {0}")]
    UnknownKey(KeyId),
    #[error("bad signature")]
    BadSignature,
}

impl VerifyError {
    /// A stable reason code (for counters and logs).
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Unsigned => "unsigned",
            VerifyError::UnknownKey(_) => "unknown_key",
            VerifyError::BadSignature => "bad_signature",
        }
    }
}

/// The collector keys an agent trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(KeyId, PublicKey)>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = (KeyId, PublicKey)>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks that `command`, received on `topic`, carries a valid signature by a trusted key.
    pub fn verify(&self, topic: &str, command: &Command) -> Result<(), VerifyError> {
        let seal = command.seal.as_ref().ok_or(VerifyError::Unsigned)?;
        let key = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == seal.kid)
            .map(|(_, key)| key)
            .ok_or_else(|| VerifyError::UnknownKey(seal.kid.clone()))?;
        let sig = ed25519_dalek::Signature::from_bytes(&seal.sig.0);
        key.0
            .verify_strict(&signed_bytes(topic, command), &sig)
            .map_err(|_| VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Name;

    const TOPIC: &str = "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/cmd";

    fn key(kid: &str, seed: u8) -> CommandKey {
        CommandKey::from_seed(KeyId::new(kid).expect("kid"), [seed; 32])
    }

    fn test_cmd(k: &CommandKey) -> Command {
        k.seal(
            TOPIC,
            CmdId::new("d-2026-09-18-lz").expect("id"),
            CmdAction::Test {
                test: Name::new("silent").expect("name"),
            },
            1_789_700_000_000,
            1_789_700_300_000,
        )
    }

    #[test]
    fn signed_bytes_follow_the_documented_order() {
        let k = key("centre-2026", 7);
        let bytes = signed_bytes(TOPIC, &test_cmd(&k));
        assert_eq!(
            String::from_utf8(bytes).expect("utf8"),
            format!(
                "alarmnet-cmd-v1\n{TOPIC}\n{{\"v\":1,\"cmd\":\"test\",\"id\":\"d-2026-09-18-lz\",\"test\":\"silent\",\"ts\":1789700000000,\"exp\":1789700300000,\"kid\":\"centre-2026\"}}"
            )
        );
    }

    #[test]
    fn a_sealed_command_verifies_and_round_trips_through_json() {
        let k = key("centre-2026", 7);
        let cmd = test_cmd(&k);
        let trusted = TrustedKeys::new([(k.kid().clone(), k.public_key())]);
        assert_eq!(trusted.verify(TOPIC, &cmd), Ok(()));
        let json = serde_json::to_string(&cmd).expect("json");
        assert!(json.contains(r#""kid":"centre-2026","sig":""#), "{json}");
        let back: Command = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, cmd);
        assert_eq!(trusted.verify(TOPIC, &back), Ok(()));
    }

    #[test]
    fn every_tampering_is_refused() {
        let k = key("centre-2026", 7);
        let trusted = TrustedKeys::new([(k.kid().clone(), k.public_key())]);
        let cmd = test_cmd(&k);

        // Another node's topic.
        assert_eq!(
            trusted.verify("alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s002/cmd", &cmd),
            Err(VerifyError::BadSignature)
        );
        // Each signed field changed.
        let mut later = cmd.clone();
        later.seal.as_mut().expect("seal").exp += 1;
        assert_eq!(
            trusted.verify(TOPIC, &later),
            Err(VerifyError::BadSignature)
        );
        let mut other_id = cmd.clone();
        other_id.id = CmdId::new("d-other").expect("id");
        assert_eq!(
            trusted.verify(TOPIC, &other_id),
            Err(VerifyError::BadSignature)
        );
        let mut sound = cmd.clone();
        sound.action = CmdAction::Test {
            test: Name::new("sound").expect("name"),
        };
        assert_eq!(
            trusted.verify(TOPIC, &sound),
            Err(VerifyError::BadSignature)
        );
        // Unsigned, unknown key, right kid with the wrong key.
        let mut unsigned = cmd.clone();
        unsigned.seal = None;
        assert_eq!(trusted.verify(TOPIC, &unsigned), Err(VerifyError::Unsigned));
        let stranger = key("rogue", 9);
        assert_eq!(
            trusted.verify(TOPIC, &test_cmd(&stranger)),
            Err(VerifyError::UnknownKey(KeyId::new("rogue").expect("kid")))
        );
        let impostor = key("centre-2026", 9);
        assert_eq!(
            trusted.verify(TOPIC, &test_cmd(&impostor)),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn key_files_round_trip_and_damage_is_reported() {
        let k = key("centre-2026", 42);
        let text = k.to_file_text();
        let back = CommandKey::from_file_text(&text).expect("read back");
        assert_eq!(back.public_key(), k.public_key());
        assert_eq!(back.kid(), k.kid());
        assert!(!format!("{k:?}").contains(&URL_SAFE_NO_PAD.encode([42u8; 32])));

        let other = key("centre-2026", 43);
        let mixed = text.replace(&k.public_key().to_string(), &other.public_key().to_string());
        assert!(matches!(
            CommandKey::from_file_text(&mixed),
            Err(KeyError::File(_))
        ));
        assert!(matches!(
            CommandKey::from_file_text("kid = a\nsecret = short\n"),
            Err(KeyError::Encoding { what: "secret", .. })
        ));
        assert!(CommandKey::from_file_text("secret = x\n").is_err());
    }

    #[test]
    fn public_keys_parse_from_their_display() {
        let k = key("k", 1);
        let p: PublicKey = k.public_key().to_string().parse().expect("parse");
        assert_eq!(p, k.public_key());
        assert!("not-a-key".parse::<PublicKey>().is_err());
    }
}

#[cfg(test)]
mod fixture {
    use super::*;
    use crate::Name;

    /// `tests/fixtures/valid/cmd-test-signed.json` is this command, signed with the seed
    /// `[7; 32]` under key id `centre-2026` for node `lz-cg-s001`'s topic; third-party
    /// implementations can check their signing code against it.
    #[test]
    fn the_signed_fixture_is_what_this_code_signs() {
        let key = CommandKey::from_seed(KeyId::new("centre-2026").expect("kid"), [7; 32]);
        let topic = "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/cmd";
        let cmd = key.seal(
            topic,
            CmdId::new("d-2026-09-18-lz").expect("id"),
            CmdAction::Test {
                test: Name::new("silent").expect("name"),
            },
            1_789_700_000_000,
            1_789_700_300_000,
        );
        let json = serde_json::to_string(&cmd).expect("json");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/valid/cmd-test-signed.json"
        );
        let file = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(file.trim(), json, "public key {}", key.public_key());
        let trusted = TrustedKeys::new([(key.kid().clone(), key.public_key())]);
        let back: Command = serde_json::from_str(&file).expect("decode");
        assert_eq!(trusted.verify(topic, &back), Ok(()));
    }
}
