//! What a watcher watches, and the index that finds the synced watchers of a key.
//!
//! A watch covers one key, every key from a key on, or a half-open range `[key, end)`
//! ([`KeyRange`], built with etcd's request conventions by [`KeyRange::from_request`]).
//!
//! The [`SyncedIndex`] holds only *synced* watchers, the ones `publish` hands events to
//! directly. Watchers are grouped by identical range, so the many watchers a Kubernetes-like
//! workload puts on one prefix cost one lookup per event, not one each:
//! - single-key watchers sit in a hash map: one lookup per event;
//! - range watchers (prefixes, bounded ranges, "from key on") sit in an interval tree
//!   (`interval.rs`), one node per distinct range, so an event finds the ranges holding its key
//!   in O((m + 1) log n) for m hits among n distinct ranges, however many of them start at or
//!   before it.
//!
//! Each synced watcher is in exactly one group, and the watcher itself remembers its position
//! there (returned by `insert`, updated from what `remove` reports moved), so removing a
//! watcher (cancel, lagging, stream gone, restore) costs O(1) however large its group is.

mod interval;

use std::collections::HashMap;

use bytes::Bytes;

use interval::{End, IntervalTree};

/// The end of a watched range.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RangeEnd {
    /// Only the key itself.
    Single,
    /// Every key `>=` the start (`range_end` `"\0"`).
    Unbounded,
    /// Keys `<` this one.
    Before(Bytes),
}

/// A watched key or key range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub(crate) key: Bytes,
    pub(crate) end: RangeEnd,
}

/// etcd's `ErrEmptyWatcherRange`.
pub(crate) const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

impl KeyRange {
    /// Applies etcd 3.4's `recvLoop` conventions: an empty key means `"\0"` (the smallest key),
    /// an empty `range_end` one key, `"\0"` every key from `key` on. A range that is empty
    /// (`key >= range_end`) is refused with etcd's text.
    pub(crate) fn from_request(key: &[u8], range_end: &[u8]) -> Result<KeyRange, &'static str> {
        let key = if key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            Bytes::copy_from_slice(key)
        };
        let end = match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            e if key.as_ref() >= e => return Err(EMPTY_RANGE),
            e => RangeEnd::Before(Bytes::copy_from_slice(e)),
        };
        Ok(KeyRange { key, end })
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => k == self.key.as_ref(),
            RangeEnd::Unbounded => k >= self.key.as_ref(),
            RangeEnd::Before(e) => k >= self.key.as_ref() && k < e.as_ref(),
        }
    }

    /// The interval tree's end for a range watch; `None` for a single key.
    fn tree_end(&self) -> Option<End> {
        match &self.end {
            RangeEnd::Single => None,
            RangeEnd::Unbounded => Some(End::Unbounded),
            RangeEnd::Before(e) => Some(End::Before(e.clone())),
        }
    }
}

/// Synced watchers by what they watch. Values are watcher uids.
///
/// The index does not remember where in its group each watcher sits: `insert` returns the
/// position and the caller keeps it with the watcher (a map from uid to position would cost
/// more per idle watcher than the watcher itself).
#[derive(Default)]
pub(crate) struct SyncedIndex {
    exact: HashMap<Bytes, Group>,
    /// One node per distinct range: the uids watching exactly that range.
    ranges: IntervalTree<Group>,
}

/// The uids watching one key or range. Most keys have one watcher (a Kubernetes object's
/// own key, an idle-watcher benchmark's), so one is held inline: a group costs no allocation
/// of its own until a second watcher joins.
#[derive(Debug, Default)]
pub(crate) enum Group {
    #[default]
    Empty,
    One(u64),
    Many(Vec<u64>),
}

impl Group {
    /// Adds `uid`; returns its position.
    fn push(&mut self, uid: u64) -> u32 {
        match self {
            Group::Empty => {
                *self = Group::One(uid);
                0
            }
            Group::One(first) => {
                *self = Group::Many(vec![*first, uid]);
                1
            }
            Group::Many(v) => {
                v.push(uid);
                (v.len() - 1) as u32
            }
        }
    }

    fn get(&self, at: u32) -> Option<u64> {
        match self {
            Group::Empty => None,
            Group::One(u) => (at == 0).then_some(*u),
            Group::Many(v) => v.get(at as usize).copied(),
        }
    }

    /// Removes the uid at `at` (which must exist), moving the last one there; returns the
    /// moved uid, if any.
    fn swap_remove(&mut self, at: u32) -> Option<u64> {
        match self {
            Group::Empty => None,
            Group::One(_) => {
                *self = Group::Empty;
                None
            }
            Group::Many(v) => {
                v.swap_remove(at as usize);
                v.get(at as usize).copied()
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Group::Empty => true,
            Group::One(_) => false,
            Group::Many(v) => v.is_empty(),
        }
    }

    fn for_each(&self, mut f: impl FnMut(u64)) {
        match self {
            Group::Empty => {}
            Group::One(u) => f(*u),
            Group::Many(v) => v.iter().for_each(|&u| f(u)),
        }
    }
}

/// A watcher that `remove` moved within its group, and its new position.
pub(crate) type Moved = Option<(u64, u32)>;

impl SyncedIndex {
    /// Adds `uid` to the group of `r`; returns its position there.
    pub(crate) fn insert(&mut self, uid: u64, r: &KeyRange) -> u32 {
        let group = match r.tree_end() {
            None => self.exact.entry(r.key.clone()).or_default(),
            Some(end) => self.ranges.get_or_insert_with(&r.key, &end, Group::default),
        };
        group.push(uid)
    }

    /// Removes `uid`, which `insert` put at position `at` of the group of `r` (or which a
    /// later `remove` moved there). Returns the watcher that took its place, whose position
    /// the caller must update. A uid not found at `at` (removed already, never inserted) is
    /// left alone and nothing else is taken out.
    pub(crate) fn remove(&mut self, uid: u64, r: &KeyRange, at: u32) -> Moved {
        let end = r.tree_end();
        let group = match &end {
            None => self.exact.get_mut(&r.key),
            Some(end) => self.ranges.get_mut(&r.key, end),
        }?;
        if group.get(at) != Some(uid) {
            return None;
        }
        let moved = group.swap_remove(at).map(|m| (m, at));
        if group.is_empty() {
            match &end {
                None => {
                    self.exact.remove(&r.key);
                }
                Some(end) => {
                    self.ranges.remove(&r.key, end);
                }
            }
        }
        moved
    }

    /// Calls `f` with every synced watcher whose range contains `key`.
    pub(crate) fn for_each_matching(&self, key: &[u8], mut f: impl FnMut(u64)) {
        if let Some(g) = self.exact.get(key) {
            g.for_each(&mut f);
        }
        self.ranges.for_each_containing(key, |g| g.for_each(&mut f));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests;
