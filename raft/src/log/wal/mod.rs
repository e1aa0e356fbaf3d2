//! The raft log on disk: segment files, record framing, crc32, and recovery. This module (with
//! `record.rs`, the payload of a frame) is the only one that knows the layout.
//!
//! ## Layout
//! A directory of segment files `<id:020>.wal`, ids ascending from 1. A segment is the 8-byte
//! magic `KLSNLOG1` followed by frames:
//!
//! | bytes | field                                              |
//! |-------|----------------------------------------------------|
//! | 4     | payload length, u32 little-endian                  |
//! | 4     | crc32 of the payload                               |
//! | 4     | crc32 of the 8 bytes above (so a bad length is seen as bad, not trusted) |
//! | n     | payload: a kind byte and the record ([`Record`])   |
//!
//! The log is the sequence of records over all segments in order; replaying it through
//! `LogMem::apply` rebuilds the vote, the purge point and the entries. Every segment starts
//! with a [`Record::Checkpoint`] of the vote and purge point as they were when it was created,
//! so replay can start at any segment: that is what lets `purge` delete whole old segments.
//!
//! ## Recovery rules
//! - A segment is fsynced before the next one is created, and a new segment is fsynced (with its
//!   directory) before anything is written after its checkpoint. So only the **last** segment
//!   can end in a partly written batch.
//! - In the last segment, a damaged frame with nothing but zeros (or nothing) after it is a torn
//!   tail — a batch whose fsync never finished, so nothing in it was acknowledged — if it looks
//!   like one: it runs past the end of the file, or its header is zeros, or (etcd's
//!   `isTornEntry`) one of the 512-byte disk sectors it spans holds only zeros within it. It is
//!   cut off (and the cut fsynced) and the member starts. A complete frame whose bytes are all
//!   there but wrong is damage to a record that may have been acknowledged: corruption, below.
//! - Any other damage (a bad crc with data after it, a damaged non-last segment, a frame whose
//!   crc is right but whose payload does not decode, an entry missing after replay, e.g. a lost
//!   segment) is loss of acknowledged data: opening fails with [`LogError::Corrupt`], changing
//!   nothing on disk, and the member does not start.
//! - `purge` deletes old segments oldest first, only after its record is durable. A crash
//!   halfway leaves a gap in the segment ids; replay starts after the gap and the segments
//!   before it are deleted once the replayed log checks out.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod record;

use super::LogError;
use crate::types::{LogId, Vote};
pub(crate) use record::Record;
use record::{decode, encode};

const MAGIC: &[u8; 8] = b"KLSNLOG1";
const HEADER: usize = 12;

/// The open log: the segment being appended to and what a new segment's checkpoint must hold.
pub(crate) struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    /// Segments left over from an interrupted purge: on disk, not part of the log.
    stale: Vec<u64>,
    /// Segment ids on disk, ascending; the last one is being appended to.
    segments: Vec<u64>,
    file: Arc<File>,
    len: u64,
    /// The current segment holds nothing but its checkpoint (so a big batch does not roll it).
    fresh: bool,
    /// Write batches written so far; the flusher's durability watermark counts in these.
    seq: u64,
    head: Head,
}

/// The vote and purge point as of the records written so far: a new segment's checkpoint.
#[derive(Default)]
struct Head {
    vote: Option<Vote>,
    purged: Option<LogId>,
}

impl Head {
    fn track(&mut self, rec: &Record) {
        match rec {
            Record::Checkpoint { vote, purged } => {
                self.vote = *vote;
                self.purged = self.purged.max(*purged);
            }
            Record::Vote(v) => self.vote = Some(*v),
            Record::Purge(p) => self.purged = self.purged.max(Some(*p)),
            Record::Entry(_) | Record::TruncateAfter(_) => {}
        }
    }

    fn checkpoint(&self) -> Record {
        Record::Checkpoint {
            vote: self.vote,
            purged: self.purged,
        }
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, replaying every record to `replay` with the id of
    /// the segment it is in, then readies the last segment for appending.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        mut replay: impl FnMut(u64, Record),
    ) -> Result<Wal, LogError> {
        let io = |e| LogError::io(dir, e);
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io)?;
            // The directory entry itself must survive a crash, or the whole log would vanish.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        let mut segments = list_segments(dir).map_err(io)?;
        // Old segments are deleted oldest first, so a gap means everything before it was being
        // deleted by a purge when the member stopped: replay starts after it, and the stale
        // segments are deleted once the replayed log has been checked (`remove_stale`).
        let stale = match segments.windows(2).rposition(|w| w[1] != w[0] + 1) {
            Some(gap) => segments.drain(..=gap).collect(),
            None => Vec::new(),
        };
        let mut head = Head::default();
        let mut tail = None;
        for (i, &id) in segments.iter().enumerate() {
            let path = segment_path(dir, id);
            let bytes = fs::read(&path).map_err(|e| LogError::io(&path, e))?;
            let is_last = i + 1 == segments.len();
            let end = scan(&path, &bytes, is_last, |rec| {
                head.track(&rec);
                replay(id, rec);
            })?;
            if is_last {
                if end < bytes.len() {
                    tracing::warn!(
                        "raft log {}: dropping a torn tail of {} bytes at byte {end}",
                        path.display(),
                        bytes.len() - end
                    );
                }
                tail = Some((id, end));
            }
        }
        let (file, len, fresh) = match tail {
            Some((id, end)) if end > MAGIC.len() => {
                let path = segment_path(dir, id);
                let reopen = || {
                    let file = OpenOptions::new().append(true).open(&path)?;
                    file.set_len(end as u64)?;
                    file.sync_all()?;
                    Ok(file)
                };
                let file = reopen().map_err(|e| LogError::io(&path, e))?;
                (file, end as u64, false)
            }
            _ => {
                // No segment, or not even the last one's checkpoint survived: start it over.
                let id = segments.pop().unwrap_or(1);
                remove_segment(dir, id).map_err(io)?;
                segments.push(id);
                let (file, len) = create_segment(dir, id, &head).map_err(io)?;
                (file, len, true)
            }
        };
        Ok(Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            stale,
            segments,
            file: Arc::new(file),
            len,
            fresh,
            seq: 0,
            head,
        })
    }

    /// Appends `records` as one batch (one `write`), starting a new segment first if this one
    /// is full. Returns the batch's sequence number and the segment it went to. Not durable
    /// until a `sync_point` taken afterwards has been fsynced.
    #[cfg(test)]
    pub(crate) fn write(&mut self, records: &[Record]) -> io::Result<(u64, u64)> {
        let buf = encode_batch(records);
        self.write_encoded(&buf, records)
    }

    /// Whether a batch of `len` encoded bytes starts a new segment (which fsyncs and creates
    /// files, so the caller moves it off the async executor).
    pub(crate) fn rolls(&self, len: usize) -> bool {
        !self.fresh && self.len + len as u64 > self.segment_bytes
    }

    /// [`Wal::write`] of a batch [`encode_batch`] encoded.
    pub(crate) fn write_encoded(
        &mut self,
        buf: &[u8],
        records: &[Record],
    ) -> io::Result<(u64, u64)> {
        if self.rolls(buf.len()) {
            self.roll()?;
        }
        (&*self.file).write_all(buf)?;
        self.len += buf.len() as u64;
        self.fresh = false;
        self.seq += 1;
        for r in records {
            self.head.track(r);
        }
        Ok((self.seq, self.current()))
    }

    /// The batches written so far and the file that holds the newest of them: fsyncing that
    /// file makes all of them durable (older segments were fsynced when they were closed).
    pub(crate) fn sync_point(&self) -> (u64, Arc<File>) {
        (self.seq, Arc::clone(&self.file))
    }

    /// Deletes the segments older than `keep`, never the current one. Every record a later
    /// replay needs is in `keep` or later, because `keep` starts with a checkpoint and holds the
    /// first live entry; so a crash halfway (a gap, handled by `open`) loses nothing.
    pub(crate) fn remove_segments_before(&mut self, keep: u64) -> io::Result<()> {
        let keep = keep.min(self.current());
        while self.segments.first().is_some_and(|&id| id < keep) {
            remove_segment(&self.dir, self.segments[0])?;
            self.segments.remove(0);
        }
        Ok(())
    }

    /// Deletes the segments an interrupted purge left behind.
    pub(crate) fn remove_stale(&mut self) -> io::Result<()> {
        for id in std::mem::take(&mut self.stale) {
            tracing::info!("raft log: removing segment {id}, left over from a purge");
            remove_segment(&self.dir, id)?;
        }
        Ok(())
    }

    /// The segment being appended to.
    pub(crate) fn current(&self) -> u64 {
        *self
            .segments
            .last()
            .expect("the log always has a current segment")
    }

    #[cfg(test)]
    pub(crate) fn segment_ids(&self) -> Vec<u64> {
        self.segments.clone()
    }

    /// Closes the current segment, fsynced, so that only the newest segment can ever have a
    /// torn tail, and continues in a new one.
    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let id = self.current() + 1;
        let (file, len) = create_segment(&self.dir, id, &self.head)?;
        self.segments.push(id);
        self.file = Arc::new(file);
        self.len = len;
        self.fresh = true;
        Ok(())
    }
}

/// Creates segment `id` holding the magic and a checkpoint of `head`, fsynced together with the
/// directory entry before anything else goes into it. Returns the file and its length.
fn create_segment(dir: &Path, id: u64, head: &Head) -> io::Result<(File, u64)> {
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(segment_path(dir, id))?;
    let mut buf = MAGIC.to_vec();
    encode_frame(&head.checkpoint(), &mut buf);
    file.write_all(&buf)?;
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok((file, buf.len() as u64))
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for e in fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn remove_segment(dir: &Path, id: u64) -> io::Result<()> {
    match fs::remove_file(segment_path(dir, id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replays the frames of one segment; returns where the valid data ends (the file length unless
/// the last segment has a torn tail).
fn scan(
    path: &Path,
    bytes: &[u8],
    is_last: bool,
    mut replay: impl FnMut(Record),
) -> Result<usize, LogError> {
    let corrupt = |offset: usize, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let zeros = |from: usize| {
        bytes
            .get(from..)
            .unwrap_or_default()
            .iter()
            .all(|&b| b == 0)
    };
    match bytes.get(..MAGIC.len()) {
        Some(m) if m == MAGIC => {}
        _ if is_last && (bytes.len() < MAGIC.len() || zeros(0)) => return Ok(0),
        _ => {
            return Err(corrupt(
                0,
                "not a keelson raft log segment (bad magic)".into(),
            ))
        }
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let (damage, torn) = match frame_at(bytes, at) {
            Ok((payload, next)) => {
                let rec = decode(payload).map_err(|e| corrupt(at, e))?;
                replay(rec);
                at = next;
                continue;
            }
            Err(Damage::ShortHeader) => ("incomplete frame header", true),
            Err(Damage::BadHeader) => ("frame header crc mismatch", zeros(at)),
            Err(Damage::ShortPayload) => ("incomplete payload", true),
            Err(Damage::BadPayload { end }) => (
                "payload crc mismatch",
                zeros(end) && has_zeroed_sector(&bytes[at + HEADER..end], at + HEADER),
            ),
        };
        if is_last && torn {
            return Ok(at);
        }
        return Err(corrupt(at, damage.into()));
    }
    Ok(at)
}

/// Disk sector size, for etcd's torn-write test.
const SECTOR: usize = 512;

/// Whether `frame` (a payload, starting at file offset `at`) has a part that lies within one
/// disk sector and is all zeros: what a write torn between sectors leaves (etcd's
/// `isTornEntry`).
fn has_zeroed_sector(frame: &[u8], at: usize) -> bool {
    let mut i = 0;
    while i < frame.len() {
        let sector_end = ((at + i) / SECTOR + 1) * SECTOR - at;
        let end = sector_end.min(frame.len());
        if frame[i..end].iter().all(|&b| b == 0) {
            return true;
        }
        i = end;
    }
    false
}

enum Damage {
    ShortHeader,
    BadHeader,
    ShortPayload,
    BadPayload { end: usize },
}

/// The payload of the frame at `at` and where the next frame starts.
fn frame_at(bytes: &[u8], at: usize) -> Result<(&[u8], usize), Damage> {
    let header = bytes.get(at..at + HEADER).ok_or(Damage::ShortHeader)?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    if crc32fast::hash(&header[..8]) != word(8) {
        return Err(Damage::BadHeader);
    }
    let start = at + HEADER;
    let end = start + word(0) as usize;
    let payload = bytes.get(start..end).ok_or(Damage::ShortPayload)?;
    if crc32fast::hash(payload) != word(4) {
        return Err(Damage::BadPayload { end });
    }
    Ok((payload, end))
}

/// The bytes of one batch: its records' frames, back to back.
pub(crate) fn encode_batch(records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::new();
    for r in records {
        encode_frame(r, &mut buf);
    }
    buf
}

fn encode_frame(rec: &Record, out: &mut Vec<u8>) {
    let mut payload = Vec::new();
    encode(rec, &mut payload);
    let len = u32::try_from(payload.len()).expect("a raft log record is under 4 GiB");
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    let hcrc = crc32fast::hash(&header[..8]);
    header[8..].copy_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for tests that damage segment files on purpose.
    use super::*;

    pub(crate) fn segment_file(dir: &Path, id: u64) -> PathBuf {
        segment_path(dir, id)
    }

    /// Byte offsets of every frame in a segment file.
    pub(crate) fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
        let mut at = MAGIC.len();
        let mut out = Vec::new();
        while let Ok((_, next)) = frame_at(bytes, at) {
            out.push(at);
            at = next;
        }
        out
    }

    pub(crate) const FRAME_HEADER: usize = HEADER;

    pub(crate) fn round_trip(rec: &Record) -> Record {
        let mut buf = Vec::new();
        encode(rec, &mut buf);
        decode(&buf).expect("decodes")
    }
}
