//! `[commands]`: signing and pacing of the commands the collector publishes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alarmnet_protocol::signing::CommandKey;
use serde::Deserialize;

/// `[commands]`: how the collector signs and paces the commands it publishes (drill tests,
/// rebirth requests).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// The signing key written by `alarmnet-collector keygen` (mode 0600). Without it
    /// commands go out unsigned, and only agents with `allow_unsigned = true` run them.
    pub key_file: Option<PathBuf>,
    /// How long a command may still start after it was made (`exp = ts + ttl`; a drill's
    /// commands also expire at its deadline). Longer than the agents' `max_skew`.
    #[serde(default = "default_command_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Commands published per second at most, so a drill over 100 000 nodes does not flood
    /// the broker (the broker and the agents' links must take this rate).
    #[serde(default = "default_command_rate")]
    pub rate: u32,
}

impl Default for CommandsConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            ttl: default_command_ttl(),
            rate: default_command_rate(),
        }
    }
}

fn default_command_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_command_rate() -> u32 {
    2_000
}

impl CommandsConfig {
    /// Checks every key under `commands.` and reads the signing key: `None` when no
    /// `key_file` is set (commands go out unsigned), or every problem.
    pub fn build(&self) -> Result<Option<Arc<CommandKey>>, Vec<String>> {
        let mut errors = Vec::new();
        let mut key = None;
        if self.ttl < Duration::from_secs(1) {
            errors.push("commands.ttl: must be at least 1s".into());
        }
        if self.rate == 0 {
            errors.push("commands.rate: must be at least 1 command per second".into());
        }
        if let Some(file) = &self.key_file {
            match super::key::load(file) {
                Ok(k) => key = Some(Arc::new(k)),
                Err(e) => errors.push(format!("commands.key_file: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(key)
        } else {
            Err(errors)
        }
    }
}
