//! [`Replica`]: the store as a replicated log's state machine (the raft crate's `Apply`).
//!
//! Under raft, every member applies the committed log entries in order through a `Replica`.
//! Each batch of commands goes through the core's one [`Writer`], exactly as the single
//! member's group commit does, and the raft crate's applied-state blob (opaque here: the last
//! applied log id and the membership) is written in the same atomic backend batch as
//! the commands' records and the `consistent_index`. So after a crash the store is the state
//! after some prefix of the log, and the blob names that prefix. The batch is not fsynced
//! before it is published: the replicated log is the durable record, and the raft crate calls
//! [`Replica::flush`] periodically and before the log is purged behind a snapshot.
//!
//! Invariants:
//! - **Blocking.** Every method does disk I/O and may wait for the writer lock: call them from
//!   a blocking context (`tokio::task::spawn_blocking`, a plain thread), never directly on an
//!   async executor's worker.
//! - **One writer.** Batches and restores are serialized with the single member's writes by
//!   the writer lock; raft calls `apply_batch` for entries in log order, one call at a time.
//! - **Failures stop the store.** An outer `Err` from `apply_batch` or `restore` (after it
//!   started writing) is non-deterministic (I/O, corrupt data): the in-memory state may then be
//!   ahead of what is durable, so the store refuses every later batch and restore with an
//!   error; the member must restart and recovers from what is durable. An inner `Err` is a
//!   deterministic rejection: that command changed nothing, on every member.
//! - **Snapshots are consistent.** [`Replica::snapshot`] copies the backend between two
//!   batches (`snapshot::consistent_pairs`), blob included, and reads the blob from that copy,
//!   so the blob always describes exactly the data. The copy is in the crc-framed snapshot file
//!   format with its sha256 trailer (`snapshot.rs`), so it is also a valid
//!   `keelson store snapshot restore` file.
//! - **Restore is all or nothing.** [`Replica::restore`] checks the whole snapshot and loads
//!   it into memory before touching anything (a bad snapshot is refused with the store
//!   unchanged), then replaces every backend record in one atomic, fsynced batch, and only
//!   then swaps the in-memory MVCC index, leases, alarms and auth in place. Leases get a fresh
//!   deadline of their full TTL, as after a restart.
//! - **Watchers miss nothing and get nothing twice.** Every member applies the same log, so a
//!   revision means the same events everywhere, and what the hub already published stays true.
//!   The revisions the snapshot adds beyond the last published one are read back from the
//!   restored records and published in order, as if applied one by one, so synced watchers go
//!   on from where they were. If the snapshot's compaction removed part of that history, the
//!   hub turns every synced watcher into a lagging one instead (`WatchHub::restored`, etcd's
//!   `watchableStore.Restore`), so each gets the compacted cancel, or its history from the
//!   backend if it still reaches back far enough.

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use keelson_proto::mvccpb::KeyValue;
use prost::Message;

use crate::alarm::Alarms;
use crate::apply::{Command, Durability, Exclusive, Response};
use crate::auth::AuthStore;
use crate::backend::{Backend, MemBackend, WriteBatch};
use crate::core::{attach_leases, Core};
use crate::error::{Error, Result};
use crate::keys;
use crate::lease::Lessor;
use crate::mvcc::{delete_event, put_event, Mvcc, RevisionEvents};
use crate::snapshot;

/// Revisions read back and published at a time when a restore moves the store ahead.
const PUBLISH_REVS: i64 = 1000;

/// A handle on a member's store for the replicated log. Cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Replica {
    core: Arc<Core>,
}

impl Replica {
    pub(crate) fn new(core: Arc<Core>) -> Replica {
        Replica { core }
    }

    /// Applies `commands` (each with its log index, ascending) in order and stores
    /// `raft_applied`, in one atomic backend batch with the last command's index as the
    /// `consistent_index` (left as it is when `commands` is empty; the blob is stored anyway),
    /// durable after the next [`Replica::flush`]; then publishes the new revision to readers and the events
    /// to watchers. One result per command: its response, or a deterministic rejection. `Err`:
    /// a non-deterministic failure, after which the store refuses everything. Blocking.
    pub fn apply_batch(
        &self,
        commands: Vec<(u64, Command)>,
        raft_applied: Vec<u8>,
    ) -> Result<Vec<Result<Response>>> {
        debug_assert!(
            commands.windows(2).all(|w| w[0].0 < w[1].0),
            "log indexes ascend"
        );
        let index = commands.last().map(|(i, _)| *i);
        self.core.writer.apply_group(
            commands.iter().map(|(_, c)| c),
            index,
            Some(&raft_applied),
            Durability::Deferred,
        )
    }

    /// Makes every batch applied so far durable (fsync). Blocking; runs alongside batches.
    pub fn flush(&self) -> Result<()> {
        self.core.backend.flush()
    }

    /// The `raft_applied` blob of the last batch or restore; `None` for a store that never had
    /// one. Blocking.
    pub fn raft_applied(&self) -> Result<Option<Vec<u8>>> {
        let v = self
            .core
            .backend
            .get(&keys::meta_key(keys::META_RAFT_APPLIED))?;
        v.map(|v| unframe_blob(&v)).transpose()
    }

    /// The log index of the last applied command (`consistent_index`; 0 if none).
    pub fn applied_index(&self) -> u64 {
        self.core.applied_index()
    }

    /// etcd's HashKV at revision `rev` (0: the current one): (hash, compact revision or -1,
    /// the current revision), or `Compacted` / `FutureRev`. Blocking (it hashes every version);
    /// the initial corruption check compares it with the peers' (`keelson-raft`'s `corrupt.rs`).
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64)> {
        crate::server::maintenance::hash_kv(&self.core, rev)
    }

    /// Renews lease `id`'s deadline in this member's lessor (KeepAlive reaching the leader,
    /// which keeps lease time): its TTL, or `LeaseNotFound` (unknown, or already expired).
    pub fn renew_lease(&self, id: i64) -> Result<i64> {
        self.core.lead_leases();
        self.core.lessor.renew(id)
    }

    /// Lease `id` as this member's lessor sees it (TimeToLive reaching the leader).
    pub fn lease_time_to_live(&self, id: i64) -> Result<crate::LeaseStatus> {
        self.core.lead_leases();
        self.core.lessor.time_to_live(id)
    }

    /// A consistent copy of the whole store, taken between two batches, and the
    /// `raft_applied` blob it holds. Blocking; runs alongside batches (it does not stop them
    /// unless writes keep landing during its scan).
    pub fn snapshot(&self) -> Result<(Option<Vec<u8>>, Vec<u8>)> {
        let pairs = snapshot::consistent_pairs(&self.core)?;
        let key = keys::meta_key(keys::META_RAFT_APPLIED);
        let blob = pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| unframe_blob(v))
            .transpose()?;
        let mut data = snapshot::encode(&pairs);
        let sha = snapshot::digest(&data);
        data.extend_from_slice(&sha);
        Ok((blob, data))
    }

    /// Replaces the whole store with `snapshot` (from [`Replica::snapshot`] on any member),
    /// durably, blob included. A snapshot that fails its checks or does not load is refused
    /// with the store unchanged (`Error::InvalidArgument` / `Error::Corrupt`). Blocking.
    pub fn restore(&self, snapshot: &[u8]) -> Result<()> {
        let pairs = snapshot::decode(snapshot)?;
        let fresh = Loaded::from_pairs(&pairs, self.core.cfg.min_lease_ttl())?;
        let mut ex = self.core.writer.exclusive()?;
        // Under the writer lock the current revision is the newest the hub was given.
        let published = self.core.mvcc.current_revision();
        let batch = self.replacing_batch(pairs)?;
        if let Err(e) = self
            .core
            .backend
            .write(batch)
            .and_then(|()| self.core.backend.flush())
        {
            return Err(ex.fail(e));
        }
        let (current, compacted) = {
            let st = fresh.mvcc.state.read();
            (st.current, st.compacted)
        };
        self.core.mvcc.replace(fresh.mvcc);
        self.core.lessor.replace(fresh.lessor);
        self.core.alarms.replace(fresh.alarms);
        self.core.auth.replace(fresh.auth);
        if current < published {
            tracing::error!(
                "restored a snapshot at revision {current}, behind the published {published}: \
                 watchers will not see the revisions in between again"
            );
        } else if compacted > published + 1 {
            // The history the hub's synced watchers need is gone: they get the compacted cancel.
            self.core.hub.restored(current);
        } else if let Err(e) = self.publish_range(&ex, published + 1, current) {
            return Err(ex.fail(e));
        }
        ex.publish_revision(current);
        Ok(())
    }

    /// One batch that deletes every record the snapshot lacks and writes every one it has.
    fn replacing_batch(&self, pairs: Vec<crate::backend::Pair>) -> Result<WriteBatch> {
        let keep: HashSet<&[u8]> = pairs.iter().map(|(k, _)| k.as_slice()).collect();
        let (start, end) = keys::keyspace_bounds();
        let mut batch = WriteBatch::default();
        for item in self.core.backend.scan(&start, &end) {
            let (k, _) = item?;
            if !keep.contains(k.as_slice()) {
                batch.delete(k);
            }
        }
        drop(keep);
        for (k, v) in pairs {
            batch.put(k, v);
        }
        Ok(batch)
    }

    /// Publishes the restored revisions `from..=to`, read back from the backend's records, as
    /// the writer would have published them had it applied them one by one.
    fn publish_range(&self, ex: &Exclusive<'_>, from: i64, to: i64) -> Result<()> {
        let mut start = from;
        while start <= to {
            let end = to.min(start + PUBLISH_REVS - 1);
            ex.publish(self.read_events(start, end)?);
            start = end + 1;
        }
        Ok(())
    }

    /// The events of revisions `from..=to` from the revision records, with `prev_kv` from the
    /// index (left out where compacted, as the watch hub's history reads do).
    fn read_events(&self, from: i64, to: i64) -> Result<Vec<RevisionEvents>> {
        let mut revs: Vec<RevisionEvents> = Vec::new();
        let st = self.core.mvcc.state.read();
        let range = keys::rev_key_from(from)..keys::rev_key_from(to + 1);
        for item in self.core.backend.scan(&range.start, &range.end) {
            let (k, v) = item?;
            let (rev, tombstone) = keys::decode_rev_key(&k)?;
            let kv = KeyValue::decode(keys::unframe(&rev, &v)?)
                .map_err(|e| Error::Corrupt(format!("revision {rev:?}: {e}")))?;
            let created = !tombstone && kv.create_revision == kv.mod_revision && kv.version == 1;
            let at = rev.main - 1;
            let prev = if created || at < st.compacted {
                None
            } else {
                st.tree.get(&kv.key).and_then(|ki| ki.get(at)).cloned()
            };
            let ev = if tombstone {
                delete_event(kv.key, rev.main, prev)
            } else {
                put_event(kv, prev)
            };
            match revs.last_mut() {
                Some(last) if last.revision == rev.main => last.events.push(ev),
                _ => revs.push(RevisionEvents {
                    revision: rev.main,
                    events: vec![ev],
                }),
            }
        }
        Ok(revs)
    }
}

/// A snapshot's state loaded in memory, checked before the store is touched.
struct Loaded {
    mvcc: Mvcc,
    lessor: Lessor,
    alarms: Alarms,
    auth: AuthStore,
}

impl Loaded {
    fn from_pairs(pairs: &[crate::backend::Pair], min_lease_ttl: i64) -> Result<Loaded> {
        let mem = MemBackend::default();
        let mut batch = WriteBatch::default();
        for (k, v) in pairs {
            batch.put(k.clone(), v.clone());
        }
        mem.write(batch)?;
        let mvcc = Mvcc::open(&mem)?;
        let lessor = Lessor::open(&mem, min_lease_ttl)?;
        attach_leases(&mvcc, &lessor);
        Ok(Loaded {
            mvcc,
            lessor,
            alarms: Alarms::open(&mem)?,
            auth: AuthStore::open(&mem)?,
        })
    }
}

fn unframe_blob(v: &[u8]) -> Result<Vec<u8>> {
    Ok(keys::unframe(&keys::META_RAFT_APPLIED, v)?.to_vec())
}
