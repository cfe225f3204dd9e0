//! Store-and-forward: every `hb`, `fault` and `test` message waits here until the broker has
//! acknowledged it (PUBACK), so no accepted fault is lost when the link or the broker drops.
//!
//! # On disk
//! One append-only log file per generation, `spool-NNNNNNNN.log`, holding records
//! `[len u32 LE][crc32 u32 LE][body]` with `body = [type u8][id u64 LE][payload]`. A data
//! record carries an encoded message; a tombstone (`type` 0x80, empty payload) says that
//! record `id` left the spool (acknowledged, or dropped because the spool was full).
//! Faults and test receipts are fsync'd before `append` returns; heartbeats and tombstones
//! are not (losing one after a power cut costs a heartbeat, or a duplicate on replay).
//!
//! Only the index lives in memory (id, kind, where the payload is in the log): payloads are
//! read back from the file when they are sent, so a long outage fills the disk, not the
//! node's memory. An in-memory spool (the simulator's) keeps payloads in memory instead.
//!
//! On open the newest generation is read front to back; the first record whose length or
//! checksum is wrong (a torn write after kill -9 or power loss) ends the log: the file is
//! truncated there, so garbage is never replayed and later appends follow valid data. When
//! the log has grown well past the live data it is compacted into the next generation
//! (written to a temporary file, fsync'd, renamed), and the old one is deleted.
//!
//! # When the disk fails
//! A failed write, fsync or compaction (a full disk, a file system remounted read-only)
//! never loses the record at hand and never stops the caller: the spool turns *failing*,
//! keeps that record and every later one in memory (at most [`MEMORY_MAX_BYTES`] of
//! payloads, dropped by the same priority as when full), writes nothing more to disk, and
//! counts the failure. Records held in memory are sent and released like any other; they
//! are not protected against a restart or a power cut. [`Spool::retry_disk`] tries the disk
//! again by compacting every live record, those in memory included, into a fresh
//! generation: once that succeeds the spool is on disk again and nothing it held is lost.
//! While failing no tombstone is written, so a restart before the disk recovers may replay
//! records that were already acknowledged (duplicates, which the collector drops). A log
//! that cannot be opened for writing at start (a read-only file system) is read and
//! replayed all the same, and the spool starts failing.
//!
//! Design: no well-kept crate fits this queue: it must release records individually after
//! their PUBACK (out of order when the spool drops heartbeats), drop by priority when full,
//! and survive a torn tail. Embedded key-value stores would fit but cost far more memory
//! and binary size than this file on a small node.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What a spooled record holds; heartbeats are dropped first when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Heartbeat,
    Fault,
    Test,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::Heartbeat => 1,
            RecordKind::Fault => 2,
            RecordKind::Test => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RecordKind::Heartbeat),
            2 => Some(RecordKind::Fault),
            3 => Some(RecordKind::Test),
            _ => None,
        }
    }

    /// Faults and receipts must survive a power cut once accepted.
    fn durable(self) -> bool {
        !matches!(self, RecordKind::Heartbeat)
    }
}

const TOMBSTONE: u8 = 0x80;
/// `len` + `crc`.
const FRAME_HEADER: usize = 8;
/// `type` + `id`.
const BODY_HEADER: usize = 9;
/// No valid body is larger than a maximal payload plus its header.
const MAX_BODY: usize = alarmnet_protocol::MAX_PAYLOAD_BYTES + BODY_HEADER;
/// The log is compacted once it exceeds this size and twice the live data.
const COMPACT_MIN_BYTES: u64 = 256 * 1024;
/// Payload bytes a failing disk spool holds in memory, at most (about 3 000 heartbeats).
pub const MEMORY_MAX_BYTES: u64 = 1024 * 1024;

/// One message waiting for its PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: RecordKind,
    /// The encoded payload, as produced live (`replay` false).
    pub payload: Vec<u8>,
}

/// The size of a record's frame on disk (what the byte limit counts).
fn frame_size(payload_len: usize) -> u64 {
    (FRAME_HEADER + BODY_HEADER + payload_len) as u64
}

/// A live record as the spool keeps it.
#[derive(Debug)]
struct Entry {
    kind: RecordKind,
    payload: Stored,
}

/// Where a live record's payload is.
#[derive(Debug)]
enum Stored {
    /// In memory (a spool without a file).
    Memory(Vec<u8>),
    /// In the current log file, at this offset.
    Log { offset: u64, len: u32 },
}

impl Entry {
    fn payload_len(&self) -> usize {
        match &self.payload {
            Stored::Memory(p) => p.len(),
            Stored::Log { len, .. } => *len as usize,
        }
    }

    fn size(&self) -> u64 {
        frame_size(self.payload_len())
    }
}

/// How large the spool may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    pub max_bytes: u64,
    pub max_records: usize,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            max_bytes: 8 * 1024 * 1024,
            max_records: 20_000,
        }
    }
}

/// Records dropped because the spool was full, by kind, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub heartbeats: u64,
    pub faults: u64,
    pub tests: u64,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.heartbeats + self.faults + self.tests
    }

    fn count(&mut self, kind: RecordKind) {
        match kind {
            RecordKind::Heartbeat => self.heartbeats += 1,
            RecordKind::Fault => self.faults += 1,
            RecordKind::Test => self.tests += 1,
        }
    }
}

/// What opening an on-disk spool found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records waiting to be sent.
    pub records: usize,
    /// Bytes cut off the end of the log because they did not form a valid record.
    pub torn_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The spool: an index of live records in id order over a log file, or the records
/// themselves when it has no file.
#[derive(Debug)]
pub struct Spool {
    log: Option<Log>,
    records: BTreeMap<u64, Entry>,
    heartbeats: BTreeSet<u64>,
    next_id: u64,
    live_bytes: u64,
    limits: SpoolLimits,
    dropped: Dropped,
    /// The error that turned the disk spool failing; `None` while it writes.
    failure: Option<String>,
    /// Failed writes, fsyncs, compactions and retries since the spool was opened.
    write_errors: u64,
    /// Records of a disk spool held in memory only, because the disk failed.
    memory: BTreeSet<u64>,
    memory_bytes: u64,
    /// Tests: every disk operation fails with this error.
    #[cfg(test)]
    broken: Option<io::ErrorKind>,
}

#[derive(Debug)]
struct Log {
    dir: PathBuf,
    generation: u64,
    file: File,
    len: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("spool-{generation:08}.log"))
}

fn encode_frame(out: &mut Vec<u8>, code: u8, id: u64, payload: &[u8]) {
    let body_len = BODY_HEADER + payload.len();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[code]);
    hasher.update(&id.to_le_bytes());
    hasher.update(payload);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.push(code);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A decoded frame: `(type, id, payload)`, or `None` where the valid log ends.
fn decode_frame(buf: &[u8]) -> Option<(u8, u64, &[u8], usize)> {
    let header = buf.get(..FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if !(BODY_HEADER..=MAX_BODY).contains(&len) {
        return None;
    }
    let body = buf.get(FRAME_HEADER..FRAME_HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let code = body[0];
    let id = u64::from_le_bytes(body[1..9].try_into().ok()?);
    if code != TOMBSTONE && RecordKind::from_code(code).is_none() {
        return None;
    }
    Some((code, id, &body[BODY_HEADER..], FRAME_HEADER + len))
}

/// Reads the next frame (header and body) into `frame`. `false` at the end of the file or
/// where what follows cannot be a frame (a torn or garbage length), which ends the log.
fn read_frame(reader: &mut impl Read, frame: &mut Vec<u8>) -> io::Result<bool> {
    frame.resize(FRAME_HEADER, 0);
    if !read_full(reader, frame)? {
        return Ok(false);
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&len) {
        return Ok(false);
    }
    frame.resize(FRAME_HEADER + len, 0);
    read_full(reader, &mut frame[FRAME_HEADER..])
}

/// Fills `buf`; `false` if the file ends first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Which record to drop for a new one of `kind`, among `candidates` (id order): the oldest
/// heartbeat; none (drop the new record) for a heartbeat that finds only faults and
/// receipts; otherwise the oldest record.
fn victim_among(
    candidates: impl Iterator<Item = (u64, RecordKind)>,
    kind: RecordKind,
) -> Option<u64> {
    let mut oldest = None;
    for (id, k) in candidates {
        if k == RecordKind::Heartbeat {
            return Some(id);
        }
        oldest = oldest.or(Some(id));
    }
    if kind == RecordKind::Heartbeat {
        None
    } else {
        oldest
    }
}

impl Spool {
    /// A spool that lives in memory only (the simulator's choice for many nodes).
    pub fn in_memory(limits: SpoolLimits) -> Self {
        Self {
            log: None,
            records: BTreeMap::new(),
            heartbeats: BTreeSet::new(),
            next_id: 0,
            live_bytes: 0,
            limits,
            dropped: Dropped::default(),
            failure: None,
            write_errors: 0,
            memory: BTreeSet::new(),
            memory_bytes: 0,
            #[cfg(test)]
            broken: None,
        }
    }

    /// Opens (or creates) the spool in `dir`, recovering what a previous run left.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<(Self, Recovery), SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut generations = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(g) = name
                .strip_prefix("spool-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                generations.push(g);
            } else if name.starts_with("spool-") && name.ends_with(".tmp") {
                // An interrupted compaction: the log it came from is still complete.
                let _ = fs::remove_file(entry.path());
            }
        }
        generations.sort_unstable();
        let generation = generations.last().copied().unwrap_or(0);
        for old in &generations[..generations.len().saturating_sub(1)] {
            // A compaction finished its rename but not the deletion of its source.
            let _ = fs::remove_file(log_path(dir, *old));
        }

        let path = log_path(dir, generation);
        // A log that cannot be opened for writing (a read-only file system) is still read:
        // its records are sent, and the spool starts failing (new records in memory) until
        // a retry can write the next generation. No log at all and no way to create one is
        // an error: there is nothing to recover and nowhere to write.
        let (mut file, unwritable) = match OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
        {
            Ok(file) => (file, None),
            Err(e) => match File::open(&path) {
                Ok(file) => (file, Some(io_err(&path)(e))),
                Err(_) => return Err(io_err(&path)(e)),
            },
        };
        let file_len = file.metadata().map_err(io_err(&path))?.len();

        let mut spool = Self::in_memory(limits);
        let mut offset = 0u64;
        let mut reader = BufReader::new(&file);
        let mut frame = Vec::new();
        while read_frame(&mut reader, &mut frame).map_err(io_err(&path))? {
            let Some((code, id, payload, used)) = decode_frame(&frame) else {
                break;
            };
            spool.next_id = spool.next_id.max(id + 1);
            if code == TOMBSTONE {
                spool.forget(id);
            } else if let Some(kind) = RecordKind::from_code(code) {
                let payload = Stored::Log {
                    offset: offset + (FRAME_HEADER + BODY_HEADER) as u64,
                    len: payload.len() as u32,
                };
                spool.insert(id, Entry { kind, payload });
            }
            offset += used as u64;
        }
        drop(reader);
        let torn_bytes = file_len - offset;
        let mut failure = unwritable;
        if torn_bytes > 0 && failure.is_none() {
            // Cut the torn tail; if that fails the spool is failing, and the next
            // generation written on recovery leaves the tail behind.
            if let Err(e) = file.set_len(offset).and_then(|()| file.sync_all()) {
                failure = Some(io_err(&path)(e));
            }
        }
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        spool.log = Some(Log {
            dir: dir.to_owned(),
            generation,
            file,
            len: offset,
        });
        let recovery = Recovery {
            records: spool.records.len(),
            torn_bytes,
        };
        match failure {
            Some(e) => spool.failed(&e),
            None => {
                if let Err(e) = spool.maybe_compact() {
                    spool.failed(&e);
                }
            }
        }
        Ok((spool, recovery))
    }

    fn insert(&mut self, id: u64, entry: Entry) {
        self.live_bytes += entry.size();
        if entry.kind == RecordKind::Heartbeat {
            self.heartbeats.insert(id);
        }
        self.records.insert(id, entry);
    }

    fn forget(&mut self, id: u64) -> Option<Entry> {
        let entry = self.records.remove(&id)?;
        self.live_bytes -= entry.size();
        self.heartbeats.remove(&id);
        if self.memory.remove(&id) {
            self.memory_bytes -= entry.payload_len() as u64;
        }
        Some(entry)
    }

    /// Whether records go to memory instead of the disk (a disk spool whose disk failed).
    fn holds_in_memory(&self) -> bool {
        self.log.is_some() && self.failure.is_some()
    }

    /// A disk operation failed: count it, and turn failing (if not already).
    fn failed(&mut self, e: &SpoolError) {
        self.write_errors += 1;
        if self.log.is_some() {
            self.failure = Some(e.to_string());
        }
    }

    /// Appends `frame` to the log; returns the offset it was written at (0 in memory).
    fn write(&mut self, frame: &[u8], sync: bool) -> Result<u64, SpoolError> {
        #[cfg(test)]
        let broken = self.broken;
        let Some(log) = self.log.as_mut() else {
            return Ok(0);
        };
        let path = log_path(&log.dir, log.generation);
        let at = log.len;
        #[cfg(test)]
        if let Some(kind) = broken {
            return Err(io_err(&path)(io::Error::from(kind)));
        }
        if let Err(e) = log.file.write_all(frame) {
            // A partial write would leave a torn frame before the next one: cut it off so
            // the log stays readable past it, and keep `len` (where payloads are found)
            // equal to the file's length either way. (On a read-only file system the cut
            // fails too; the spool is failing then and rewrites the log when it recovers.)
            let _ = log.file.set_len(at);
            log.len = log.file.metadata().map_or(at, |m| m.len());
            return Err(io_err(&path)(e));
        }
        log.len += frame.len() as u64;
        if sync {
            log.file.sync_data().map_err(io_err(&path))?;
        }
        Ok(at)
    }

    /// A live record's payload, from memory or read back from the log.
    fn payload(&self, entry: &Entry) -> Result<Vec<u8>, SpoolError> {
        match (&entry.payload, &self.log) {
            (Stored::Memory(p), _) => Ok(p.clone()),
            (Stored::Log { offset, len }, Some(log)) => {
                let mut buf = vec![0; *len as usize];
                log.file
                    .read_exact_at(&mut buf, *offset)
                    .map_err(io_err(&log_path(&log.dir, log.generation)))?;
                Ok(buf)
            }
            (Stored::Log { .. }, None) => unreachable!("only a spool with a log stores there"),
        }
    }

    /// Accepts a message. When full, drops the oldest heartbeat first; a heartbeat that
    /// finds only faults and receipts ahead of it is itself dropped; otherwise the oldest
    /// record goes. Returns the record's id, or `None` if the new record was dropped.
    ///
    /// Never fails: when the disk cannot take the record it is kept in memory and the spool
    /// turns failing (see the module documentation and [`Spool::failure`]).
    pub fn append(&mut self, kind: RecordKind, payload: Vec<u8>) -> Option<u64> {
        let size = frame_size(payload.len());
        let mut frame = Vec::new();
        loop {
            let in_memory = self.holds_in_memory();
            let fits = self.records.len() < self.limits.max_records
                && self.live_bytes + size <= self.limits.max_bytes;
            let fits_memory =
                !in_memory || self.memory_bytes + payload.len() as u64 <= MEMORY_MAX_BYTES;
            if fits && fits_memory {
                break;
            }
            let victim = if fits {
                // Only the memory bound is exceeded: free memory, by the same priority.
                let memory = self
                    .memory
                    .iter()
                    .filter_map(|id| self.records.get(id).map(|e| (*id, e.kind)));
                victim_among(memory, kind)
            } else if let Some(&id) = self.heartbeats.first() {
                Some(id)
            } else if kind == RecordKind::Heartbeat {
                None
            } else {
                self.records.keys().next().copied()
            };
            let Some(victim) = victim else {
                // The new record is the one to drop (or it is larger than the whole spool).
                self.dropped.count(kind);
                if !frame.is_empty() && !self.holds_in_memory() {
                    if let Err(e) = self.write(&frame, false) {
                        self.failed(&e);
                    }
                }
                return None;
            };
            if let Some(dropped) = self.forget(victim) {
                self.dropped.count(dropped.kind);
            }
            if !in_memory {
                encode_frame(&mut frame, TOMBSTONE, victim, &[]);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let payload = if self.log.is_none() {
            Stored::Memory(payload)
        } else if self.holds_in_memory() {
            self.keep_in_memory(id, payload)
        } else {
            let payload_at = frame.len() + FRAME_HEADER + BODY_HEADER;
            encode_frame(&mut frame, kind.code(), id, &payload);
            match self.write(&frame, kind.durable()) {
                Ok(at) => Stored::Log {
                    offset: at + payload_at as u64,
                    len: payload.len() as u32,
                },
                Err(e) => {
                    self.failed(&e);
                    self.keep_in_memory(id, payload)
                }
            }
        };
        self.insert(id, Entry { kind, payload });
        Some(id)
    }

    /// A record of a disk spool that the disk could not take.
    fn keep_in_memory(&mut self, id: u64, payload: Vec<u8>) -> Stored {
        self.memory.insert(id);
        self.memory_bytes += payload.len() as u64;
        Stored::Memory(payload)
    }

    /// Releases a record after the broker's PUBACK. Unknown ids (already dropped) are fine.
    /// Never fails: a tombstone the disk cannot take turns the spool failing.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(entry) = self.forget(id) else {
            return false;
        };
        if self.holds_in_memory() || matches!(entry.payload, Stored::Memory(_)) {
            // Nothing on disk to mark, or a disk that takes no writes now (the next
            // generation will not hold the record).
            return true;
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER + BODY_HEADER);
        encode_frame(&mut frame, TOMBSTONE, id, &[]);
        if let Err(e) = self.write(&frame, false) {
            self.failed(&e);
            return true;
        }
        if let Err(e) = self.maybe_compact() {
            self.failed(&e);
        }
        true
    }

    /// Why the disk spool is failing (the OS error of the first failed operation), or
    /// `None` while it writes to disk. An in-memory spool never fails.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Failed disk operations (writes, fsyncs, compactions, retries) since opening.
    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// Records held in memory only because the disk failed: lost if the agent stops.
    pub fn memory_only(&self) -> usize {
        self.memory.len()
    }

    /// Tries the disk again while failing: every live record, those held in memory
    /// included, is written into a fresh generation (fsync'd, renamed). True when the
    /// spool is on disk again (or never failed).
    pub fn retry_disk(&mut self) -> bool {
        if !self.holds_in_memory() {
            return true;
        }
        match self.compact() {
            Ok(()) => {
                self.failure = None;
                true
            }
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// The first record with an id greater than `after` (or the first of all), its payload
    /// read back from the log.
    pub fn next_after(&self, after: Option<u64>) -> Result<Option<(u64, Record)>, SpoolError> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let Some((id, entry)) = self.records.range((lower, Bound::Unbounded)).next() else {
            return Ok(None);
        };
        let record = Record {
            kind: entry.kind,
            payload: self.payload(entry)?,
        };
        Ok(Some((*id, record)))
    }

    /// The newest record's id, if any.
    pub fn last_id(&self) -> Option<u64> {
        self.records.keys().next_back().copied()
    }

    /// The record `id`, if it is still in the spool.
    pub fn get(&self, id: u64) -> Result<Option<Record>, SpoolError> {
        let Some(entry) = self.records.get(&id) else {
            return Ok(None);
        };
        let payload = self.payload(entry)?;
        Ok(Some(Record {
            kind: entry.kind,
            payload,
        }))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of live records (their on-disk frames).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The log file's size (0 in memory).
    pub fn file_bytes(&self) -> u64 {
        self.log.as_ref().map_or(0, |l| l.len)
    }

    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Makes everything written so far durable (on shutdown). A failing spool has nothing
    /// more on disk to sync; records it holds in memory are lost with the process.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.holds_in_memory() {
            return Ok(());
        }
        if let Some(log) = self.log.as_mut() {
            let path = log_path(&log.dir, log.generation);
            if let Err(e) = log.file.sync_all() {
                let e = io_err(&path)(e);
                self.failed(&e);
                return Err(e);
            }
        }
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), SpoolError> {
        let Some(log) = self.log.as_ref() else {
            return Ok(());
        };
        if self.failure.is_some() || log.len <= COMPACT_MIN_BYTES.max(2 * self.live_bytes) {
            return Ok(());
        }
        self.compact()
    }

    /// Rewrites the live records into the next generation; on failure the current one
    /// stays as it was and the temporary file is removed.
    fn compact(&mut self) -> Result<(), SpoolError> {
        let Some(log) = self.log.as_ref() else {
            return Ok(());
        };
        let tmp = log.dir.join(format!("spool-{:08}.tmp", log.generation + 1));
        let result = self.compact_into(&tmp);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn compact_into(&mut self, tmp: &Path) -> Result<(), SpoolError> {
        let Some(log) = self.log.as_ref() else {
            return Ok(());
        };
        #[cfg(test)]
        if let Some(kind) = self.broken {
            return Err(io_err(tmp)(io::Error::from(kind)));
        }
        let tmp = tmp.to_owned();
        let dir = log.dir.clone();
        let next = log.generation + 1;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // Copy the live records over one at a time, noting where each payload lands.
        let mut out = BufWriter::new(file);
        let mut moved = Vec::with_capacity(self.records.len());
        let mut len = 0u64;
        let mut frame = Vec::new();
        for (id, entry) in &self.records {
            let payload = self.payload(entry)?;
            frame.clear();
            encode_frame(&mut frame, entry.kind.code(), *id, &payload);
            out.write_all(&frame).map_err(io_err(&tmp))?;
            moved.push((
                len + (FRAME_HEADER + BODY_HEADER) as u64,
                payload.len() as u32,
            ));
            len += frame.len() as u64;
        }
        // Keep the id counter beyond every id ever handed out, even if the newest records
        // are gone: a tombstone of the newest id carries it over.
        if self.next_id > 0 && self.last_id().is_none_or(|last| last + 1 < self.next_id) {
            frame.clear();
            encode_frame(&mut frame, TOMBSTONE, self.next_id - 1, &[]);
            out.write_all(&frame).map_err(io_err(&tmp))?;
            len += frame.len() as u64;
        }
        let file = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        let path = log_path(&dir, next);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let old = log_path(&dir, next - 1);
        self.log = Some(Log {
            dir,
            generation: next,
            file,
            len,
        });
        for (entry, (offset, len)) in self.records.values_mut().zip(moved) {
            entry.payload = Stored::Log { offset, len };
        }
        self.memory.clear();
        self.memory_bytes = 0;
        let _ = fs::remove_file(old);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, max_records: usize) -> SpoolLimits {
        SpoolLimits {
            max_bytes,
            max_records,
        }
    }

    fn payload(i: u32) -> Vec<u8> {
        format!("{{\"n\":{i}}}").into_bytes()
    }

    fn ids(s: &Spool) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cur = None;
        while let Some((id, _)) = s.next_after(cur).expect("read") {
            out.push(id);
            cur = Some(id);
        }
        out
    }

    fn current_log(dir: &Path) -> PathBuf {
        let mut logs: Vec<_> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        logs.pop().expect("a log file")
    }

    #[test]
    fn append_then_ack_removes_and_replays_in_order() {
        let mut s = Spool::in_memory(SpoolLimits::default());
        let a = s.append(RecordKind::Fault, payload(1)).expect("kept");
        let b = s.append(RecordKind::Heartbeat, payload(2)).expect("kept");
        let c = s.append(RecordKind::Test, payload(3)).expect("kept");
        assert!(a < b && b < c);
        assert_eq!(ids(&s), vec![a, b, c]);
        assert!(s.remove(b));
        assert!(!s.remove(b), "second ack is a no-op");
        assert_eq!(ids(&s), vec![a, c]);
        assert_eq!(s.get(c).expect("read").expect("c").payload, payload(3));
    }

    #[test]
    fn a_disk_spool_keeps_only_the_index_in_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).expect("open");
        let ids: Vec<u64> = (0..50)
            .map(|i| s.append(RecordKind::Heartbeat, payload(i)).expect("kept"))
            .collect();
        assert!(
            s.records
                .values()
                .all(|e| matches!(e.payload, Stored::Log { .. }))
        );
        for (i, id) in ids.iter().enumerate() {
            let record = s.get(*id).expect("read").expect("live");
            assert_eq!(record.payload, payload(i as u32));
        }
        let (second, record) = s.next_after(Some(ids[0])).expect("read").expect("next");
        assert_eq!((second, record.payload), (ids[1], payload(1)));
    }

    #[test]
    fn full_spool_drops_heartbeats_first_and_counts() {
        let mut s = Spool::in_memory(limits(u64::MAX, 3));
        let hb1 = s.append(RecordKind::Heartbeat, payload(1)).expect("kept");
        let f1 = s.append(RecordKind::Fault, payload(2)).expect("kept");
        let hb2 = s.append(RecordKind::Heartbeat, payload(3)).expect("kept");
        // Full: a fault pushes out the oldest heartbeat.
        let f2 = s.append(RecordKind::Fault, payload(4)).expect("kept");
        assert_eq!(ids(&s), vec![f1, hb2, f2]);
        let t1 = s.append(RecordKind::Test, payload(5)).expect("kept");
        assert_eq!(ids(&s), vec![f1, f2, t1]);
        assert_eq!(s.dropped().heartbeats, 2);
        // Only faults and tests left: a new heartbeat is itself dropped.
        assert_eq!(s.append(RecordKind::Heartbeat, payload(6)), None);
        assert_eq!(s.dropped().heartbeats, 3);
        // A new fault drops the oldest fault.
        let f3 = s.append(RecordKind::Fault, payload(7)).expect("kept");
        assert_eq!(ids(&s), vec![f2, t1, f3]);
        assert_eq!(s.dropped().faults, 1);
        assert_eq!(s.dropped().total(), 4);
        let _ = hb1;
    }

    #[test]
    fn byte_bound_is_respected() {
        let one = frame_size(payload(1).len());
        let mut s = Spool::in_memory(limits(one * 4, usize::MAX));
        for i in 0..10 {
            s.append(RecordKind::Heartbeat, payload(i));
            assert!(s.live_bytes() <= one * 4);
        }
        assert_eq!(s.len(), 4);
        assert_eq!(s.dropped().heartbeats, 6);
        // A record larger than the whole bound is dropped, not kept.
        let mut small = Spool::in_memory(limits(10, 10));
        assert_eq!(small.append(RecordKind::Fault, payload(1)), None);
        assert_eq!(small.dropped().faults, 1);
    }

    #[test]
    fn restart_recovers_unacked_records_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, rec) = Spool::open(dir.path(), SpoolLimits::default()).expect("open");
        assert_eq!(rec, Recovery::default());
        let mut kept = Vec::new();
        for i in 0..20 {
            let kind = if i % 3 == 0 {
                RecordKind::Fault
            } else {
                RecordKind::Heartbeat
            };
            let id = s.append(kind, payload(i)).expect("kept");
            if i % 2 == 0 {
                s.remove(id);
            } else {
                kept.push((id, payload(i)));
            }
        }
        drop(s);
        let (s, rec) = Spool::open(dir.path(), SpoolLimits::default()).expect("reopen");
        assert_eq!(rec.records, kept.len());
        assert_eq!(rec.torn_bytes, 0);
        let got: Vec<_> = ids(&s)
            .into_iter()
            .map(|id| (id, s.get(id).expect("read").expect("rec").payload))
            .collect();
        assert_eq!(got, kept);
        // New ids continue after the old ones.
        let mut s = s;
        let next = s.append(RecordKind::Fault, payload(99)).expect("kept");
        assert!(next > kept.last().expect("some").0);
    }

    #[test]
    fn torn_tail_is_cut_off_and_not_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).expect("open");
        s.append(RecordKind::Fault, payload(1));
        s.append(RecordKind::Fault, payload(2));
        drop(s);
        let path = current_log(dir.path());
        let full = fs::read(&path).expect("read");
        // Cut the last record in the middle, as a crash during write would.
        let cut = full.len() - 5;
        fs::write(&path, &full[..cut]).expect("write");
        let (mut s, rec) = Spool::open(dir.path(), SpoolLimits::default()).expect("reopen");
        assert_eq!(rec.records, 1);
        assert!(rec.torn_bytes > 0);
        assert_eq!(
            s.next_after(None).expect("read").expect("first").1.payload,
            payload(1)
        );
        // Appends after recovery land after valid data and survive another restart.
        s.append(RecordKind::Test, payload(3));
        drop(s);
        let (s, rec) = Spool::open(dir.path(), SpoolLimits::default()).expect("reopen");
        assert_eq!(rec.torn_bytes, 0);
        let payloads: Vec<_> = ids(&s)
            .into_iter()
            .map(|id| s.get(id).expect("read").expect("r").payload)
            .collect();
        assert_eq!(payloads, vec![payload(1), payload(3)]);
    }

    #[test]
    fn corrupt_record_is_detected_by_its_checksum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).expect("open");
        s.append(RecordKind::Fault, payload(1));
        s.append(RecordKind::Fault, payload(2));
        drop(s);
        let path = current_log(dir.path());
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        let (s, rec) = Spool::open(dir.path(), SpoolLimits::default()).expect("reopen");
        assert_eq!(rec.records, 1);
        assert_eq!(
            s.next_after(None).expect("read").expect("first").1.payload,
            payload(1)
        );
        // A garbage length field is refused too.
        let mut bytes = fs::read(&path).expect("read");
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        fs::write(&path, &bytes).expect("write");
        let (_, rec) = Spool::open(dir.path(), SpoolLimits::default()).expect("reopen");
        assert_eq!(rec.records, 1);
        assert_eq!(rec.torn_bytes, 16);
    }

    #[test]
    fn compaction_keeps_live_records_and_bounds_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).expect("open");
        let stuck = s.append(RecordKind::Fault, payload(0)).expect("kept");
        let big = vec![b'x'; 1000];
        for _ in 0..2000 {
            let id = s.append(RecordKind::Heartbeat, big.clone()).expect("kept");
            s.remove(id);
        }
        assert!(
            s.file_bytes() <= COMPACT_MIN_BYTES + 2 * 1024,
            "{}",
            s.file_bytes()
        );
        let last = s.append(RecordKind::Fault, payload(1)).expect("kept");
        // Compaction moved the payloads: they are still found where the index says.
        assert_eq!(
            s.get(stuck).expect("read").expect("stuck").payload,
            payload(0)
        );
        assert_eq!(
            s.get(last).expect("read").expect("last").payload,
            payload(1)
        );
        drop(s);
        let logs = fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(logs, 1, "old generations are deleted");
        let (mut s, rec) = Spool::open(dir.path(), SpoolLimits::default()).expect("reopen");
        assert_eq!(rec.records, 2);
        assert_eq!(ids(&s), vec![stuck, last]);
        let next = s.append(RecordKind::Fault, payload(2)).expect("kept");
        assert!(next > last);
    }

    #[test]
    fn a_failing_disk_holds_records_in_memory_and_recovery_writes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).expect("open");
        let on_disk = s.append(RecordKind::Fault, payload(1)).expect("kept");
        assert_eq!(s.failure(), None);

        s.broken = Some(io::ErrorKind::StorageFull);
        let held = s.append(RecordKind::Heartbeat, payload(2)).expect("kept");
        let failure = s.failure().expect("failing").to_owned();
        assert!(
            failure.contains(&dir.path().display().to_string()),
            "{failure}"
        );
        assert_eq!((s.write_errors(), s.memory_only()), (1, 1));
        // Further records go to memory without touching the disk (no more errors).
        let receipt = s.append(RecordKind::Test, payload(3)).expect("kept");
        assert_eq!((s.write_errors(), s.memory_only()), (1, 2));
        // Everything is still sent in order, from disk or from memory.
        assert_eq!(ids(&s), vec![on_disk, held, receipt]);
        assert_eq!(
            s.get(held).expect("read").expect("held").payload,
            payload(2)
        );
        // Acknowledgements release records on disk and in memory.
        assert!(s.remove(on_disk));
        assert!(s.remove(receipt));
        assert_eq!(s.memory_only(), 1);
        let late = s.append(RecordKind::Fault, payload(4)).expect("kept");

        assert!(!s.retry_disk(), "the disk is still broken");
        assert_eq!(s.write_errors(), 2);
        assert!(
            fs::read_dir(dir.path()).expect("dir").all(|e| !e
                .expect("entry")
                .path()
                .to_string_lossy()
                .ends_with(".tmp")),
            "a failed retry leaves no temporary file"
        );

        s.broken = None;
        assert!(s.retry_disk());
        assert_eq!((s.failure(), s.memory_only()), (None, 0));
        assert_eq!(ids(&s), vec![held, late]);
        // On disk again: a new record is written, and a restart finds exactly the live
        // records, those once held in memory included.
        let after = s.append(RecordKind::Fault, payload(5)).expect("kept");
        drop(s);
        let (s, rec) = Spool::open(dir.path(), SpoolLimits::default()).expect("reopen");
        assert_eq!(rec.records, 3);
        let got: Vec<_> = ids(&s)
            .into_iter()
            .map(|id| (id, s.get(id).expect("read").expect("r").payload))
            .collect();
        assert_eq!(
            got,
            vec![(held, payload(2)), (late, payload(4)), (after, payload(5))]
        );
    }

    #[test]
    fn a_failing_disk_bounds_the_memory_it_uses_and_drops_heartbeats_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spool::open(dir.path(), SpoolLimits::default()).expect("open");
        s.broken = Some(io::ErrorKind::ReadOnlyFilesystem);
        let fault = s.append(RecordKind::Fault, payload(0)).expect("kept");
        let big = vec![b'h'; 10_000];
        for _ in 0..300 {
            s.append(RecordKind::Heartbeat, big.clone());
            assert!(s.memory_bytes <= MEMORY_MAX_BYTES);
        }
        assert!(s.dropped().heartbeats > 0);
        assert_eq!(s.dropped().faults, 0);
        assert_eq!(ids(&s).first(), Some(&fault), "the fault is kept");
        // Only faults left in memory and no room: the oldest fault goes for a new one.
        let mut faults = Vec::new();
        for _ in 0..200 {
            faults.push(s.append(RecordKind::Fault, big.clone()).expect("kept"));
        }
        assert!(s.memory_bytes <= MEMORY_MAX_BYTES);
        assert_eq!(s.len(), s.memory_only(), "every record is held in memory");
        assert!(
            s.get(fault).expect("read").is_none(),
            "the oldest fault was dropped"
        );
        assert!(
            s.get(*faults.last().expect("some"))
                .expect("read")
                .is_some()
        );
    }

    #[test]
    fn an_in_memory_spool_never_fails() {
        let mut s = Spool::in_memory(SpoolLimits::default());
        s.append(RecordKind::Fault, payload(1)).expect("kept");
        assert!(s.retry_disk());
        assert_eq!(
            (s.failure(), s.write_errors(), s.memory_only()),
            (None, 0, 0)
        );
        s.sync().expect("nothing to sync");
    }
}
