//! The seen command ids on disk: `seen-commands` in the spool directory, rewritten whole
//! (temporary file, fsync, rename, fsync of the directory) each time the set changes, and
//! before the command that changed it runs. Simulated nodes with memory spools keep the set
//! in memory only.
//!
//! Design: a damaged, unreadable or vanished file must not stop the agent: it starts with
//! an empty set, but whatever the lost file held can no longer be refused by id. Every
//! command it could have held was accepted by an earlier run, whose clock let no `ts` more
//! than `max_skew` ahead; so the agent refuses (as `replayed`) every signed command made
//! before its start plus `max_skew`. A directory with no file and no spool log is a first
//! start: nothing was lost, nothing is refused. Commands are rare, so rewriting the whole
//! file (a few lines, at most [`MAX_SEEN`]) costs
//! nothing that matters.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol_state::SeenIds;
use crate::protocol_state::seen::MAX_SEEN;

/// The file's name in the spool directory.
pub const FILE_NAME: &str = "seen-commands";

/// Where the seen ids are kept.
#[derive(Debug, Clone)]
pub enum SeenStore {
    Disk(PathBuf),
    Memory,
}

/// What opening the store found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The file was read: this many ids still count.
    Loaded { ids: usize },
    /// No file and no spool log: a first start.
    FirstStart,
    /// The file is damaged, unreadable, or gone from a directory in use: commands made
    /// before the floor are refused.
    Lost { why: String, not_before: u64 },
}

impl SeenStore {
    /// Opens `dir/seen-commands` at `now` (ms). Never fails: see the module documentation.
    /// Call it before the spool is opened, which creates its log.
    pub fn open(dir: &Path, now: u64, max_skew: Duration) -> (Self, SeenIds, Opened) {
        let path = dir.join(FILE_NAME);
        let store = SeenStore::Disk(path.clone());
        let not_before = now.saturating_add(u64::try_from(max_skew.as_millis()).unwrap_or(0));
        let lost = |why: String| {
            let mut seen = SeenIds::default();
            seen.lost_memory(not_before);
            (seen, Opened::Lost { why, not_before })
        };
        let (seen, opened) = match fs::read_to_string(&path) {
            Ok(text) => match SeenIds::from_text(&text, MAX_SEEN, now) {
                Ok(seen) => {
                    let ids = seen.len();
                    (seen, Opened::Loaded { ids })
                }
                Err(e) => lost(format!("{} is damaged ({e})", path.display())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if dir_was_in_use(dir) {
                    lost(format!(
                        "{} is missing from a spool directory in use",
                        path.display()
                    ))
                } else {
                    (SeenIds::default(), Opened::FirstStart)
                }
            }
            Err(e) => lost(format!("cannot read {}: {e}", path.display())),
        };
        (store, seen, opened)
    }

    /// Saves `seen`, replacing the previous file atomically. Memory: nothing to do.
    pub fn save(&self, seen: &SeenIds) -> io::Result<()> {
        let SeenStore::Disk(path) = self else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(seen.to_text().as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Whether `dir` holds a spool log (an earlier run used it).
fn dir_was_in_use(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("spool-") && name.ends_with(".log")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alarmnet_protocol::CmdId;

    const NOW: u64 = 1_789_700_000_000;
    const SKEW: Duration = Duration::from_secs(30);

    fn id(s: &str) -> CmdId {
        CmdId::new(s).expect("id")
    }

    #[test]
    fn a_first_start_loses_nothing_and_saved_ids_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = dir.path().join("spool");
        let (store, mut seen, opened) = SeenStore::open(&spool, NOW, SKEW);
        assert_eq!(opened, Opened::FirstStart);
        assert_eq!(seen.not_before(), 0);
        seen.remember(&id("d-1"), NOW + 60_000, NOW);
        store.save(&seen).expect("save creates the directory");
        let (_, back, opened) = SeenStore::open(&spool, NOW + 1, SKEW);
        assert_eq!(opened, Opened::Loaded { ids: 1 });
        assert!(back.contains(&id("d-1"), NOW));
        assert!(!spool.join("seen-commands.tmp").exists());
    }

    #[test]
    fn a_damaged_file_or_a_missing_one_in_a_used_spool_sets_the_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), "v 1\n12 d-1\ngarbage\n").expect("write");
        let (_, seen, opened) = SeenStore::open(dir.path(), NOW, SKEW);
        let Opened::Lost { why, not_before } = opened else {
            panic!("lost expected, got {opened:?}")
        };
        assert!(why.contains("damaged") && why.contains("line 3"), "{why}");
        assert_eq!(not_before, NOW + 30_000);
        assert_eq!(seen.not_before(), NOW + 30_000);
        assert!(seen.is_empty());

        let used = tempfile::tempdir().expect("tempdir");
        std::fs::write(used.path().join("spool-00000003.log"), b"").expect("write");
        let (_, seen, opened) = SeenStore::open(used.path(), NOW, SKEW);
        assert!(matches!(opened, Opened::Lost { .. }), "{opened:?}");
        assert_eq!(seen.not_before(), NOW + 30_000);
    }

    #[test]
    fn memory_stores_save_nothing() {
        assert!(SeenStore::Memory.save(&SeenIds::default()).is_ok());
    }
}
