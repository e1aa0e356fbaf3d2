//! The hub's state behind its one lock: streams, watchers, the synced index, the ring.
//!
//! A watcher is either *synced* (in the [`SyncedIndex`]; `publish` queues its events directly)
//! or *lagging* (it needs history from `next` on, and its stream catches it up). Invariants,
//! all kept under the hub lock:
//! - a synced watcher has been given, in its stream's queue, every matching event with a
//!   revision in `[next, published]`; publish only queues revisions `>= next`;
//! - a lagging watcher has been given every matching event below `next` and nothing at or
//!   above it; nothing queues events for it until its stream's catch-up makes it synced again,
//!   which happens only when `next > published`;
//! - every response for a watch ID is queued after its created response and before its
//!   canceled one; catch-up responses are sent only once everything queued earlier for the
//!   watcher has left the queue (`last_seq < popped`).
//!
//! So every watcher sees each matching revision exactly once, in order, with no gap.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use keelson_proto::etcdserverpb::watch_create_request::FilterType;
use keelson_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};

use super::batch::{Delivery, Parts, RevBatch, Ring, Sel};
use super::index::{KeyRange, Moved, SyncedIndex};
use super::queue::{Item, StreamShared};
use super::slab::Slab;

/// etcd's `AutoWatchID`: the client lets the server choose.
pub(crate) const AUTO_WATCH_ID: i64 = 0;
/// etcd's `InvalidWatchID`, used for refused creates and stream-wide progress responses.
pub(crate) const INVALID_WATCH_ID: i64 = -1;
/// etcd's `ErrWatcherDuplicateID`.
pub(crate) const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

struct Watcher {
    stream: u64,
    id: i64,
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Events were queued for it since the last progress tick.
    sent: bool,
    /// The oldest revision the watcher has not been given.
    next: i64,
    synced: bool,
    /// Sequence number of the last item queued for this watcher.
    last_seq: u64,
    /// Its position in its [`SyncedIndex`] group while synced.
    at: u32,
}

impl Watcher {
    fn wants(&self, b: &RevBatch, i: usize) -> bool {
        if b.is_put(i) {
            !self.no_put
        } else {
            !self.no_delete
        }
    }

    /// The events of `b` this watcher gets during catch-up (range and filters).
    fn select(&self, b: &RevBatch) -> Option<Sel> {
        let ix: Vec<u32> = (0..b.events.len())
            .filter(|&i| self.range.contains(b.key(i)) && self.wants(b, i))
            .map(|i| i as u32)
            .collect();
        match ix.len() {
            0 => None,
            n if n == b.events.len() => Some(Sel::All),
            _ => Some(Sel::Some(ix)),
        }
    }
}

struct StreamEntry {
    shared: Arc<StreamShared>,
    /// Watch ID → watcher uid.
    ids: HashMap<i64, u64>,
    next_id: i64,
    /// A progress request is waiting for every watcher to be synced.
    progress_deferred: bool,
}

/// What one catch-up step has to read.
pub(crate) struct Plan {
    /// (uid, next) of each watcher served by this step.
    pub(crate) watchers: Vec<(u64, i64)>,
    pub(crate) from: i64,
    pub(crate) to: i64,
    /// The revision the responses report (etcd reports the store's revision when syncing).
    pub(crate) published: i64,
    pub(crate) need_prev: bool,
    /// The batches, if the ring holds them; otherwise they come from the backend.
    pub(crate) ring: Option<Vec<Arc<RevBatch>>>,
}

pub(crate) enum CatchUp {
    /// Nothing to do now.
    Idle,
    /// Watchers changed state (synced, or cancelled as compacted); look again.
    Changed,
    Work(Plan),
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

pub(crate) struct Registry {
    /// The newest revision handed to `publish`.
    pub(crate) published: i64,
    ring: Ring,
    watchers: Slab<Watcher>,
    index: SyncedIndex,
    streams: HashMap<u64, StreamEntry>,
    /// The last stream id handed out.
    next_uid: u64,
    scratch: Vec<(u64, u32)>,
}

impl Registry {
    pub(crate) fn new(published: i64, ring: Ring) -> Registry {
        Registry {
            published,
            ring,
            watchers: Slab::default(),
            index: SyncedIndex::default(),
            streams: HashMap::new(),
            next_uid: 1,
            scratch: Vec::new(),
        }
    }

    pub(crate) fn add_stream(&mut self, shared: Arc<StreamShared>) -> u64 {
        self.next_uid += 1;
        let sid = self.next_uid;
        self.streams.insert(
            sid,
            StreamEntry {
                shared,
                ids: HashMap::new(),
                next_id: 0,
                progress_deferred: false,
            },
        );
        sid
    }

    pub(crate) fn remove_stream(&mut self, sid: u64) {
        if let Some(entry) = self.streams.remove(&sid) {
            for &uid in entry.ids.values() {
                if let Some(w) = self.watchers.remove(uid) {
                    if w.synced {
                        let moved = self.index.remove(uid, &w.range, w.at);
                        self.moved(moved);
                    }
                }
            }
            entry.shared.close();
        }
    }

    #[cfg(test)]
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    pub(crate) fn streams(&self) -> impl Iterator<Item = &Arc<StreamShared>> {
        self.streams.values().map(|e| &e.shared)
    }

    /// Handles a create request (etcd's `recvLoop` + `watchStream.Watch`); `current` is the
    /// store's revision, read just before. Queues the created response.
    pub(crate) fn create(&mut self, sid: u64, req: &WatchCreateRequest, current: i64) {
        let Some(entry) = self.streams.get_mut(&sid) else {
            return;
        };
        let refuse = |entry: &StreamEntry, reason: &str| {
            entry.shared.push_control(WatchResponse {
                header: header(current),
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: reason.to_string(),
                ..Default::default()
            });
        };
        let range = match KeyRange::from_request(&req.key, &req.range_end) {
            Ok(r) => r,
            Err(reason) => return refuse(entry, reason),
        };
        let id = if req.watch_id == AUTO_WATCH_ID {
            while entry.ids.contains_key(&entry.next_id) {
                entry.next_id += 1;
            }
            entry.next_id += 1;
            entry.next_id - 1
        } else if entry.ids.contains_key(&req.watch_id) {
            return refuse(entry, DUPLICATE_ID);
        } else {
            req.watch_id
        };
        let start = if req.start_revision == 0 {
            current + 1
        } else {
            req.start_revision
        };
        let synced = start > self.published;
        let seq = entry.shared.push_control(WatchResponse {
            header: header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        });
        if !synced {
            entry.shared.lagging.fetch_add(1, Ordering::AcqRel);
        }
        let uid = self.watchers.insert(Watcher {
            stream: sid,
            id,
            range,
            no_put: req.filters.contains(&(FilterType::Noput as i32)),
            no_delete: req.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: req.prev_kv,
            fragment: req.fragment,
            progress_notify: req.progress_notify,
            sent: false,
            next: start,
            synced,
            last_seq: seq,
            at: 0,
        });
        entry.ids.insert(id, uid);
        if synced {
            let w = self.watchers.get_mut(uid).expect("just inserted");
            w.at = self.index.insert(uid, &w.range);
        }
    }

    /// Records the new position of a watcher that `SyncedIndex::remove` moved.
    fn moved(&mut self, moved: Moved) {
        if let Some((uid, at)) = moved {
            if let Some(w) = self.watchers.get_mut(uid) {
                w.at = at;
            }
        }
    }

    /// Removes a watcher from the map, the index or the lagging count. Not from `ids`.
    fn drop_watcher(&mut self, uid: u64) -> Option<Watcher> {
        let w = self.watchers.remove(uid)?;
        if w.synced {
            let moved = self.index.remove(uid, &w.range, w.at);
            self.moved(moved);
        } else if let Some(e) = self.streams.get(&w.stream) {
            e.shared.lagging.fetch_sub(1, Ordering::AcqRel);
        }
        Some(w)
    }

    /// Handles a cancel request. etcd 3.4 answers only IDs it knows.
    pub(crate) fn cancel(&mut self, sid: u64, id: i64, current: i64) {
        let Some(uid) = self.streams.get_mut(&sid).and_then(|e| e.ids.remove(&id)) else {
            return;
        };
        self.drop_watcher(uid);
        if let Some(e) = self.streams.get(&sid) {
            e.shared.push_control(WatchResponse {
                header: header(current),
                watch_id: id,
                canceled: true,
                ..Default::default()
            });
        }
        self.deferred_progress(sid);
    }

    /// Handles a progress request: a response with watch ID -1 whose revision promises that
    /// every later event is newer. It is queued behind every event up to that revision, so
    /// it waits until all the stream's watchers are synced (the ordering etcd 3.4.25 / 3.5.8
    /// fixed, #15220).
    pub(crate) fn request_progress(&mut self, sid: u64) {
        let published = self.published;
        let Some(e) = self.streams.get_mut(&sid) else {
            return;
        };
        if e.shared.is_lagging() {
            e.progress_deferred = true;
        } else {
            e.shared.push_control(progress(INVALID_WATCH_ID, published));
        }
    }

    fn deferred_progress(&mut self, sid: u64) {
        let published = self.published;
        if let Some(e) = self.streams.get_mut(&sid) {
            if e.progress_deferred && !e.shared.is_lagging() {
                e.progress_deferred = false;
                e.shared.push_control(progress(INVALID_WATCH_ID, published));
            }
        }
    }

    /// The periodic `progress_notify`: an empty response for every synced watcher that asked
    /// for it and was given no events since the previous tick.
    pub(crate) fn progress_tick(&mut self, sid: u64) {
        let Some(e) = self.streams.get(&sid) else {
            return;
        };
        for (id, uid) in &e.ids {
            let Some(w) = self.watchers.get_mut(*uid) else {
                continue;
            };
            if w.progress_notify && w.synced && !w.sent {
                w.last_seq = e.shared.push_control(progress(*id, self.published));
            }
            w.sent = false;
        }
    }

    /// See [`super::WatchHub::restored`].
    pub(crate) fn restored(&mut self, published: i64) {
        for (_, w) in self.watchers.iter_mut() {
            if !w.synced {
                continue;
            }
            w.synced = false;
            if let Some(e) = self.streams.get(&w.stream) {
                e.shared.lagging.fetch_add(1, Ordering::AcqRel);
            }
        }
        // Every watcher left the index: start it afresh rather than remove them one by one.
        self.index = SyncedIndex::default();
        self.ring.clear();
        self.published = published;
        for e in self.streams.values() {
            e.shared.wake();
        }
    }

    /// Hands one revision to every synced watcher it concerns. Never waits: a watcher whose
    /// stream queue is full becomes lagging at this revision.
    pub(crate) fn publish(&mut self, b: Arc<RevBatch>) {
        self.ring.push(b.clone());
        self.published = b.revision;
        if self.index.is_empty() {
            return;
        }
        let mut m = std::mem::take(&mut self.scratch);
        m.clear();
        for i in 0..b.events.len() {
            self.index
                .for_each_matching(b.key(i), |u| m.push((u, i as u32)));
        }
        if b.events.len() > 1 {
            m.sort_unstable();
        }
        let mut k = 0;
        while k < m.len() {
            let uid = m[k].0;
            let j = k + m[k..].iter().take_while(|x| x.0 == uid).count();
            self.deliver(uid, &b, &m[k..j]);
            k = j;
        }
        self.scratch = m;
    }

    fn deliver(&mut self, uid: u64, b: &Arc<RevBatch>, hits: &[(u64, u32)]) {
        let Some(w) = self.watchers.get_mut(uid) else {
            return;
        };
        if !w.synced || w.next > b.revision {
            return;
        }
        let n = b.events.len();
        let sel = if !w.no_put && !w.no_delete && hits.len() == n {
            Sel::All
        } else {
            let ix: Vec<u32> = hits
                .iter()
                .map(|h| h.1)
                .filter(|&i| w.wants(b, i as usize))
                .collect();
            match ix.len() {
                0 => return,
                l if l == n => Sel::All,
                _ => Sel::Some(ix),
            }
        };
        let Some(e) = self.streams.get(&w.stream) else {
            return;
        };
        let d = Delivery {
            watch_id: w.id,
            header_rev: b.revision,
            prev_kv: w.prev_kv,
            fragment: w.fragment,
            parts: Parts::One(b.clone(), sel),
        };
        match e.shared.try_push_event(d) {
            Some(seq) => {
                w.last_seq = seq;
                w.next = b.revision + 1;
                w.sent = true;
            }
            None => {
                w.synced = false;
                w.next = b.revision;
                e.shared.lagging.fetch_add(1, Ordering::AcqRel);
                let moved = self.index.remove(uid, &w.range, w.at);
                self.moved(moved);
            }
        }
    }

    fn make_synced(&mut self, uid: u64) {
        let Some(w) = self.watchers.get_mut(uid) else {
            return;
        };
        if w.synced {
            return;
        }
        w.synced = true;
        w.at = self.index.insert(uid, &w.range);
        if let Some(e) = self.streams.get(&w.stream) {
            e.shared.lagging.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Cancels a watcher whose history is gone: etcd's response with `compact_revision` (and
    /// `canceled`, no reason, header revision 0 as etcd 3.4 leaves it).
    fn compacted_cancel(&mut self, uid: u64, compacted: i64) -> Option<WatchResponse> {
        let w = self.drop_watcher(uid)?;
        if let Some(e) = self.streams.get_mut(&w.stream) {
            e.ids.remove(&w.id);
        }
        Some(WatchResponse {
            header: header(0),
            watch_id: w.id,
            compact_revision: compacted,
            canceled: true,
            ..Default::default()
        })
    }

    /// Decides the stream's next catch-up step. `compacted` is the store's compacted revision.
    pub(crate) fn plan_catch_up(&mut self, sid: u64, compacted: i64, max_revs: i64) -> CatchUp {
        let Some(e) = self.streams.get(&sid) else {
            return CatchUp::Idle;
        };
        if !e.shared.is_lagging() {
            return CatchUp::Idle;
        }
        let popped = e.shared.popped();
        let lagging: Vec<(u64, i64, bool)> = e
            .ids
            .values()
            .filter_map(|&uid| self.watchers.get(uid).map(|w| (uid, w)))
            .filter(|(_, w)| !w.synced && w.last_seq < popped)
            .map(|(uid, w)| (uid, w.next, w.prev_kv))
            .collect();
        let mut changed = false;
        let mut plan = Plan {
            watchers: vec![],
            from: i64::MAX,
            to: 0,
            published: self.published,
            need_prev: false,
            ring: None,
        };
        for (uid, next, prev_kv) in lagging {
            if next < compacted {
                if let Some(r) = self.compacted_cancel(uid, compacted) {
                    self.streams[&sid].shared.push_control(r);
                }
                changed = true;
            } else if next > self.published {
                self.make_synced(uid);
                changed = true;
            } else {
                plan.watchers.push((uid, next));
                plan.from = plan.from.min(next);
                plan.need_prev |= prev_kv;
            }
        }
        if changed {
            self.deferred_progress(sid);
        }
        if plan.watchers.is_empty() {
            return if changed {
                CatchUp::Changed
            } else {
                CatchUp::Idle
            };
        }
        plan.to = self.published.min(plan.from.saturating_add(max_revs - 1));
        match self.ring.first_rev() {
            Some(first) if plan.from >= first => {
                plan.ring = Some(self.ring.range(plan.from, plan.to))
            }
            Some(first) => plan.to = plan.to.min(first - 1),
            None => {}
        }
        // Watchers further ahead than this step reaches wait for a later one.
        let to = plan.to;
        plan.watchers.retain(|&(_, next)| next <= to);
        CatchUp::Work(plan)
    }

    /// Turns a step's batches into responses and advances its watchers. `compacted_after` is
    /// the compacted revision read after the batches were read from the backend (`None` for
    /// the ring, whose batches cannot be compacted away): a watcher whose start fell below it
    /// may have lost history under the read, so it gets the compacted cancel instead.
    pub(crate) fn finish_catch_up(
        &mut self,
        sid: u64,
        plan: &Plan,
        batches: &[Arc<RevBatch>],
        compacted_after: Option<i64>,
    ) -> Vec<Item> {
        let mut out = Vec::new();
        for &(uid, next) in &plan.watchers {
            match self.watchers.get(uid) {
                Some(w) if !w.synced && w.next == next && w.stream == sid => {}
                _ => continue,
            }
            if let Some(c) = compacted_after.filter(|&c| next < c) {
                out.extend(self.compacted_cancel(uid, c).map(Item::Control));
                continue;
            }
            let w = self.watchers.get_mut(uid).expect("checked above");
            let parts: Vec<(Arc<RevBatch>, Sel)> = batches
                .iter()
                .filter(|b| b.revision >= next && b.revision <= plan.to)
                .filter_map(|b| w.select(b).map(|s| (b.clone(), s)))
                .collect();
            if !parts.is_empty() {
                out.push(Item::Events(Delivery {
                    watch_id: w.id,
                    header_rev: plan.published,
                    prev_kv: w.prev_kv,
                    fragment: w.fragment,
                    parts: Parts::from_vec(parts),
                }));
                w.sent = true;
            }
            w.next = plan.to + 1;
            if w.next > self.published {
                self.make_synced(uid);
            }
        }
        self.deferred_progress(sid);
        out
    }
}

fn progress(watch_id: i64, revision: i64) -> WatchResponse {
    WatchResponse {
        header: header(revision),
        watch_id,
        ..Default::default()
    }
}
