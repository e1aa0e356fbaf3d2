//! The revision layer: etcd's MVCC key-value store.
//!
//! Every change to the keyspace happens at a revision `{main, sub}`: one main revision per Put,
//! DeleteRange or Txn that changes something, one sub revision per key changed within it. The
//! first write to an empty store is main revision 2 (etcd starts at 1).
//!
//! State lives in memory in a `BTreeMap` from key to [`KeyIndex`] (its generations with the
//! values beside the revisions) and durably in the backend as one record per revision
//! (`keys.rs`). At start the tree is rebuilt by replaying the records in revision order.
//!
//! Visibility: there is a single writer (the applier). It applies commands into the tree at
//! revisions above `current`, collecting the backend records into a batch; only after the batch
//! is written and flushed does it advance `current` ([`Mvcc::publish`]). Readers read at
//! revisions `<= current`, so nothing that is not yet durable is ever served, while readers
//! never wait for an fsync. Writes inside the applier (txn compares, reads after writes in one
//! txn) read at the pending revision instead.
//!
//! Compaction drops history at or below a revision from the tree and returns the revisions to
//! delete from the backend; reads below the compacted revision fail with `Compacted`.

mod key_index;
mod read;
mod write;

pub(crate) use key_index::KeyIndex;
pub(crate) use read::RangeResult;
pub(crate) use write::WriteTxn;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use keelson_proto::mvccpb::{event::EventType, Event, KeyValue};
use parking_lot::RwLock;
use prost::Message;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::keys;

/// A point in the store's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// The events of one main revision, in sub-revision order.
#[derive(Debug, Clone)]
pub(crate) struct RevisionEvents {
    pub(crate) revision: i64,
    pub(crate) events: Vec<Event>,
}

pub(crate) struct State {
    pub(crate) tree: BTreeMap<Bytes, KeyIndex>,
    /// The newest revision visible to readers (durable).
    pub(crate) current: i64,
    /// The newest revision applied by the writer (>= current).
    pub(crate) pending: i64,
    /// The revision history was compacted at; -1 if never (as etcd's `compactMainRev`, so that
    /// compacting at 0 on a fresh store succeeds as it does in etcd).
    pub(crate) compacted: i64,
}

/// The MVCC store. Cheap to share behind an `Arc`.
pub(crate) struct Mvcc {
    pub(crate) state: RwLock<State>,
    /// `state.compacted`, readable without the lock: watch streams check it for every response
    /// they send, and must not wait for an apply holding the write lock.
    compacted: AtomicI64,
}

impl Mvcc {
    /// Rebuilds the store from the backend's revision records.
    pub(crate) fn open(backend: &dyn Backend) -> Result<Mvcc> {
        let mut tree: BTreeMap<Bytes, KeyIndex> = BTreeMap::new();
        let mut current = 1;
        for item in backend.scan(&[keys::REV_PREFIX], &keys::rev_space_end()) {
            let (k, v) = item?;
            let (rev, tombstone) = keys::decode_rev_key(&k)?;
            let payload = keys::unframe(&rev, &v)?;
            let kv = KeyValue::decode(payload)
                .map_err(|e| Error::Corrupt(format!("revision {rev:?}: {e}")))?;
            current = current.max(rev.main);
            let ki = tree.entry(kv.key.clone()).or_default();
            if tombstone {
                ki.restore_tombstone(rev);
                if ki.is_empty() {
                    tree.remove(&kv.key);
                }
            } else {
                ki.put(rev, kv);
            }
        }
        let meta = |name: &str, absent: i64| -> Result<i64> {
            match backend.get(&keys::meta_key(name))? {
                Some(v) => keys::unframe_i64(&name, &v),
                None => Ok(absent),
            }
        };
        let compacted = meta(keys::META_COMPACTED, -1)?;
        // A compaction can delete every record of the newest revisions' keys' history only if
        // they were tombstones at or below the compacted revision, so the stored current
        // revision is authoritative when present.
        current = current.max(meta(keys::META_CURRENT_REV, 0)?).max(compacted);
        Ok(Mvcc {
            state: RwLock::new(State {
                tree,
                current,
                pending: current,
                compacted,
            }),
            compacted: AtomicI64::new(compacted),
        })
    }

    /// Takes `fresh`'s whole state in place (a snapshot restore).
    pub(crate) fn replace(&self, fresh: Mvcc) {
        let fresh = fresh.state.into_inner();
        let compacted = fresh.compacted;
        *self.state.write() = fresh;
        self.compacted.store(compacted, Ordering::Release);
    }

    /// The newest visible revision.
    pub(crate) fn current_revision(&self) -> i64 {
        self.state.read().current
    }

    /// The revision history was compacted at (-1 if never).
    pub(crate) fn compacted_revision(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Makes everything applied so far visible. Called by the applier after the backend flush.
    pub(crate) fn publish(&self) -> i64 {
        let mut s = self.state.write();
        s.current = s.pending;
        s.current
    }

    /// Starts a write transaction at the next revision. Only the applier writes.
    pub(crate) fn write(&self) -> WriteTxn<'_> {
        WriteTxn::new(self.state.write())
    }

    /// Compacts history at `rev`: validates it, drops it from the tree, and returns the backend
    /// keys to delete. Applied in log order like any write.
    pub(crate) fn compact(&self, rev: i64) -> Result<Vec<Vec<u8>>> {
        let mut s = self.state.write();
        if rev <= s.compacted {
            return Err(Error::Compacted);
        }
        if rev > s.pending {
            return Err(Error::FutureRev);
        }
        let mut dropped = Vec::new();
        s.tree.retain(|_, ki| {
            ki.compact(rev, &mut dropped);
            !ki.is_empty()
        });
        s.compacted = rev;
        self.compacted.store(rev, Ordering::Release);
        Ok(dropped
            .into_iter()
            .map(|(r, t)| keys::rev_key(r, t))
            .collect())
    }
}

/// Builds the watch event for a stored version.
pub(crate) fn put_event(kv: KeyValue, prev: Option<KeyValue>) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(kv),
        prev_kv: prev,
    }
}

pub(crate) fn delete_event(key: Bytes, rev: i64, prev: Option<KeyValue>) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key,
            mod_revision: rev,
            ..Default::default()
        }),
        prev_kv: prev,
    }
}

#[cfg(test)]
mod tests;
