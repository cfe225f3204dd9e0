//! The disk spool: batches of line protocol kept on disk while the database cannot take
//! them, bounded by bytes, read back oldest first, surviving a restart.
//!
//! # Format
//! A directory of segment files `00000000000000000001.seg`, `...02.seg`, ... appended in
//! order. Each record is `len: u32 LE | crc32: u32 LE | points: u32 LE | payload`, where
//! `len` is the payload's length and the CRC covers `points` and the payload. A record that
//! is cut short or fails its checksum (a write torn by a crash or power loss) ends its
//! segment: it and anything after it in that segment are skipped, counted, and cut off.
//! The read position is kept in `cursor` (segment id and offset, with its own CRC),
//! replaced atomically after each acknowledged record, so a restart resumes where the
//! previous run stopped instead of sending the oldest segment again.
//!
//! # Bound
//! The total size of the segment files never exceeds `max_bytes`: to make room, whole
//! segments are deleted oldest first and their unsent points counted as dropped.
//!
//! The spool does blocking file I/O; one owner (the sink's worker) calls it.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 12;
const CURSOR_FILE: &str = "cursor";
const SEGMENT_EXT: &str = "seg";

/// Where a record sits, returned with it so it can be acknowledged once written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    segment: u64,
    /// Offset just past the record.
    end: u64,
}

/// A batch read back from the spool.
#[derive(Debug)]
pub struct SpoolRecord {
    pub pos: RecordPos,
    pub points: u32,
    pub payload: Vec<u8>,
}

/// What became of an append.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Unsent points deleted with old segments to make room.
    pub dropped_points: u64,
    /// The batch was larger than the whole spool and was not kept.
    pub refused: bool,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
    /// Points in each record, with the record's end offset, in order.
    records: VecDeque<(u64, u32)>,
}

impl Segment {
    fn points(&self) -> u64 {
        self.records.iter().map(|(_, p)| u64::from(*p)).sum()
    }
}

/// The disk spool. See the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; the last one is the one appended to.
    segments: VecDeque<Segment>,
    /// Offset of the next unread record in the oldest segment.
    head_offset: u64,
    writer: Option<File>,
    total_bytes: u64,
    pending_points: u64,
    /// Records skipped as torn or corrupt since this spool was opened.
    corrupt_records: u64,
    /// The id of the next segment: ids are never reused, so a saved cursor can never point
    /// into a newer segment of the same name.
    next_id: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, checking every record: torn or corrupt
    /// tails are cut off and counted in [`Spool::corrupt_records`]. Reading a full spool
    /// reads `max_bytes` from disk once.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            if let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            // Small enough that dropping one segment loses little, large enough that a
            // full spool has few files.
            segment_bytes: (max_bytes / 16).clamp(4096, 64 << 20),
            segments: VecDeque::new(),
            head_offset: 0,
            writer: None,
            total_bytes: 0,
            pending_points: 0,
            corrupt_records: 0,
            next_id: ids.last().map_or(1, |id| id + 1),
        };
        for id in ids {
            let seg = spool.scan_segment(id)?;
            spool.total_bytes += seg.bytes;
            spool.segments.push_back(seg);
        }
        spool.restore_cursor();
        spool.pending_points = spool.segments.iter().map(Segment::points).sum();
        Ok(spool)
    }

    /// Reads a segment's records, cutting it at the first torn or corrupt record.
    fn scan_segment(&mut self, id: u64) -> io::Result<Segment> {
        let path = self.segment_path(id);
        let data = fs::read(&path)?;
        let mut records = VecDeque::new();
        let mut off = 0usize;
        while off < data.len() {
            match parse_record(&data[off..]) {
                Some((points, _, size)) => {
                    off += size;
                    records.push_back((off as u64, points));
                }
                None => {
                    tracing::warn!(
                        segment = %path.display(),
                        offset = off,
                        skipped_bytes = data.len() - off,
                        "time-series spool: torn or corrupt record, skipping the rest"
                    );
                    self.corrupt_records += 1;
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(off as u64)?;
                    f.sync_data()?;
                    break;
                }
            }
        }
        Ok(Segment {
            id,
            bytes: off as u64,
            records,
        })
    }

    /// Applies the saved read position: acknowledged records of the oldest segment are
    /// forgotten, older segments (fully sent before a crash) deleted.
    fn restore_cursor(&mut self) {
        let Some((seg_id, offset)) = self.read_cursor() else {
            return;
        };
        self.next_id = self.next_id.max(seg_id + 1);
        while let Some(first) = self.segments.front() {
            if first.id >= seg_id {
                break;
            }
            self.remove_oldest();
        }
        if let Some(first) = self.segments.front_mut()
            && first.id == seg_id
        {
            while first.records.front().is_some_and(|(end, _)| *end <= offset) {
                first.records.pop_front();
            }
            self.head_offset = offset.min(first.bytes);
        }
    }

    fn read_cursor(&self) -> Option<(u64, u64)> {
        let data = fs::read(self.dir.join(CURSOR_FILE)).ok()?;
        let bytes: [u8; 20] = data.get(..20)?.try_into().ok()?;
        let seg = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
        let off = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
        let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
        (crc32fast::hash(&bytes[..16]) == crc).then_some((seg, off))
    }

    fn write_cursor(&self, seg: u64, off: u64) -> io::Result<()> {
        let mut buf = [0u8; 20];
        buf[0..8].copy_from_slice(&seg.to_le_bytes());
        buf[8..16].copy_from_slice(&off.to_le_bytes());
        let crc = crc32fast::hash(&buf[..16]);
        buf[16..20].copy_from_slice(&crc.to_le_bytes());
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, buf)?;
        fs::rename(tmp, self.dir.join(CURSOR_FILE))
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}.{SEGMENT_EXT}"))
    }

    /// Appends a batch of `points` points, deleting the oldest segments if that is what it
    /// takes to stay within the byte bound. Synced to disk before returning.
    pub fn append(&mut self, points: u32, payload: &[u8]) -> io::Result<AppendOutcome> {
        let size = (HEADER + payload.len()) as u64;
        let mut outcome = AppendOutcome::default();
        if size > self.max_bytes {
            outcome.refused = true;
            return Ok(outcome);
        }
        let roll = match self.segments.back() {
            None => true,
            Some(last) => last.bytes > 0 && last.bytes + size > self.segment_bytes,
        };
        if roll || self.writer.is_none() {
            self.open_writer(roll)?;
        }
        while self.total_bytes + size > self.max_bytes && self.segments.len() > 1 {
            outcome.dropped_points += self.remove_oldest();
        }
        if self.total_bytes + size > self.max_bytes {
            // Only the segment being written is left, and it is full of older data.
            outcome.dropped_points += self.remove_oldest();
            self.open_writer(true)?;
        }
        let mut record = Vec::with_capacity(size as usize);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&points.to_le_bytes());
        crc.update(payload);
        record.extend_from_slice(&crc.finalize().to_le_bytes());
        record.extend_from_slice(&points.to_le_bytes());
        record.extend_from_slice(payload);
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::other("spool writer is not open"))?;
        writer.write_all(&record)?;
        writer.sync_data()?;
        let last = self
            .segments
            .back_mut()
            .ok_or_else(|| io::Error::other("spool has no segment to append to"))?;
        last.bytes += size;
        last.records.push_back((last.bytes, points));
        self.total_bytes += size;
        self.pending_points += u64::from(points);
        Ok(outcome)
    }

    /// Opens the newest segment for appending, or a new one when `new` (or there is none).
    fn open_writer(&mut self, new: bool) -> io::Result<()> {
        if new || self.segments.is_empty() {
            let id = self.next_id;
            self.next_id += 1;
            self.segments.push_back(Segment {
                id,
                bytes: 0,
                records: VecDeque::new(),
            });
        }
        let Some(last) = self.segments.back() else {
            return Err(io::Error::other("spool has no segment to append to"));
        };
        let path = self.segment_path(last.id);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if new {
            // The new file's directory entry must survive a power loss too.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
        }
        self.writer = Some(file);
        Ok(())
    }

    /// Deletes the oldest segment; returns its unsent points.
    fn remove_oldest(&mut self) -> u64 {
        let Some(seg) = self.segments.pop_front() else {
            return 0;
        };
        let unsent = seg.points();
        self.total_bytes -= seg.bytes;
        self.pending_points -= unsent.min(self.pending_points);
        self.head_offset = 0;
        if self.segments.is_empty() {
            self.writer = None;
        }
        if let Err(e) = fs::remove_file(self.segment_path(seg.id)) {
            tracing::warn!(error = %e, segment = seg.id, "time-series spool: cannot delete segment");
        }
        unsent
    }

    /// The oldest unsent record, if any. Reading it does not remove it: call [`Spool::ack`]
    /// once it is written.
    pub fn peek(&mut self) -> io::Result<Option<SpoolRecord>> {
        loop {
            let Some(first) = self.segments.front() else {
                return Ok(None);
            };
            let Some(&(end, points)) = first.records.front() else {
                if self.segments.len() > 1 {
                    // Fully sent and no longer written: delete it.
                    self.remove_oldest();
                    continue;
                }
                return Ok(None);
            };
            let mut f = File::open(self.segment_path(first.id))?;
            f.seek(SeekFrom::Start(self.head_offset))?;
            let mut buf = vec![0u8; (end - self.head_offset) as usize];
            f.read_exact(&mut buf)?;
            return match parse_record(&buf) {
                Some((p, payload, _)) if p == points => Ok(Some(SpoolRecord {
                    pos: RecordPos {
                        segment: first.id,
                        end,
                    },
                    points,
                    payload: payload.to_vec(),
                })),
                _ => {
                    // Changed on disk under us: skip the record rather than loop on it.
                    self.corrupt_records += 1;
                    self.ack(RecordPos {
                        segment: first.id,
                        end,
                    })?;
                    continue;
                }
            };
        }
    }

    /// Marks the record at `pos` (returned by [`Spool::peek`]) as written. A record whose
    /// segment was deleted meanwhile (the spool was full) is ignored.
    pub fn ack(&mut self, pos: RecordPos) -> io::Result<()> {
        let Some(first) = self.segments.front_mut() else {
            return Ok(());
        };
        if first.id != pos.segment || first.records.front().map(|r| r.0) != Some(pos.end) {
            return Ok(());
        }
        if let Some((_, points)) = first.records.pop_front() {
            self.pending_points -= u64::from(points).min(self.pending_points);
        }
        self.head_offset = pos.end;
        let done = first.records.is_empty() && self.segments.len() > 1;
        self.write_cursor(pos.segment, pos.end)?;
        if done {
            self.remove_oldest();
        }
        Ok(())
    }

    /// Points waiting in the spool.
    pub fn pending_points(&self) -> u64 {
        self.pending_points
    }

    /// Bytes of segment files on disk (including sent records of the oldest segment).
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Torn or corrupt records skipped since the spool was opened.
    pub fn corrupt_records(&self) -> u64 {
        self.corrupt_records
    }
}

/// Parses one record at the start of `data`: `(points, payload, record size)`, or `None`
/// when it is cut short or its checksum does not match.
fn parse_record(data: &[u8]) -> Option<(u32, &[u8], usize)> {
    let header = data.get(..HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let points = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let payload = data.get(HEADER..HEADER.checked_add(len)?)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&header[8..12]);
    h.update(payload);
    (h.finalize() == crc).then_some((points, payload, HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u32) -> Vec<u8> {
        format!("m f={i}i {i}\n").into_bytes()
    }

    fn drain(spool: &mut Spool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(r) = spool.peek().expect("peek") {
            out.push(r.payload);
            spool.ack(r.pos).expect("ack");
        }
        out
    }

    #[test]
    fn records_come_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
            for i in 0..100 {
                s.append(1, &batch(i)).expect("append");
            }
            assert_eq!(s.pending_points(), 100);
            // Send (acknowledge) the first 30, then "crash".
            for _ in 0..30 {
                let r = s.peek().expect("peek").expect("record");
                s.ack(r.pos).expect("ack");
            }
        }
        let mut s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(s.pending_points(), 70);
        let got = drain(&mut s);
        let want: Vec<Vec<u8>> = (30..100).map(batch).collect();
        assert_eq!(got, want);
        assert_eq!(s.pending_points(), 0);
        // Appending after a full drain works and is read back.
        s.append(3, &batch(1000)).expect("append");
        assert_eq!(drain(&mut s), vec![batch(1000)]);
    }

    #[test]
    fn segment_ids_are_never_reused_under_a_saved_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
            s.append(1, &batch(0)).expect("append");
            let r = s.peek().expect("peek").expect("record");
            s.ack(r.pos).expect("ack");
        }
        // The segments are gone (deleted by hand), the cursor stays behind.
        for e in fs::read_dir(dir.path()).expect("dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == SEGMENT_EXT) {
                fs::remove_file(p).expect("remove");
            }
        }
        {
            let mut s = Spool::open(dir.path(), 1 << 20).expect("reopen");
            s.append(1, &batch(1)).expect("append");
        }
        // A new segment named like the old one would be skipped as already sent.
        let mut s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(drain(&mut s), vec![batch(1)]);
    }

    #[test]
    fn a_torn_tail_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
            for i in 0..5 {
                s.append(1, &batch(i)).expect("append");
            }
        }
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let len = fs::metadata(&seg).expect("segment").len();
        // A crash in the middle of writing the last record.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open segment")
            .set_len(len - 3)
            .expect("truncate");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(s.corrupt_records(), 1);
        assert_eq!(s.pending_points(), 4);
        // New records after the cut are readable.
        s.append(1, &batch(5)).expect("append");
        let want: Vec<Vec<u8>> = [0, 1, 2, 3, 5].into_iter().map(batch).collect();
        assert_eq!(drain(&mut s), want);
    }

    #[test]
    fn a_corrupt_record_ends_its_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = Spool::open(dir.path(), 1 << 20).expect("open");
            for i in 0..3 {
                s.append(1, &batch(i)).expect("append");
            }
        }
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let mut data = fs::read(&seg).expect("read");
        let second = HEADER + batch(0).len() + HEADER;
        data[second] ^= 0xff; // flip a payload byte of record 1
        fs::write(&seg, data).expect("write");
        let mut s = Spool::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(s.corrupt_records(), 1);
        assert_eq!(drain(&mut s), vec![batch(0)]);
    }

    #[test]
    fn the_bound_drops_oldest_segments_and_counts_their_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 64 * 1024;
        let mut s = Spool::open(dir.path(), max).expect("open");
        let payload = vec![b'x'; 1000];
        let mut dropped = 0;
        for _ in 0..500 {
            let o = s.append(10, &payload).expect("append");
            assert!(!o.refused);
            dropped += o.dropped_points;
            assert!(s.bytes() <= max, "{} > {max}", s.bytes());
        }
        assert!(dropped > 0);
        // Everything appended is either still pending or counted as dropped.
        assert_eq!(s.pending_points() + dropped, 500 * 10);
        let kept = drain(&mut s).len() as u64;
        assert_eq!(kept * 10 + dropped, 5000);
        // What survives is the newest data: the last record is still there.
        let too_big = vec![b'y'; max as usize];
        assert!(s.append(1, &too_big).expect("append").refused);
    }

    #[test]
    fn the_bound_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let max = 32 * 1024;
        {
            let mut s = Spool::open(dir.path(), max).expect("open");
            for _ in 0..20 {
                s.append(1, &[b'a'; 1000]).expect("append");
            }
        }
        let mut s = Spool::open(dir.path(), max).expect("reopen");
        assert_eq!(s.pending_points(), 20);
        let mut dropped = 0;
        for _ in 0..40 {
            dropped += s.append(1, &[b'b'; 1000]).expect("append").dropped_points;
            assert!(s.bytes() <= max);
        }
        assert_eq!(s.pending_points() + dropped, 60);
        let payloads = drain(&mut s);
        // Oldest dropped first: once a `b` batch appears, no `a` follows.
        let first_b = payloads.iter().position(|p| p[0] == b'b').expect("b kept");
        assert!(payloads[first_b..].iter().all(|p| p[0] == b'b'));
    }
}
