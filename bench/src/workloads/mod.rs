//! The workloads, one module each: flags, workers, and how the run becomes a [`Report`].
//!
//! Each `run` opens its own connections, does any unmeasured setup (preloads, lease grants,
//! watcher creation), runs the measured phase and returns a report; checks that fail become
//! problems in the report rather than errors, so the figures are still shown.
//!
//! [`Report`]: crate::stats::Report

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, Compare, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use keelson_proto::mvccpb::KeyValue;
use tonic::transport::Channel;

pub(crate) mod catchup;
pub(crate) mod k8s;
pub(crate) mod lease;
pub(crate) mod put;
pub(crate) mod range;
pub(crate) mod txn_cas;
pub(crate) mod watch;
pub(crate) mod watch_idle;

/// etcd's default `--max-txn-ops` is 128; preloads write 100 keys per transaction.
pub(crate) const PRELOAD_BATCH: usize = 100;

/// Writes `kvs` in one transaction (unmeasured setup); returns the revision it made.
pub(crate) async fn put_all(
    kv: &mut KvClient<Channel>,
    kvs: impl IntoIterator<Item = (Bytes, Bytes)>,
) -> anyhow::Result<i64> {
    let success = kvs
        .into_iter()
        .map(|(key, value)| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key,
                value,
                ..Default::default()
            })),
        })
        .collect();
    let r = kv
        .txn(TxnRequest {
            success,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("preload: {}", s.message()))?
        .into_inner();
    Ok(r.header.map(|h| h.revision).unwrap_or(0))
}

/// What a compare-and-swap put found.
pub(crate) enum Cas {
    /// The put happened at this revision.
    Done(i64),
    /// The key's mod_revision was not the expected one; here is the key as it is now
    /// (`None`: it does not exist).
    Conflict(Option<KeyValue>),
}

/// `Txn(mod_revision(key) == rev → put key value, else get key)`: the optimistic-concurrency
/// write of Kubernetes and of any etcd CAS loop; `rev == 0` means "create if absent".
pub(crate) async fn cas_put(
    kv: &mut KvClient<Channel>,
    key: Bytes,
    rev: i64,
    value: Bytes,
) -> Result<Cas, tonic::Status> {
    let r = kv
        .txn(TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::ModRevision(rev)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value,
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        })
        .await?
        .into_inner();
    if r.succeeded {
        return Ok(Cas::Done(r.header.map(|h| h.revision).unwrap_or(0)));
    }
    let now = r.responses.into_iter().find_map(|op| match op.response {
        Some(response_op::Response::ResponseRange(rr)) => rr.kvs.into_iter().next(),
        _ => None,
    });
    Ok(Cas::Conflict(now))
}
