//! What a watcher watches, and the index that finds the synced watchers of a key.
//!
//! A watch covers one key, every key from a key on, or a half-open range `[key, end)`
//! ([`KeyRange`], built with etcd's request conventions by [`KeyRange::from_request`]).
//!
//! The [`SyncedIndex`] holds only *synced* watchers, the ones `publish` hands events to
//! directly. Single-key watchers sit in a hash map (one lookup per event). Range watchers sit in
//! a map ordered by start key and grouped by identical range, so the many watchers a
//! Kubernetes-like workload puts on one prefix cost one comparison per event, not one each.
//! An event visits every distinct range whose start is `<=` its key.
//! TODO: an interval tree (etcd's `adt.IntervalTree`) once many distinct ranges are common.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;

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
}

/// Synced watchers by what they watch. Values are watcher uids.
#[derive(Default)]
pub(crate) struct SyncedIndex {
    exact: HashMap<Bytes, Vec<u64>>,
    /// start key → (end → watchers); an event with key `k` visits starts `<= k`.
    ranges: BTreeMap<Bytes, HashMap<RangeEnd, Vec<u64>>>,
}

fn remove_from(v: &mut Vec<u64>, uid: u64) {
    if let Some(i) = v.iter().position(|&u| u == uid) {
        v.swap_remove(i);
    }
}

impl SyncedIndex {
    pub(crate) fn insert(&mut self, uid: u64, r: &KeyRange) {
        match r.end {
            RangeEnd::Single => self.exact.entry(r.key.clone()).or_default().push(uid),
            _ => self
                .ranges
                .entry(r.key.clone())
                .or_default()
                .entry(r.end.clone())
                .or_default()
                .push(uid),
        }
    }

    pub(crate) fn remove(&mut self, uid: u64, r: &KeyRange) {
        match r.end {
            RangeEnd::Single => {
                if let Some(v) = self.exact.get_mut(&r.key) {
                    remove_from(v, uid);
                    if v.is_empty() {
                        self.exact.remove(&r.key);
                    }
                }
            }
            _ => {
                if let Some(by_end) = self.ranges.get_mut(&r.key) {
                    if let Some(v) = by_end.get_mut(&r.end) {
                        remove_from(v, uid);
                        if v.is_empty() {
                            by_end.remove(&r.end);
                        }
                    }
                    if by_end.is_empty() {
                        self.ranges.remove(&r.key);
                    }
                }
            }
        }
    }

    /// Calls `f` with every synced watcher whose range contains `key`.
    pub(crate) fn for_each_matching(&self, key: &[u8], mut f: impl FnMut(u64)) {
        if let Some(v) = self.exact.get(key) {
            v.iter().for_each(|&u| f(u));
        }
        let upto = (Bound::Unbounded, Bound::Included(key));
        for (start, by_end) in self.ranges.range::<[u8], _>(upto) {
            for (end, v) in by_end {
                let hit = match end {
                    RangeEnd::Unbounded => true,
                    RangeEnd::Before(e) => key < e.as_ref(),
                    RangeEnd::Single => key == start.as_ref(),
                };
                if hit {
                    v.iter().for_each(|&u| f(u));
                }
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matching(ix: &SyncedIndex, key: &[u8]) -> Vec<u64> {
        let mut v = vec![];
        ix.for_each_matching(key, |u| v.push(u));
        v.sort();
        v
    }

    #[test]
    fn request_conventions_match_etcd() {
        let r = KeyRange::from_request(b"", b"").unwrap();
        assert_eq!((r.key.as_ref(), &r.end), (&b"\0"[..], &RangeEnd::Single));
        let r = KeyRange::from_request(b"", b"\0").unwrap();
        assert!(!r.contains(b"") && r.contains(b"\0") && r.contains(b"zzz"));
        let r = KeyRange::from_request(b"a", b"b").unwrap();
        assert!(r.contains(b"a") && r.contains(b"az") && !r.contains(b"b"));
        assert_eq!(KeyRange::from_request(b"b", b"a"), Err(EMPTY_RANGE));
        assert_eq!(KeyRange::from_request(b"a", b"a"), Err(EMPTY_RANGE));
    }

    #[test]
    fn index_finds_exact_prefix_and_open_ranges() {
        let mut ix = SyncedIndex::default();
        let one = KeyRange::from_request(b"foo", b"").unwrap();
        let pre = KeyRange::from_request(b"fo", b"fp").unwrap();
        let all = KeyRange::from_request(b"", b"\0").unwrap();
        let later = KeyRange::from_request(b"g", b"\0").unwrap();
        ix.insert(1, &one);
        ix.insert(2, &pre);
        ix.insert(3, &pre);
        ix.insert(4, &all);
        ix.insert(5, &later);
        assert_eq!(matching(&ix, b"foo"), vec![1, 2, 3, 4]);
        assert_eq!(matching(&ix, b"fox"), vec![2, 3, 4]);
        assert_eq!(matching(&ix, b"fp"), vec![4]);
        assert_eq!(matching(&ix, b"h"), vec![4, 5]);
        ix.remove(2, &pre);
        ix.remove(1, &one);
        assert_eq!(matching(&ix, b"foo"), vec![3, 4]);
        for (u, r) in [(3, &pre), (4, &all), (5, &later)] {
            ix.remove(u, r);
        }
        assert!(ix.is_empty());
    }
}
