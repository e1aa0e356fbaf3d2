//! Lists and gets served from the cache, when upstream 1.32 would (`shouldDelegateList`,
//! `Cacher.Get`, `computeListLimit`; reference/apiserver.md §2–3). `Ok(None)` means "ask the
//! store".
//!
//! | request | served by |
//! |---|---|
//! | continue, `Exact`, limit + resourceVersion X (legacy exact) | the store |
//! | resourceVersion "0" | the cache as it is; `limit` ignored |
//! | X (NotOlderThan) | the cache once it reaches X (3 s, then "Too large resource version") |
//! | unset (consistent) | the cache once it reaches the store's current revision, read with a quorum range; the store when progress responses are not trusted or the wait times out |
//! | get with resourceVersion unset | the store |
//!
//! Invariants: a page from the cache is one revision (the cache's at the read), in key
//! order, and its continue token resumes in the store at that revision, exactly as a
//! store-served first page's would; `remainingItemCount` only without selectors.

use serde_json::Value;

use super::{Cacher, Entry};
use crate::error::Result;
use crate::etcd::Etcd;
use crate::keys;
use crate::registry::{parse_rv, ListOptions, ListPage};
use crate::resources::ResourceDef;

impl Cacher {
    /// The revision a read must wait for, or None to delegate to the store.
    async fn read_floor(&self, etcd: &Etcd, rv: Option<i64>) -> Result<Option<i64>> {
        if !self.is_ready() {
            return Ok(None);
        }
        match rv {
            Some(0) => Ok(Some(0)),
            None => {
                if !self.reliable() {
                    return Ok(None);
                }
                let current = etcd.current_revision().await?;
                // Upstream falls back to the store when the cache does not catch up.
                Ok(self.wait_fresh(current).await.ok().map(|()| current))
            }
            Some(x) if self.reliable() => {
                self.wait_fresh(x).await?;
                Ok(Some(x))
            }
            // Without trusted progress an idle cache may never reach X; the store can.
            Some(x) => Ok((self.revision() >= x).then_some(x)),
        }
    }

    /// A list of `def` under `prefix`, or None when the store must answer it.
    pub(crate) async fn list(
        &self,
        etcd: &Etcd,
        def: &ResourceDef,
        prefix: &str,
        opts: &ListOptions,
    ) -> Result<Option<ListPage>> {
        let rv = parse_rv(opts.resource_version.as_deref())?;
        let legacy_exact = opts.limit > 0 && rv.is_some_and(|v| v > 0);
        match opts.resource_version_match.as_deref() {
            _ if opts.continue_token.is_some() => return Ok(None),
            Some("Exact") => return Ok(None),
            Some("NotOlderThan") => {}
            _ if legacy_exact => return Ok(None),
            _ => {}
        }
        if self.read_floor(etcd, rv).await?.is_none() {
            return Ok(None);
        }
        let limit = if rv == Some(0) {
            0
        } else {
            opts.limit.max(0) as usize
        };
        let filtering = !opts.labels.is_empty() || !opts.fields.is_empty();
        let (revision, selected, more, total) = {
            let st = self.read();
            if !st.ready {
                return Ok(None);
            }
            let candidates: Vec<&std::sync::Arc<Entry>> = match &opts.node_name {
                Some(node) if self.resource == "pods" => st.store.indexed(node, prefix).collect(),
                _ => st.store.with_prefix(prefix).collect(),
            };
            let mut selected = Vec::new();
            let mut more = false;
            for (i, e) in candidates.iter().enumerate() {
                if opts.labels.matches(&e.object) && opts.fields.matches(def, &e.object) {
                    selected.push((*e).clone());
                }
                if limit > 0 && selected.len() >= limit {
                    more = i + 1 < candidates.len();
                    break;
                }
            }
            (st.rev, selected, more, candidates.len())
        };
        let continue_token = match selected.last() {
            Some(last) if more => Some(keys::encode_continue(
                &format!("{}\0", last.key),
                prefix,
                revision,
            )),
            _ => None,
        };
        let remaining = (more && !filtering).then(|| (total - limit) as i64);
        Ok(Some(ListPage {
            items: selected.iter().map(|e| e.object.clone()).collect(),
            revision,
            continue_token,
            remaining,
        }))
    }

    /// One object by key: Some(None) when absent, None when the store must answer.
    pub(crate) async fn get(
        &self,
        etcd: &Etcd,
        key: &str,
        rv: Option<i64>,
    ) -> Result<Option<Option<Value>>> {
        if rv.is_none() || self.read_floor(etcd, rv).await?.is_none() {
            return Ok(None);
        }
        let st = self.read();
        if !st.ready {
            return Ok(None);
        }
        Ok(Some(st.store.get(key).map(|e| e.object.clone())))
    }
}
