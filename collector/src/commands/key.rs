//! The collector's command signing key: reading `[commands] key_file` and
//! `alarmnet-collector keygen`, which writes a new one.
//!
//! Design: the file holds the secret seed (see [`CommandKey::to_file_text`]), so it is
//! created with mode 0600 and never overwritten (a second keygen over a key the agents
//! already trust would lock every agent out). A key file readable by group or others is
//! refused at load, like ssh refuses a private key it could leak.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use alarmnet_protocol::KeyId;
use alarmnet_protocol::signing::CommandKey;
use rand::Rng as _;

/// Why a key file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: mode {mode:o} lets others read the secret key (chmod 600 it)")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} exists already: refusing to overwrite a key agents may trust")]
    Exists { path: PathBuf },
    #[error("--kid {kid:?}: {reason}")]
    BadKid { kid: String, reason: String },
}

/// Reads and checks a key file written by [`keygen`].
pub fn load(path: &Path) -> Result<CommandKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    CommandKey::from_file_text(&text).map_err(|e| KeyFileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A new key with a seed from the operating system's CSPRNG (through `rand`'s thread
/// generator, a ChaCha CSPRNG seeded from the OS).
pub fn generate(kid: KeyId) -> CommandKey {
    let seed: [u8; 32] = rand::rng().random();
    CommandKey::from_seed(kid, seed)
}

/// The line an agent's `[commands]` section needs to trust `key`.
pub fn agent_line(key: &CommandKey) -> String {
    format!("keys = {{ \"{}\" = \"{}\" }}", key.kid(), key.public_key())
}

/// `alarmnet-collector keygen`: writes a new key to `out` (mode 0600, never over an existing
/// file) and returns it.
pub fn keygen(kid: &str, out: &Path) -> Result<CommandKey, KeyFileError> {
    let kid = KeyId::new(kid).map_err(|e| KeyFileError::BadKid {
        kid: kid.to_owned(),
        reason: e.to_string(),
    })?;
    let key = generate(kid);
    write_new(out, &key)?;
    Ok(key)
}

/// Writes `key` to a file that must not exist yet, readable by its owner only.
pub fn write_new(out: &Path, key: &CommandKey) -> Result<(), KeyFileError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: out.to_owned(),
            }
        } else {
            KeyFileError::Io {
                path: out.to_owned(),
                source,
            }
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io)?;
    file.write_all(key.to_file_text().as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_once_and_load_reads_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("command.key");
        let key = keygen("centre-2026", &path).expect("keygen");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load(&path).expect("load");
        assert_eq!(loaded.public_key(), key.public_key());
        assert_eq!(loaded.kid().as_str(), "centre-2026");
        assert!(agent_line(&key).starts_with("keys = { \"centre-2026\" = \""));

        let again = keygen("centre-2026", &path).expect_err("no overwrite");
        assert!(matches!(again, KeyFileError::Exists { .. }), "{again}");
        assert_eq!(load(&path).expect("load").public_key(), key.public_key());

        let other = keygen("x", &dir.path().join("k2")).expect("second key");
        assert_ne!(other.public_key(), key.public_key(), "fresh randomness");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        keygen("k", &path).expect("keygen");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = load(&path).expect_err("exposed");
        assert!(e.to_string().contains("chmod 600"), "{e}");

        let junk = dir.path().join("junk");
        write_new(&junk, &generate(KeyId::new("k").expect("kid"))).expect("write");
        std::fs::write(&junk, "kid = k\nsecret = nope\n").expect("overwrite");
        let e = load(&junk).expect_err("invalid");
        assert!(matches!(e, KeyFileError::Invalid { .. }), "{e}");
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(KeyFileError::Io { .. })
        ));
        assert!(matches!(
            keygen("bad kid", &dir.path().join("k3")),
            Err(KeyFileError::BadKid { .. })
        ));
    }
}
