//! Range reads: etcd's `applyRange` and `rangeKeys`, over the in-memory tree.
//!
//! Semantics kept from etcd 3.4 (`etcdserver/apply.go`):
//! - an empty `range_end` reads one key; `"\0"` reads every key `>= key`; otherwise
//!   `[key, range_end)`;
//! - `revision <= 0` reads at the newest revision; above it is `FutureRev`; below the compacted
//!   revision is `Compacted`; the response header always carries the newest revision;
//! - `count` is the number of keys in the range at that revision, ignoring limit and filters;
//! - with a sort order or a min/max filter everything is read, filtered, sorted and then cut
//!   to `limit`; a non-KEY sort target with order NONE sorts ascending; `more` says whether
//!   the limit cut anything off.

use std::ops::Bound;

use bytes::Bytes;
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::RangeRequest;
use keelson_proto::mvccpb::KeyValue;

use super::State;
use crate::error::{Error, Result};

/// What a range returns before the header is attached.
#[derive(Debug, Default, Clone)]
pub(crate) struct RangeResult {
    pub(crate) kvs: Vec<KeyValue>,
    pub(crate) more: bool,
    pub(crate) count: i64,
}

/// The parts of a `RangeRequest` the tree walk needs.
pub(crate) struct RangeOptions {
    pub(crate) limit: usize,
    pub(crate) count_only: bool,
}

/// The byte range `[key, end)` a (key, range_end) pair denotes, with etcd's conventions.
pub(crate) fn key_bounds(key: &[u8], range_end: &[u8]) -> (Bound<Bytes>, Bound<Bytes>) {
    let start = Bound::Included(Bytes::copy_from_slice(key));
    if range_end.is_empty() {
        return (start.clone(), start);
    }
    if range_end == [0] {
        return (start, Bound::Unbounded);
    }
    (start, Bound::Excluded(Bytes::copy_from_slice(range_end)))
}

impl State {
    /// Iterates the live key/values in `[key, range_end)` at revision `at`.
    pub(crate) fn live_at<'a>(
        &'a self,
        key: &[u8],
        range_end: &[u8],
        at: i64,
    ) -> Box<dyn Iterator<Item = &'a KeyValue> + 'a> {
        let (lo, hi) = key_bounds(key, range_end);
        if let (Bound::Included(l), Bound::Excluded(h)) = (&lo, &hi) {
            if l >= h {
                return Box::new(std::iter::empty());
            }
        }
        if let (Bound::Included(l), Bound::Included(h)) = (&lo, &hi) {
            // Single key.
            let _ = h;
            return Box::new(self.tree.get(l).and_then(|ki| ki.get(at)).into_iter());
        }
        Box::new(
            self.tree
                .range((lo, hi))
                .filter_map(move |(_, ki)| ki.get(at)),
        )
    }

    /// Resolves a requested revision against `newest` (the reader's head) and the compaction.
    pub(crate) fn resolve_rev(&self, requested: i64, newest: i64) -> Result<i64> {
        if requested > newest {
            return Err(Error::FutureRev);
        }
        let rev = if requested <= 0 { newest } else { requested };
        if rev < self.compacted {
            return Err(Error::Compacted);
        }
        Ok(rev)
    }

    /// The raw range: every live key at `at`, cut to `opts.limit` (0 = no limit).
    pub(crate) fn range_keys(
        &self,
        key: &[u8],
        range_end: &[u8],
        at: i64,
        opts: RangeOptions,
    ) -> RangeResult {
        let mut count = 0i64;
        let mut kvs = Vec::new();
        for kv in self.live_at(key, range_end, at) {
            count += 1;
            if !opts.count_only && (opts.limit == 0 || kvs.len() < opts.limit) {
                kvs.push(kv.clone());
            }
        }
        RangeResult {
            kvs,
            more: false,
            count,
        }
    }

    /// etcd's `applyRange` at head revision `newest`.
    pub(crate) fn range(&self, r: &RangeRequest, newest: i64) -> Result<RangeResult> {
        let at = self.resolve_rev(r.revision, newest)?;
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let sort_order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
        let sort_target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
        let mut limit = if sort_order != SortOrder::None || filtered {
            0
        } else {
            r.limit.max(0)
        };
        if limit > 0 {
            // One more than asked tells whether there is `more`; saturating, so i64::MAX means
            // "no limit" as it does in etcd rather than overflowing.
            limit = limit.saturating_add(1);
        }
        let mut rr = self.range_keys(
            &r.key,
            &r.range_end,
            at,
            RangeOptions {
                limit: limit as usize,
                count_only: r.count_only,
            },
        );
        if filtered {
            rr.kvs.retain(|kv| {
                !(r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision
                    || r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision
                    || r.max_create_revision != 0 && kv.create_revision > r.max_create_revision
                    || r.min_create_revision != 0 && kv.create_revision < r.min_create_revision)
            });
        }
        let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
            SortOrder::Ascend
        } else {
            sort_order
        };
        if order != SortOrder::None {
            // Stable sorts, ties kept in key order, as Go's sort does for the small inputs
            // etcdctl users compare by eye.
            let desc = order == SortOrder::Descend;
            let cmp = |a: &KeyValue, b: &KeyValue| match sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            rr.kvs
                .sort_by(|a, b| if desc { cmp(b, a) } else { cmp(a, b) });
        }
        if r.limit > 0 && rr.kvs.len() > r.limit as usize {
            rr.kvs.truncate(r.limit as usize);
            rr.more = true;
        }
        if r.keys_only {
            for kv in &mut rr.kvs {
                kv.value = Default::default();
            }
        }
        Ok(rr)
    }
}
