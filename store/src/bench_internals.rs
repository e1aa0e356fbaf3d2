//! Handles on crate internals for the criterion benches in `store/benches/`.
//!
//! **Not a public API.** This module is hidden from the docs and exists only because benches are
//! separate crates that can see nothing `pub(crate)`. It wraps, rather than re-exports, the
//! internals it touches, so the rest of the crate keeps its `pub(crate)` visibility; anything
//! here may change or vanish with any commit, and nothing outside `store/benches/` may use it.
//!
//! Each wrapper drives the same code the member runs: [`Revisions`] the MVCC write txn, range
//! and compaction; [`Dispatch`] the watch hub (publish: matching, selection, queueing of shared
//! batches) and its client streams' senders (rendering frames from the once-encoded events).
//! Only what the watch module already offers the rest of the crate is used, so the benches
//! measure the hub through the same doors the gRPC service uses.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use keelson_proto::etcdserverpb::{RangeRequest, ResponseHeader, WatchCreateRequest};
use keelson_proto::mvccpb::{Event, KeyValue};

use crate::backend::{MemBackend, WriteBatch};
use crate::mvcc::{put_event, Mvcc, RevisionEvents};
use crate::watch::{Frame, HubConfig, StreamHandle, WatchHub, WatchStream};

/// The revision layer over an in-memory backend (the backend is never written: the benches
/// measure the tree, not the storage engine).
pub struct Revisions {
    mvcc: Mvcc,
}

impl Default for Revisions {
    fn default() -> Self {
        Self::new()
    }
}

impl Revisions {
    pub fn new() -> Revisions {
        let mvcc = Mvcc::open(&MemBackend::default()).expect("an empty backend opens");
        Revisions { mvcc }
    }

    /// Puts every key (with `value`) at one new revision, as one write txn (records included),
    /// and makes it visible. Returns the revision.
    pub fn put_all(&self, keys: &[Bytes], value: &Bytes) -> i64 {
        let mut batch = WriteBatch::default();
        let mut txn = self.mvcc.write();
        for k in keys {
            txn.put(k.clone(), value.clone(), 0);
        }
        let rev = txn.finish(&mut batch).map_or(0, |e| e.revision);
        self.mvcc.publish();
        rev
    }

    /// etcd's Range at the newest revision (`req.revision` chooses an older one). Returns the
    /// number of key/values returned. Panics on a refused range (compacted, future).
    pub fn range(&self, req: &RangeRequest) -> usize {
        let st = self.mvcc.state.read();
        let current = st.current;
        st.range(req, current).expect("a valid range").kvs.len()
    }

    /// Compacts at `rev`; returns how many revision records the backend would delete.
    pub fn compact(&self, rev: i64) -> usize {
        self.mvcc.compact(rev).expect("a valid compaction").len()
    }

    pub fn revision(&self) -> i64 {
        self.mvcc.current_revision()
    }
}

/// Puts of `keys` with `value` at `revision`, each with a previous value (so `prev_kv`
/// watchers have something to carry): one revision's events as the apply path makes them.
fn put_events(revision: i64, keys: &[Bytes], value: &Bytes) -> Vec<Event> {
    let kv = |key: &Bytes, rev: i64| KeyValue {
        key: key.clone(),
        create_revision: 2,
        mod_revision: rev,
        version: rev - 1,
        value: value.clone(),
        lease: 0,
    };
    keys.iter()
        .map(|k| put_event(kv(k, revision), Some(kv(k, revision - 1))))
        .collect()
}

/// A watch hub with `streams` client streams, driven by the caller: [`Dispatch::publish`] is
/// what the apply thread does after a commit; [`Dispatch::drain`] is what the streams' senders
/// do (render each queued delivery into frames over the shared encoded events, and write them
/// to the wire).
///
/// Create every watcher before the first publish: the hub's MVCC store stays at revision 1, so
/// a watcher created later would start in the past and be caught up rather than synced.
pub struct Dispatch {
    hub: Arc<WatchHub>,
    streams: Vec<(StreamHandle, WatchStream)>,
    revision: i64,
    runtime: tokio::runtime::Runtime,
}

impl Dispatch {
    /// `queue_cap` bounds each stream's queue; a watcher whose queue is full becomes lagging,
    /// so a bench that wants every watcher synced drains between publishes and sizes it to hold
    /// one revision's deliveries.
    pub fn new(streams: usize, queue_cap: usize) -> Dispatch {
        let backend = Arc::new(MemBackend::default());
        let mvcc = Arc::new(Mvcc::open(&*backend).expect("an empty backend opens"));
        let cfg = HubConfig {
            queue_cap,
            ring_revs: 16,
            ..HubConfig::default()
        };
        let hub = WatchHub::with_config(mvcc, backend, cfg);
        let header = ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 0,
            raft_term: 3,
        };
        let streams = (0..streams.max(1))
            .map(|_| hub.open_stream(header, usize::MAX))
            .collect();
        // The senders' progress tickers need a runtime with a timer.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        Dispatch {
            hub,
            streams,
            revision: 1,
            runtime,
        }
    }

    /// Creates a watcher of `[key, range_end)` (etcd's conventions) from the next revision on,
    /// on stream `stream % streams`.
    pub fn watch(&mut self, stream: usize, key: &[u8], range_end: &[u8], prev_kv: bool) {
        let n = self.streams.len();
        let req = WatchCreateRequest {
            key: key.to_vec().into(),
            range_end: range_end.to_vec().into(),
            prev_kv,
            ..Default::default()
        };
        self.streams[stream % n].0.create(&req);
    }

    /// The next revision's events: puts of `keys`.
    pub fn next_events(&mut self, keys: &[Bytes], value: &Bytes) -> Vec<Event> {
        self.revision += 1;
        put_events(self.revision, keys, value)
    }

    /// Hands events from [`Dispatch::next_events`] to the hub, as the apply thread does.
    pub fn publish(&self, events: Vec<Event>) {
        let revision = events
            .first()
            .and_then(|e| e.kv.as_ref())
            .map_or(self.revision, |kv| kv.mod_revision);
        self.hub.publish(vec![RevisionEvents { revision, events }]);
    }

    /// Runs every stream's sender until its queue is empty, encoding each frame into `wire`
    /// (cleared first). Returns the number of frames.
    pub fn drain(&mut self, wire: &mut BytesMut) -> usize {
        wire.clear();
        let _rt = self.runtime.enter();
        let mut frames = 0;
        for (_, s) in &mut self.streams {
            while let Some(Some(f)) = s.next().now_or_never() {
                f.expect("an open stream").encode(wire);
                frames += 1;
            }
        }
        frames
    }

    /// As [`Dispatch::drain`], but keeps the rendered frames instead of writing them.
    pub fn drain_frames(&mut self) -> Frames {
        let _rt = self.runtime.enter();
        let mut frames = Vec::new();
        for (_, s) in &mut self.streams {
            while let Some(Some(f)) = s.next().now_or_never() {
                frames.push(f.expect("an open stream"));
            }
        }
        Frames(frames)
    }
}

/// Frames a stream's sender rendered: each a response head plus shared, already encoded
/// events.
pub struct Frames(Vec<Frame>);

impl Frames {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes every frame to `wire` (cleared first), as the gRPC codec does.
    pub fn encode(&self, wire: &mut BytesMut) {
        wire.clear();
        for f in &self.0 {
            f.encode(wire);
        }
    }
}
