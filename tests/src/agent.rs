//! A test's agent: its node id, topic prefix and scratch directory, and the real
//! `alarmnet-agent` started on a config the test writes there.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::{Process, binary, unique_id};

/// One node of a test, in site `lanzhou-chengguan` of region `lanzhou`, under a topic prefix
/// of its own (so parallel tests never see each other's messages).
#[derive(Debug)]
pub struct TestAgent {
    pub id: String,
    pub prefix: String,
    pub dir: TempDir,
}

impl TestAgent {
    /// A new node whose id starts with `tag`.
    pub fn new(tag: &str) -> Self {
        Self {
            id: unique_id(tag),
            prefix: format!("{}/v1", unique_id("e2e")),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The node's topic `leaf` (`hb`, `cmd`, ...).
    pub fn topic(&self, leaf: &str) -> String {
        format!(
            "{}/lanzhou/lanzhou-chengguan/{}/{leaf}",
            self.prefix, self.id
        )
    }

    /// Every topic under the prefix.
    pub fn filter(&self) -> String {
        format!("{}/#", self.prefix)
    }

    /// Where the agent's config should put its spool.
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// `alarmnet-agent run --config config`, logging at info.
    pub fn start(&self, config: &Path) -> Process {
        Process::builder(binary("alarmnet-agent"))
            .name(format!("agent:{}", self.id))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .spawn()
    }
}
