//! Write transactions: the only way the tree changes.
//!
//! A [`WriteTxn`] holds the state's write lock for the duration of one command (a Put, a
//! DeleteRange or a whole Txn), so every change it makes lands at one main revision
//! (`pending + 1`) with increasing sub revisions. Reads inside the txn see its own earlier
//! changes, as etcd's `storeTxnWrite.Range` does. [`WriteTxn::finish`] returns the backend
//! records and the revision's events; the main revision only advances if something changed.

use bytes::Bytes;
use keelson_proto::etcdserverpb::RangeRequest;
use keelson_proto::mvccpb::{Event, KeyValue};
use parking_lot::RwLockWriteGuard;
use prost::Message;

use super::{delete_event, put_event, RangeResult, Revision, RevisionEvents, State};
use crate::backend::WriteBatch;
use crate::error::Result;
use crate::keys;

pub(crate) struct WriteTxn<'a> {
    state: RwLockWriteGuard<'a, State>,
    begin: i64,
    events: Vec<Event>,
}

impl<'a> WriteTxn<'a> {
    pub(crate) fn new(state: RwLockWriteGuard<'a, State>) -> Self {
        let begin = state.pending;
        WriteTxn {
            state,
            begin,
            events: Vec::new(),
        }
    }

    /// The revision reads inside this txn see.
    fn read_rev(&self) -> i64 {
        if self.events.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn next_rev(&self) -> Revision {
        Revision {
            main: self.begin + 1,
            sub: self.events.len() as i64,
        }
    }

    /// The revision this txn started from (compares are evaluated here).
    pub(crate) fn begin_revision(&self) -> i64 {
        self.begin
    }

    /// The compacted revision.
    pub(crate) fn compacted(&self) -> i64 {
        self.state.compacted
    }

    /// The live value of `key` as this txn sees it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        let at = self.read_rev();
        self.state.tree.get(key).and_then(|ki| ki.get(at))
    }

    /// Live key/values in `[key, range_end)` as this txn sees them.
    pub(crate) fn live(&self, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        self.state
            .live_at(key, range_end, self.read_rev())
            .cloned()
            .collect()
    }

    /// A Range inside the txn (etcd applies it at the txn's read revision).
    pub(crate) fn range(&self, r: &RangeRequest) -> Result<RangeResult> {
        self.state.range(r, self.read_rev())
    }

    /// The header revision for responses inside this txn.
    pub(crate) fn header_revision(&self) -> i64 {
        self.read_rev()
    }

    /// Puts `key`; returns the previous live value.
    pub(crate) fn put(&mut self, key: Bytes, value: Bytes, lease: i64) -> Option<KeyValue> {
        let rev = self.next_rev();
        let prev = self.get(&key).cloned();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev.main, 1),
        };
        let kv = KeyValue {
            key: key.clone(),
            create_revision,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        self.state.tree.entry(key).or_default().put(rev, kv.clone());
        self.events.push(put_event(kv, prev.clone()));
        prev
    }

    /// Deletes every live key in `[key, range_end)`; returns the deleted values.
    pub(crate) fn delete_range(&mut self, key: &[u8], range_end: &[u8]) -> Vec<KeyValue> {
        let doomed = self.live(key, range_end);
        for prev in &doomed {
            let rev = self.next_rev();
            let ki = self
                .state
                .tree
                .get_mut(&prev.key)
                .expect("live key is in the tree");
            let done = ki.tombstone(rev);
            debug_assert!(done);
            self.events
                .push(delete_event(prev.key.clone(), rev.main, Some(prev.clone())));
        }
        doomed
    }

    /// Ends the txn: appends its records to `batch` and returns its events (None if nothing
    /// changed, in which case no revision was used).
    pub(crate) fn finish(mut self, batch: &mut WriteBatch) -> Option<RevisionEvents> {
        if self.events.is_empty() {
            return None;
        }
        let main = self.begin + 1;
        for (sub, ev) in self.events.iter().enumerate() {
            let rev = Revision {
                main,
                sub: sub as i64,
            };
            let kv = ev.kv.as_ref().expect("events carry a kv");
            let tombstone = ev.r#type == keelson_proto::mvccpb::event::EventType::Delete as i32;
            // Revisions are never reused, so the record is new.
            batch.put_fresh(
                keys::rev_key(rev, tombstone),
                keys::frame(&kv.encode_to_vec()),
            );
        }
        batch.put(
            keys::meta_key(keys::META_CURRENT_REV),
            keys::frame_i64(main),
        );
        self.state.pending = main;
        Some(RevisionEvents {
            revision: main,
            events: std::mem::take(&mut self.events),
        })
    }
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        // A txn dropped with changes (an apply panicking half way) must not leave them behind
        // unaccounted: the member is going down anyway, so make it loud.
        if !self.events.is_empty() && !std::thread::panicking() {
            panic!(
                "WriteTxn dropped with {} unfinished changes",
                self.events.len()
            );
        }
    }
}
