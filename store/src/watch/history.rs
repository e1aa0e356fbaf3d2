//! Reading old revisions back from the backend, for watchers behind the ring.
//!
//! The backend holds one record per revision (`keys.rs`), so a scan of the revision space
//! from `rev_key_from(from)` walks history in order, exactly as etcd's `syncWatchers` reads its
//! `key` bucket. A tombstone record becomes a DELETE event carrying only the key and the
//! deletion revision, as etcd's `kvsToEvents` builds it.
//!
//! `prev_kv` is looked up in the in-memory key index at `mod_revision - 1`, as etcd's watch
//! server does, and left out when that revision is compacted or the event created the key.
//!
//! A compaction running during the scan may delete records under it. The caller therefore
//! re-reads the compacted revision afterwards and cancels (with `compact_revision`) any
//! watcher whose start is below it, instead of sending history with a hole.

use std::sync::Arc;

use keelson_proto::mvccpb::KeyValue;
use prost::Message;

use super::batch::RevBatch;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::keys;
use crate::mvcc::{delete_event, put_event, Mvcc, RevisionEvents};

/// The batches of every revision in `[from, to]` found in the backend.
pub(crate) fn read(
    backend: &dyn Backend,
    mvcc: &Mvcc,
    from: i64,
    to: i64,
    need_prev: bool,
) -> Result<Vec<Arc<RevBatch>>> {
    let mut revs: Vec<RevisionEvents> = Vec::new();
    let start = keys::rev_key_from(from.max(0));
    let end = keys::rev_key_from(to.saturating_add(1));
    for item in backend.scan(&start, &end) {
        let (k, v) = item?;
        let (rev, tombstone) = keys::decode_rev_key(&k)?;
        let kv = KeyValue::decode(keys::unframe(&rev, &v)?)
            .map_err(|e| Error::Corrupt(format!("revision {rev:?}: {e}")))?;
        let ev = if tombstone {
            delete_event(kv.key, rev.main, None)
        } else {
            put_event(kv, None)
        };
        match revs.last_mut() {
            Some(last) if last.revision == rev.main => last.events.push(ev),
            _ => revs.push(RevisionEvents {
                revision: rev.main,
                events: vec![ev],
            }),
        }
    }
    if need_prev {
        let st = mvcc.state.read();
        for re in &mut revs {
            let at = re.revision - 1;
            if at < st.compacted {
                continue;
            }
            for ev in &mut re.events {
                let kv = ev.kv.as_ref().expect("events carry a kv");
                if kv.create_revision == kv.mod_revision && kv.version == 1 {
                    continue;
                }
                ev.prev_kv = st.tree.get(&kv.key).and_then(|ki| ki.get(at)).cloned();
            }
        }
    }
    Ok(revs
        .into_iter()
        .map(|re| Arc::new(RevBatch::new(re)))
        .collect())
}
