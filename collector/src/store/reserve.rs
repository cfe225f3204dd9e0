//! The reserve file: space kept on the store's disk for the moment it fills up.
//!
//! Design: a full disk makes SQLite's commits fail (`SQLITE_FULL`), and a store that cannot
//! commit cannot even record that it recovered. The collector keeps a file of
//! `[store] reserve` bytes next to the database (`<db>.reserve`, written with real blocks,
//! not sparse). When a commit fails because the disk is full, the file is deleted and the
//! commit retried at once: the held writes get the room, and the operator gets time to
//! find what filled the disk. It is made again only when the disk has at least twice its
//! size free, so making it never fills the disk itself.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The reserve file of one store.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
}

/// Whether `e` means "no room on the disk" (SQLite's `SQLITE_FULL`, or `ENOSPC`).
pub fn is_disk_full(e: &StoreError) -> bool {
    match e {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::DiskFull
        }
        StoreError::Commit(text) => {
            let t = text.to_ascii_lowercase();
            t.contains("disk is full") || t.contains("no space left")
        }
        _ => false,
    }
}

impl Reserve {
    /// The reserve of the database at `db` (`size` 0: none).
    pub fn new(db: &Path, size: u64) -> Self {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push(".reserve");
        Self {
            path: db.with_file_name(name),
            size,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the reserve file is in place (a reserve of size 0 never is).
    pub fn present(&self) -> bool {
        self.size > 0 && std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.size)
    }

    /// Deletes the reserve file; true if there was one.
    pub fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }

    /// Makes the reserve file if it is missing and the disk has at least twice its size
    /// free. Blocking (writes up to `size` bytes and syncs them): call it off the async
    /// workers. Returns whether it was made now.
    pub fn ensure(&self) -> std::io::Result<bool> {
        if self.size == 0 || self.present() {
            return Ok(false);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.size.saturating_mul(2) {
            return Ok(false);
        }
        let written = (|| {
            let mut f = std::fs::File::create(&self.path)?;
            let block = vec![0u8; 1 << 20];
            let mut left = self.size;
            while left > 0 {
                let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
                f.write_all(&block[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        match written {
            Ok(()) => Ok(true),
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_made_released_and_made_again() {
        let dir = tempfile::tempdir().expect("dir");
        let r = Reserve::new(&dir.path().join("alarmnet.db"), 256 * 1024);
        assert_eq!(r.path(), dir.path().join("alarmnet.db.reserve"));
        assert!(!r.present());
        assert!(r.ensure().expect("made"));
        assert!(r.present());
        assert!(!r.ensure().expect("already there"));
        assert!(r.release());
        assert!(!r.present());
        assert!(!r.release());
        assert!(r.ensure().expect("made again"));
        assert!(
            !Reserve::new(&dir.path().join("x.db"), 0)
                .ensure()
                .expect("none")
        );
    }

    #[test]
    fn disk_full_errors_are_recognized() {
        assert!(is_disk_full(&StoreError::Commit(
            "database or disk is full".into()
        )));
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(is_disk_full(&StoreError::Sqlite(full)));
        assert!(!is_disk_full(&StoreError::Commit("disk I/O error".into())));
    }
}
