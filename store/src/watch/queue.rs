//! A stream's outbox: the bounded queue between the hub and the task sending to the client.
//!
//! `publish` (the apply thread) only ever calls [`StreamShared::try_push_event`], which fails
//! instead of waiting when the queue holds `cap` items; the hub then moves the watcher to the
//! lagging set and the stream catches it up later. Control responses (created, canceled,
//! progress) are always queued: they are caused by the client's own requests, and the request
//! loop waits for room ([`StreamShared::room`]) before reading the next request, so a client
//! that does not read cannot grow the queue without bound.
//!
//! Every push gets a sequence number; [`StreamShared::popped`] counts the items taken out. A
//! watcher may only be caught up once every item queued for it has been taken out (the hub
//! compares its last sequence number with `popped`), so catch-up never overtakes the queue.
//!
//! Lock order: the hub's lock, then this queue's lock; never the reverse.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use keelson_proto::etcdserverpb::WatchResponse;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::batch::Delivery;

/// What the hub queues for a stream.
pub(crate) enum Item {
    /// A response without events: created, canceled, compacted, progress.
    Control(WatchResponse),
    /// Events for one watcher.
    Events(Delivery),
}

struct Queue {
    items: VecDeque<Item>,
    pushed: u64,
}

pub(crate) struct StreamShared {
    queue: Mutex<Queue>,
    cap: usize,
    popped: AtomicU64,
    /// Watchers of this stream that are not synced (kept by the hub under its lock).
    pub(crate) lagging: AtomicUsize,
    closed: AtomicBool,
    /// Wakes the sending task: something was queued, or the stream is closing.
    wake: Notify,
    /// Wakes the request loop: the queue has room again.
    room: Notify,
    /// Wakes the request loop: the stream is over.
    ended: Notify,
}

impl StreamShared {
    pub(crate) fn new(cap: usize) -> StreamShared {
        StreamShared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                pushed: 0,
            }),
            cap: cap.max(1),
            popped: AtomicU64::new(0),
            lagging: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            room: Notify::new(),
            ended: Notify::new(),
        }
    }

    /// Queues events unless the queue is full. Returns the item's sequence number.
    pub(crate) fn try_push_event(&self, d: Delivery) -> Option<u64> {
        let mut q = self.queue.lock();
        if q.items.len() >= self.cap {
            return None;
        }
        Some(self.push_locked(&mut q, Item::Events(d)))
    }

    /// Queues a control response regardless of the bound. Returns its sequence number.
    pub(crate) fn push_control(&self, r: WatchResponse) -> u64 {
        let mut q = self.queue.lock();
        self.push_locked(&mut q, Item::Control(r))
    }

    /// The sender is woken only when the queue was empty: it takes items until the queue is
    /// empty before it waits again (`stream.rs`), and a wake-up sent while it is not waiting is
    /// kept for its next wait, so a fan-out to many watchers of one stream costs one wake-up,
    /// not one per watcher.
    fn push_locked(&self, q: &mut Queue, item: Item) -> u64 {
        let was_empty = q.items.is_empty();
        q.items.push_back(item);
        let seq = q.pushed;
        q.pushed += 1;
        if was_empty {
            self.wake.notify_one();
        }
        seq
    }

    /// Room is signalled only when the queue was at or over its bound: below it nobody waits.
    #[cfg(test)]
    pub(crate) fn pop(&self) -> Option<Item> {
        let (item, was_full) = {
            let mut q = self.queue.lock();
            let was_full = q.items.len() >= self.cap;
            (q.items.pop_front()?, was_full)
        };
        self.popped.fetch_add(1, Ordering::AcqRel);
        if was_full {
            self.room.notify_one();
        }
        Some(item)
    }

    /// Takes up to `max` items (at least one if any is queued) in order into `out`, under one
    /// lock: a fan-out leaves many items per stream at once, and the sender renders them all.
    pub(crate) fn pop_many(&self, max: usize, out: &mut Vec<Item>) -> usize {
        let (n, was_full) = {
            let mut q = self.queue.lock();
            let was_full = q.items.len() >= self.cap;
            let n = q.items.len().min(max.max(1));
            out.extend(q.items.drain(..n));
            (n, was_full)
        };
        if n > 0 {
            self.popped.fetch_add(n as u64, Ordering::AcqRel);
            if was_full {
                self.room.notify_one();
            }
        }
        n
    }

    /// How many items have been taken out: every item with a smaller sequence number is gone.
    pub(crate) fn popped(&self) -> u64 {
        self.popped.load(Ordering::Acquire)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.lock().items.is_empty()
    }

    pub(crate) fn is_lagging(&self) -> bool {
        self.lagging.load(Ordering::Acquire) > 0
    }

    /// Waits until the queue is below its bound (or the stream is closed).
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            if self.queue.lock().items.len() < self.cap || self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves after the next push or close (or at once if one happened since the last wait).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Wakes the stream's sender so it looks for catch-up work.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        self.room.notify_one();
        self.ended.notify_waiters();
    }

    /// Resolves once the stream is closed.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
