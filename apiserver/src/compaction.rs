//! Periodic compaction of the store's history, as kube-apiserver does it
//! (`storage/etcd3/compact.go`): the store keeps every revision until someone compacts, and
//! the apiserver is that someone.
//!
//! ## The protocol
//! One key outside `/registry`, `compact_rev_key`, is shared by every apiserver on the
//! store. Its value is the revision last compacted to; its *version* (how many times it has
//! been written) serves as a logical clock. Every `interval` each apiserver runs one Txn:
//! `If version(compact_rev_key) == <the version I last saw> Then Put(<the revision I saw one
//! interval ago>) Else Get`. The one whose guard holds compacts the store to the revision
//! it saw one interval earlier; the others learn the new version and the store's revision
//! from the Else branch and try again an interval later.
//!
//! ## Invariants
//! - Writes of `compact_rev_key` are at least `interval` apart, however many apiservers run:
//!   an apiserver writes only with the version it read, and reads it at a write or later,
//!   then waits a whole interval before its next Txn. So the store is compacted once per
//!   interval, not once per apiserver; when the one compacting stops, another takes over
//!   within two intervals.
//! - The store always keeps at least one interval of history: the revision compacted to
//!   is one the store had reached an interval before (the first successful Txn only
//!   records a revision; it compacts nothing).
//! - A failed Txn or Compact is logged and retried an interval later; it never stops the
//!   loop. An interval of zero disables compaction (`--etcd-compaction-interval=0`).

use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
    CompactionRequest, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use tokio::sync::watch;

use crate::error::Error;
use crate::etcd::Etcd;

/// The key that elects one compactor per interval (upstream's name, at the keyspace root).
pub(crate) const COMPACT_REV_KEY: &str = "compact_rev_key";

/// kube-apiserver's default `--etcd-compaction-interval` (`DefaultCompactInterval`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What this apiserver knows of the shared compaction state after one round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Known {
    /// The version of `compact_rev_key` last seen (0: the key does not exist).
    version: i64,
    /// The store's revision at the last round: what the next successful round compacts to.
    revision: i64,
}

/// Starts the compaction loop; it ends when `stop` turns true. None when `interval` is zero.
pub(crate) fn start(
    etcd: Etcd,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut known = Known::default();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let round = tokio::select! {
                r = round(&etcd, known) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match round {
                Ok((next, compacted)) => {
                    known = next;
                    if let Some(rev) = compacted {
                        tracing::info!("compacted the store at revision {rev}");
                    }
                }
                Err((next, e)) => {
                    known = next;
                    tracing::warn!("compaction of the store failed: {e}");
                }
            }
        }
    }))
}

/// One round of the protocol: the new knowledge, and the revision compacted to, if this
/// apiserver compacted. A failure still carries what was learnt before it (a Compact that
/// fails after our Txn wrote the key leaves us holding the key's new version).
async fn round(etcd: &Etcd, known: Known) -> Result<(Known, Option<i64>), (Known, Error)> {
    let key = Bytes::from_static(COMPACT_REV_KEY.as_bytes());
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: key.clone(),
            range_end: Bytes::new(),
            target_union: Some(TargetUnion::Version(known.version)),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: key.clone(),
                value: Bytes::from(known.revision.to_string()),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    };
    let r = match etcd.kv().txn(txn).await {
        Ok(r) => r.into_inner(),
        Err(e) => return Err((known, e.into())),
    };
    let revision = r.header.map(|h| h.revision).unwrap_or(0);
    if !r.succeeded {
        // Someone else wrote the key since we last saw it: learn its version and wait.
        let kv = r
            .responses
            .into_iter()
            .find_map(|op| match op.response {
                Some(Response::ResponseRange(rr)) => rr.kvs.into_iter().next(),
                _ => None,
            })
            .ok_or_else(|| (known, Error::Storage(format!("{COMPACT_REV_KEY} vanished"))))?;
        return Ok((
            Known {
                version: kv.version,
                revision,
            },
            None,
        ));
    }
    let next = Known {
        version: known.version + 1,
        revision,
    };
    if known.revision == 0 {
        // The first round only records where the store is; nothing is compacted yet.
        return Ok((next, None));
    }
    let compacted = etcd
        .kv()
        .compact(CompactionRequest {
            revision: known.revision,
            physical: false,
        })
        .await;
    match compacted {
        Ok(_) => Ok((next, Some(known.revision))),
        Err(e) => Err((next, e.into())),
    }
}
