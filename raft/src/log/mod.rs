//! openraft's log storage: the vote and the log entries, kept in memory for reading and in a
//! write-ahead log (`wal.rs`) for durability.
//!
//! Invariants:
//! - Every write (append, vote, truncate, purge) is one `Wal::write` batch, done on tokio's
//!   blocking pool, one at a time: openraft calls the write methods with `&mut self` and awaits
//!   each, and the WAL mutex orders them in the file in call order.
//! - Entries are readable (in `LogMem`) as soon as `append` returns; its callback fires only
//!   after an fsync that covers its batch (`flush.rs`). `save_vote`, `truncate_after` and
//!   `purge` return only after such an fsync. Because the file is ordered and an fsync covers
//!   everything written before it, a flush notification never overtakes an earlier write.
//! - Recovery replays the WAL through the same `LogMem::apply` the write path uses, so the
//!   state after a restart is the state after the last durable batch.
//! - The log does not persist the committed index (`save_committed` is openraft's no-op): the
//!   state machine stores its applied log id atomically with the data, which is what a restart
//!   needs.

mod flush;
#[cfg(test)]
mod tests;
pub(crate) mod wal;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::OptionalSend;
use parking_lot::{Mutex, RwLock};

use crate::types::{Entry, LogId, TypeConfig, Vote};
use wal::{Record, Wal};

/// Segment size at which the WAL starts a new file (and the unit `purge` frees space in).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Why the raft log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A record that was acknowledged is damaged. The member must not start: it would forget
    /// entries or a vote it promised to keep. Restore it from a snapshot, or remove it from the
    /// cluster and add it back empty.
    #[error(
        "raft log corrupt: {} at byte {offset}: {reason}; refusing to start this member",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("raft log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl LogError {
    pub(crate) fn io(path: &Path, source: io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What the log holds, as readers see it.
#[derive(Default)]
struct LogMem {
    /// Each entry with the WAL segment it was written to.
    entries: BTreeMap<u64, (Entry, u64)>,
    vote: Option<Vote>,
    purged: Option<LogId>,
}

impl LogMem {
    /// Applies one record; replay and the write path both come through here.
    fn apply(&mut self, segment: u64, rec: Record) {
        match rec {
            Record::Checkpoint { vote, purged } => {
                self.vote = vote;
                if let Some(p) = purged {
                    self.purge(p);
                }
            }
            Record::Entry(e) => {
                // An entry replaces any at or after its index (openraft truncates first anyway).
                let index = e.log_id.index;
                if self
                    .entries
                    .last_key_value()
                    .is_some_and(|(&last, _)| last >= index)
                {
                    self.entries.split_off(&index);
                }
                self.entries.insert(index, (e, segment));
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::TruncateAfter(id) => {
                self.entries.split_off(&id.map_or(0, |id| id.index + 1));
            }
            Record::Purge(p) => self.purge(p),
        }
    }

    fn purge(&mut self, upto: LogId) {
        if self.purged.as_ref() >= Some(&upto) {
            return;
        }
        self.entries = self.entries.split_off(&(upto.index + 1));
        self.purged = Some(upto);
    }

    /// The first index missing from the log, if any: before the first entry (which follows the
    /// purge point, or starts the log at 0 or 1) or between two entries. The write path never
    /// leaves one, so after replay it can only mean lost data, e.g. a deleted segment.
    fn hole(&self) -> Option<u64> {
        let mut indexes = self.entries.keys();
        let mut prev = *indexes.next()?;
        let expected = self.purged.map_or(0, |p| p.index + 1);
        if prev > expected && !(self.purged.is_none() && prev == 1) {
            return Some(expected);
        }
        for &i in indexes {
            if i != prev + 1 {
                return Some(prev + 1);
            }
            prev = i;
        }
        None
    }

    fn last_log_id(&self) -> Option<LogId> {
        match self.entries.last_key_value() {
            Some((_, (e, _))) => Some(e.log_id),
            None => self.purged,
        }
    }
}

struct Shared {
    mem: RwLock<LogMem>,
    wal: Mutex<Wal>,
    flush: Mutex<flush::FlushState>,
}

/// The raft log of one member: openraft's [`RaftLogStorage`].
pub struct LogStore {
    shared: Arc<Shared>,
    /// Sequence number of the last batch written; an empty append waits for it.
    last_seq: u64,
}

/// A read handle on the log (replication tasks hold these).
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens the log in `dir`, creating it if needed. Fails with [`LogError::Corrupt`] if an
    /// acknowledged record is damaged; a torn tail (an unacknowledged last batch) is dropped.
    pub async fn open(dir: impl AsRef<Path>) -> Result<LogStore, LogError> {
        LogStore::open_with(dir, DEFAULT_SEGMENT_BYTES).await
    }

    /// [`LogStore::open`] with a given segment size.
    pub async fn open_with(
        dir: impl AsRef<Path>,
        segment_bytes: u64,
    ) -> Result<LogStore, LogError> {
        let path = dir.as_ref().to_path_buf();
        let opened = tokio::task::spawn_blocking(move || {
            let mut mem = LogMem::default();
            let mut wal = Wal::open(&path, segment_bytes, |seg, rec| mem.apply(seg, rec))?;
            if let Some(missing) = mem.hole() {
                return Err(LogError::Corrupt {
                    path,
                    offset: 0,
                    reason: format!("entry {missing} is missing: a segment was lost"),
                });
            }
            wal.remove_stale().map_err(|e| LogError::io(&path, e))?;
            Ok((mem, wal))
        })
        .await
        .map_err(|e| LogError::io(dir.as_ref(), io::Error::other(e)))?;
        let (mem, wal) = opened?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                mem: RwLock::new(mem),
                wal: Mutex::new(wal),
                flush: Mutex::new(flush::FlushState::default()),
            }),
            last_seq: 0,
        })
    }

    /// Writes `records` as one batch; returns its sequence number and segment, and the
    /// records back.
    ///
    /// A batch that fits the current segment is written right here: a `write` into the page
    /// cache takes microseconds, and a hop to the blocking pool and back would sit on every
    /// write's critical path twice (the leader's before it replicates, each follower's before
    /// it fsyncs). A batch that starts a new segment (fsync of the old one, a new file) goes
    /// to the blocking pool. Durability is the flush thread's business either way.
    async fn write(&mut self, records: Vec<Record>) -> io::Result<(u64, u64, Vec<Record>)> {
        self.shared.check()?;
        let buf = wal::encode_batch(&records);
        let inline = {
            let mut wal = self.shared.wal.lock();
            (!wal.rolls(buf.len())).then(|| wal.write_encoded(&buf, &records))
        };
        let written = match inline {
            Some(r) => r.map(|(seq, segment)| (seq, segment, records)),
            None => {
                let shared = Arc::clone(&self.shared);
                tokio::task::spawn_blocking(move || {
                    let r = shared.wal.lock().write_encoded(&buf, &records);
                    r.map(|(seq, segment)| (seq, segment, records))
                })
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
            }
        };
        match written {
            Ok((seq, segment, records)) => {
                self.last_seq = seq;
                Ok((seq, segment, records))
            }
            Err(e) => {
                // A batch may be half written: nothing may follow it.
                self.shared.fail(&e);
                Err(e)
            }
        }
    }

    /// Writes one record, applies it to memory and returns once it is durable.
    async fn write_durably(&mut self, rec: Record) -> io::Result<()> {
        let (seq, segment, mut recs) = self.write(vec![rec]).await?;
        let (tx, rx) = TypeConfig::oneshot();
        self.shared.when_durable(seq, IOFlushed::signal(tx));
        rx.await.map_err(io::Error::other)??;
        if let Some(rec) = recs.pop() {
            self.shared.mem.write().apply(segment, rec);
        }
        Ok(())
    }

    #[cfg(test)]
    fn segment_ids(&self) -> Vec<u64> {
        self.shared.wal.lock().segment_ids()
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let mem = self.shared.mem.read();
        Ok(mem
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.mem.read().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let mem = self.shared.mem.read();
        Ok(LogState {
            last_purged_log_id: mem.purged,
            last_log_id: mem.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Readers see the vote only once it is durable: replication acts on it.
        self.write_durably(Record::Vote(*vote)).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let records: Vec<Record> = entries.into_iter().map(Record::Entry).collect();
        let seq = if records.is_empty() {
            self.last_seq
        } else {
            let (seq, segment, records) = self.write(records).await?;
            let mut mem = self.shared.mem.write();
            for rec in records {
                mem.apply(segment, rec);
            }
            seq
        };
        self.shared.when_durable(seq, callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.write_durably(Record::TruncateAfter(last_log_id)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.write_durably(Record::Purge(log_id)).await?;
        // The segment holding the first live entry (or the current one, if none) starts with a
        // checkpoint at least as new as everything before it, so older segments can go.
        let keep = {
            let mem = self.shared.mem.read();
            mem.entries.first_key_value().map(|(_, (_, seg))| *seg)
        };
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut wal = shared.wal.lock();
            let keep = keep.unwrap_or_else(|| wal.current());
            wal.remove_segments_before(keep)
        })
        .await
        .map_err(io::Error::other)?
    }
}
