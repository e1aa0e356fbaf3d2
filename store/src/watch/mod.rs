//! # The watch hub: committed events → every watcher that asked for them
//!
//! etcd's `watchableStore` and its gRPC watch server, rebuilt around one rule: **the apply
//! path never waits for a watcher**. The apply thread calls [`WatchHub::publish`] after each
//! durable commit, in revision order. Publish wraps each revision's events once in an
//! `Arc<RevBatch>` (shared, lazily encoded once: `batch.rs`), keeps it in a bounded ring of
//! recent revisions, and for every *synced* watcher whose range holds an event (found through
//! the `SyncedIndex`, `index.rs`) tries to queue a reference to it in the watcher's stream
//! queue. A full queue never blocks: the watcher becomes *lagging* at that revision.
//!
//! Each client stream ([`stream::WatchStream`]) drains its queue towards the client and, in
//! between, catches its lagging watchers up — new watchers with a start revision in the past,
//! and watchers that fell behind — from the ring when it still holds the revisions, otherwise
//! from the backend's revision records (`history.rs`); once a watcher has seen everything up to
//! the newest published revision it is synced again. Watchers whose start fell below the
//! compacted revision get etcd's compacted cancel instead of a gap, also when a compaction
//! races with the read.
//!
//! Guarantees (the invariants are spelled out in `registry.rs`): per watcher, every matching
//! event exactly once, in revision order, all events of a revision in one response (unless the
//! watcher asked for fragments); nothing for a watch ID before its created response or after
//! its canceled one; progress responses ordered after every event at or below their revision.
//!
//! etcd 3.4 behaviour kept (see `/work/shared/reference/etcd.md`, etcd's `v3rpc/watch.go` and
//! `mvcc/watchable_store.go`): the key/range_end conventions; start revision 0 = current + 1;
//! server-chosen IDs count from 0 per stream and skip IDs in use; a duplicate ID or an empty
//! range gives created + canceled with ID -1 and etcd's reason; cancelling an unknown ID is
//! silently ignored; a start below the compacted revision gives `compact_revision` +
//! `canceled` (no reason); event responses report the events' revision, catch-up responses
//! the store's; filters drop events server-side and an all-filtered revision sends nothing;
//! `progress_notify` sends an empty response per idle interval (10 minutes); fragments split a
//! response of two or more events at max-request-bytes + 512 KiB.

mod batch;
mod history;
mod index;
mod queue;
mod registry;
mod slab;
mod stream;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keelson_proto::etcdserverpb::ResponseHeader;
use parking_lot::Mutex;

pub(crate) use batch::Frame;
pub(crate) use stream::{StreamHandle, WatchStream};

use crate::backend::Backend;
use crate::mvcc::{Mvcc, RevisionEvents};
use batch::{RevBatch, Ring};
use registry::Registry;

/// Tunables; the defaults are etcd's where etcd has one.
#[derive(Debug, Clone)]
pub(crate) struct HubConfig {
    /// Items a stream's queue holds before its watchers become lagging.
    pub(crate) queue_cap: usize,
    /// Revisions kept in memory for catch-up.
    pub(crate) ring_revs: usize,
    /// Approximate bytes kept in memory for catch-up.
    pub(crate) ring_bytes: usize,
    /// Revisions read per catch-up step (etcd's `watchBatchMaxRevs`).
    pub(crate) catch_up_revs: i64,
    /// `progress_notify` interval (etcd's 10 minutes).
    pub(crate) progress_interval: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_cap: 256,
            ring_revs: 10_000,
            ring_bytes: 64 << 20,
            catch_up_revs: 1000,
            progress_interval: Duration::from_secs(600),
        }
    }
}

pub(crate) struct WatchHub {
    mvcc: Arc<Mvcc>,
    backend: Arc<dyn Backend>,
    cfg: HubConfig,
    reg: Mutex<Registry>,
    closed: AtomicBool,
}

impl WatchHub {
    pub(crate) fn new(mvcc: Arc<Mvcc>, backend: Arc<dyn Backend>) -> Arc<WatchHub> {
        Self::with_config(mvcc, backend, HubConfig::default())
    }

    pub(crate) fn with_config(
        mvcc: Arc<Mvcc>,
        backend: Arc<dyn Backend>,
        cfg: HubConfig,
    ) -> Arc<WatchHub> {
        let published = mvcc.current_revision();
        let reg = Registry::new(published, Ring::new(cfg.ring_revs, cfg.ring_bytes));
        Arc::new(WatchHub {
            mvcc,
            backend,
            cfg,
            reg: Mutex::new(reg),
            closed: AtomicBool::new(false),
        })
    }

    /// Called by the apply thread after each commit, in revision order. Never blocks: it takes
    /// the hub lock for the matching and queueing only (no I/O, no waiting on clients).
    pub(crate) fn publish(&self, events: Vec<RevisionEvents>) {
        let batches: Vec<Arc<RevBatch>> = events
            .into_iter()
            .map(|e| Arc::new(RevBatch::new(e)))
            .collect();
        let mut reg = self.reg.lock();
        for b in batches {
            reg.publish(b);
        }
    }

    /// After a restore replaced the store's state (a raft snapshot install), as etcd's
    /// `watchableStore.Restore`: every synced watcher becomes lagging at its next revision, so
    /// its stream catches it up from the backend, or cancels it with the compacted revision if
    /// the restored history no longer reaches back to it; the ring, which the restored history
    /// need not continue, is emptied. `published` is the restored store's revision.
    pub(crate) fn restored(&self, published: i64) {
        self.reg.lock().restored(published);
    }

    /// Opens a client stream. `header` carries the member's cluster ID, member ID and term
    /// (its revision is replaced per response); a fragmenting watcher's responses are split
    /// at `fragment_limit` bytes.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        header: ResponseHeader,
        fragment_limit: usize,
    ) -> (StreamHandle, WatchStream) {
        stream::open(self, header, fragment_limit)
    }

    /// Ends every stream (server shutdown): their clients get `etcdserver: server stopped`.
    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        for s in self.reg.lock().streams() {
            s.close();
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
