//! The watchers of one cache and how events reach them (upstream `cacher.go`
//! `dispatchEvent`, `cache_watcher.go`).
//!
//! Invariants:
//! - Each watcher has a bounded queue. Dispatch first offers an event to every interested
//!   watcher without waiting; watchers whose queue is full then share a time budget (50 ms
//!   more per second, at most 100 ms, upstream's `timeBudget`), and one still full when it
//!   runs out is closed: its stream ends and the client lists again. One slow client never
//!   holds up the others for longer than the budget.
//! - A watcher registered with an index value (a pod watch with `spec.nodeName=X`) is
//!   offered only events whose object has, or had, that value; every other watcher is
//!   offered every event. Selectors are applied by the watcher itself.
//! - Events at or below a watcher's `from_rev` reached it another way (its initial state or
//!   history) and are not offered again; events arrive in revision order.
//! - Bookmarks are offered, never waited for: about every minute and 2 s before the
//!   watcher's deadline (`nextBookmarkTime`), only to watchers that allow them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use super::event::Event;

/// What a watcher's queue carries.
pub(crate) enum Msg {
    Event(Arc<Event>),
    /// Every event at or below this revision has been offered.
    Bookmark(i64),
}

const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
const BOOKMARK_BEFORE_DEADLINE: Duration = Duration::from_secs(2);
const BUDGET_REFILL_PER_SECOND: Duration = Duration::from_millis(50);
const BUDGET_MAX: Duration = Duration::from_millis(100);

/// Upstream's per-watcher queue length: about a second of history (capacity / 75 s), at
/// least 10, at most 10 for a pod watch on one node, 1000 for other watches of an indexed
/// resource, 100 otherwise.
pub(crate) fn queue_size(ring_capacity: usize, indexed: bool, triggered: bool) -> usize {
    let size = ring_capacity.div_ceil(75).max(10);
    let max = match (indexed, triggered) {
        (true, true) => 10,
        (true, false) => 1000,
        (false, _) => 100,
    };
    size.min(max)
}

/// When a watcher with `deadline` should next get a bookmark after `now` (None: never).
fn next_bookmark(now: Instant, deadline: Instant) -> Option<Instant> {
    let heartbeat = (now + BOOKMARK_EVERY).min(deadline.checked_sub(BOOKMARK_BEFORE_DEADLINE)?);
    (heartbeat >= now).then_some(heartbeat)
}

pub(crate) struct Watcher {
    pub(crate) id: u64,
    pub(crate) index: Option<Arc<str>>,
    pub(crate) from_rev: i64,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    /// Next bookmark time (None: no bookmarks).
    bookmark_at: Mutex<Option<Instant>>,
    deadline: Instant,
}

impl Watcher {
    pub(crate) fn new(
        id: u64,
        index: Option<Arc<str>>,
        from_rev: i64,
        queue: usize,
        bookmarks: bool,
        deadline: Instant,
    ) -> (Watcher, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel(queue);
        let bookmark_at = if bookmarks {
            next_bookmark(Instant::now(), deadline)
        } else {
            None
        };
        let w = Watcher {
            id,
            index,
            from_rev,
            tx: Mutex::new(Some(tx)),
            bookmark_at: Mutex::new(bookmark_at),
            deadline,
        };
        (w, rx)
    }

    fn sender(&self) -> Option<mpsc::Sender<Msg>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ends the watcher's stream (after what is already queued).
    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Offers without waiting; gives the message back when the queue is full.
    fn offer(&self, msg: Msg) -> Result<(), Msg> {
        match self.sender().map(|tx| tx.try_send(msg)) {
            Some(Err(TrySendError::Full(m))) => Err(m),
            _ => Ok(()),
        }
    }
}

/// Everyone watching one resource.
#[derive(Default)]
pub(crate) struct Watchers {
    next_id: u64,
    all: HashMap<u64, Arc<Watcher>>,
    by_index: HashMap<Arc<str>, HashMap<u64, Arc<Watcher>>>,
}

impl Watchers {
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn add(&mut self, w: Arc<Watcher>) {
        match &w.index {
            Some(v) => {
                self.by_index.entry(v.clone()).or_default().insert(w.id, w);
            }
            None => {
                self.all.insert(w.id, w);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: u64, index: Option<&Arc<str>>) {
        match index {
            Some(v) => {
                if let Some(m) = self.by_index.get_mut(v) {
                    m.remove(&id);
                    if m.is_empty() {
                        self.by_index.remove(v);
                    }
                }
            }
            None => {
                self.all.remove(&id);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.all.len() + self.by_index.values().map(HashMap::len).sum::<usize>()
    }

    /// Closes and forgets every watcher (the cache is being relisted).
    pub(crate) fn terminate_all(&mut self) {
        for w in self.iter() {
            w.close();
        }
        self.all.clear();
        self.by_index.clear();
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Watcher>> {
        self.all
            .values()
            .chain(self.by_index.values().flat_map(HashMap::values))
    }

    /// The watchers that may care about `ev`.
    pub(crate) fn interested(&self, ev: &Event) -> Vec<Arc<Watcher>> {
        let mut out: Vec<Arc<Watcher>> = self.all.values().cloned().collect();
        for v in ev.index_values() {
            if let Some(m) = self.by_index.get(&v) {
                out.extend(m.values().cloned());
            }
        }
        out
    }

    /// Offers a bookmark to every watcher whose bookmark is due at `now`: at the cache's
    /// revision `rev`, or at the watcher's start when that is newer (it has seen everything
    /// up to there by its own account).
    pub(crate) fn bookmarks(&self, rev: i64, now: Instant) {
        for w in self.iter() {
            let mut at = w.bookmark_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.is_some_and(|t| t <= now) {
                *at = next_bookmark(now, w.deadline);
                drop(at);
                // A full queue just misses this bookmark; the next one comes later.
                let _ = w.offer(Msg::Bookmark(rev.max(w.from_rev)));
            }
        }
    }
}

/// Time the dispatcher may spend waiting for full queues (upstream `timeBudget`).
pub(crate) struct Budget {
    available: Duration,
    refilled: Instant,
}

impl Budget {
    pub(crate) fn new() -> Budget {
        Budget {
            available: BUDGET_MAX,
            refilled: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> Duration {
        let secs = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.available = (self.available + BUDGET_REFILL_PER_SECOND.mul_f64(secs)).min(BUDGET_MAX);
        self.refilled = now;
        std::mem::take(&mut self.available)
    }

    fn give_back(&mut self, unused: Duration) {
        self.available = (self.available + unused).min(BUDGET_MAX);
    }
}

/// Offers `ev` to `watchers` (see the module doc); returns how many were closed.
pub(crate) async fn dispatch(
    ev: &Arc<Event>,
    watchers: &[Arc<Watcher>],
    budget: &mut Budget,
) -> usize {
    let mut blocked = Vec::new();
    for w in watchers.iter().filter(|w| ev.rev > w.from_rev) {
        if w.offer(Msg::Event(ev.clone())).is_err() {
            blocked.push(w);
        }
    }
    if blocked.is_empty() {
        return 0;
    }
    let start = Instant::now();
    let allowed = budget.take(start);
    let deadline = start + allowed;
    let mut closed = 0;
    for w in blocked {
        let Some(tx) = w.sender() else { continue };
        // Polled at least once even after the deadline: a queue that drained meanwhile
        // still gets the event.
        if let Err(_elapsed) =
            tokio::time::timeout_at(deadline, tx.send(Msg::Event(ev.clone()))).await
        {
            tracing::info!(
                "forcing watcher {} close due to unresponsiveness (queue of {} full)",
                w.id,
                tx.max_capacity()
            );
            w.close();
            closed += 1;
        }
    }
    budget.give_back(allowed.saturating_sub(start.elapsed()));
    closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::event::{Entry, Kind};
    use serde_json::json;

    fn event(rev: i64, node: &str) -> Arc<Event> {
        let e = Arc::new(Entry::new(
            "pods",
            Arc::from("/registry/pods/a/p"),
            json!({"spec": {"nodeName": node}}),
        ));
        Arc::new(Event::new(
            Kind::Added,
            rev,
            e,
            None,
            std::time::Instant::now(),
        ))
    }

    #[test]
    fn queue_sizes_follow_upstream() {
        assert_eq!(queue_size(100, false, false), 10);
        assert_eq!(queue_size(100 * 1024, false, false), 100);
        assert_eq!(queue_size(100 * 1024, true, false), 1000);
        assert_eq!(queue_size(100 * 1024, true, true), 10);
        assert_eq!(queue_size(1500, true, false), 20);
    }

    #[tokio::test]
    async fn a_watcher_that_cannot_keep_up_is_closed_and_others_are_not() {
        let far = Instant::now() + Duration::from_secs(3600);
        let (slow, mut slow_rx) = Watcher::new(1, None, 0, 2, false, far);
        let (fast, mut fast_rx) = Watcher::new(2, None, 0, 2, false, far);
        let ws = vec![Arc::new(slow), Arc::new(fast)];
        let mut budget = Budget::new();
        let mut closed = 0;
        for rev in 1..=3 {
            closed += dispatch(&event(rev, ""), &ws, &mut budget).await;
            // The fast one reads everything as it comes.
            while let Ok(Msg::Event(e)) = fast_rx.try_recv() {
                assert!(e.rev <= rev);
            }
        }
        assert_eq!(closed, 1);
        // The slow one keeps what was queued, then its stream ends.
        let mut got = Vec::new();
        while let Some(m) = slow_rx.recv().await {
            if let Msg::Event(e) = m {
                got.push(e.rev);
            }
        }
        assert_eq!(got, [1, 2]);
        // The fast one is still open.
        assert_eq!(dispatch(&event(4, ""), &ws[1..], &mut budget).await, 0);
        assert!(matches!(fast_rx.try_recv(), Ok(Msg::Event(e)) if e.rev == 4));
    }

    #[tokio::test]
    async fn the_budget_lets_a_briefly_slow_watcher_catch_up() {
        let far = Instant::now() + Duration::from_secs(3600);
        let (w, mut rx) = Watcher::new(1, None, 0, 1, false, far);
        let ws = vec![Arc::new(w)];
        let mut budget = Budget::new();
        assert_eq!(dispatch(&event(1, ""), &ws, &mut budget).await, 0);
        // The reader runs only once dispatch waits on the full queue (one-thread runtime).
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        // Full until the reader drains it, within the budget: delivered, not closed.
        assert_eq!(dispatch(&event(2, ""), &ws, &mut budget).await, 0);
        ws[0].close();
        assert_eq!(reader.await.unwrap(), 2);
    }

    #[test]
    fn index_routing_and_from_rev() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut ws = Watchers::default();
        let (all, _r1) = Watcher::new(ws.next_id(), None, 0, 10, false, far);
        let (n1, _r2) = Watcher::new(ws.next_id(), Some(Arc::from("n1")), 0, 10, false, far);
        let (n2, _r3) = Watcher::new(ws.next_id(), Some(Arc::from("n2")), 0, 10, false, far);
        for w in [all, n1, n2] {
            ws.add(Arc::new(w));
        }
        fn ids(ws: &Watchers, ev: &Event) -> Vec<u64> {
            let mut v: Vec<u64> = ws.interested(ev).iter().map(|w| w.id).collect();
            v.sort();
            v
        }
        assert_eq!(ids(&ws, &event(1, "n1")), [1, 2]);
        assert_eq!(ids(&ws, &event(1, "n3")), [1]);
        // A pod moving from n1 to n2 concerns both nodes.
        let old = event(1, "n1").object.clone();
        let new = event(2, "n2").object.clone();
        let moved = Event::new(Kind::Modified, 2, new, Some(old), std::time::Instant::now());
        assert_eq!(ids(&ws, &moved), [1, 2, 3]);
        ws.remove(2, Some(&Arc::from("n1")));
        assert_eq!(ids(&ws, &event(1, "n1")), [1]);
        assert_eq!(ws.len(), 2);
        ws.terminate_all();
        assert_eq!(ws.len(), 0);
    }

    #[test]
    fn bookmarks_come_every_minute_and_before_the_deadline() {
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        assert_eq!(next_bookmark(now, far), Some(now + BOOKMARK_EVERY));
        let soon = now + Duration::from_secs(10);
        assert_eq!(next_bookmark(now, soon), Some(now + Duration::from_secs(8)));
        assert_eq!(next_bookmark(now, now + Duration::from_secs(1)), None);
    }
}
