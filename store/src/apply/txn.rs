//! Txn: compares, the chosen branch, and its ops — etcd's `applyTxn` family.
//!
//! As in etcd 3.4, every compare of the txn and of its nested txns is evaluated first, against
//! the state before the txn (`compareToPath`); the puts and ranges on the chosen path are then
//! checked (missing lease, `ignore_*` on a missing key, range revisions), and only then are the
//! ops executed, all at one main revision. A failed check changes nothing.

use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::request_op::Request;
use keelson_proto::etcdserverpb::response_op::Response as OpResponse;
use keelson_proto::etcdserverpb::{
    Compare, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use keelson_proto::mvccpb::KeyValue;

use super::Applier;
use crate::error::{Error, Result};
use crate::mvcc::WriteTxn;

/// Whether `c` holds against the txn's current view.
fn compare(txn: &WriteTxn<'_>, c: &Compare) -> bool {
    let kvs = txn.live(&c.key, &c.range_end);
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    if kvs.is_empty() {
        if target == CompareTarget::Value {
            return false;
        }
        return compare_kv(c, target, &KeyValue::default());
    }
    kvs.iter().all(|kv| compare_kv(c, target, kv))
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match target {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value[..].cmp(want)
        }
        CompareTarget::Create => kv.create_revision.cmp(&match c.target_union {
            Some(TargetUnion::CreateRevision(r)) => r,
            _ => 0,
        }),
        CompareTarget::Mod => kv.mod_revision.cmp(&match c.target_union {
            Some(TargetUnion::ModRevision(r)) => r,
            _ => 0,
        }),
        CompareTarget::Version => kv.version.cmp(&match c.target_union {
            Some(TargetUnion::Version(r)) => r,
            _ => 0,
        }),
        CompareTarget::Lease => kv.lease.cmp(&match c.target_union {
            Some(TargetUnion::Lease(r)) => r,
            _ => 0,
        }),
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord.is_eq(),
        Ok(CompareResult::NotEqual) => ord.is_ne(),
        Ok(CompareResult::Greater) => ord.is_gt(),
        Ok(CompareResult::Less) => ord.is_lt(),
        Err(_) => true,
    }
}

/// A write an earlier op on the txn's path will have made by the time a later op runs.
enum Effect {
    Put(Vec<u8>),
    /// `[key, range_end)` with etcd's conventions (empty = one key, `"\0"` = to the end).
    Delete(Vec<u8>, Vec<u8>),
}

/// Whether `key` will be live when an op after `earlier` runs: the newest earlier op that
/// touches it decides, else the state before the txn.
fn live_after(txn: &WriteTxn<'_>, earlier: &[Effect], key: &[u8]) -> bool {
    for e in earlier.iter().rev() {
        match e {
            Effect::Put(k) if k.as_slice() == key => return true,
            Effect::Delete(k, end) => {
                let covered = if end.is_empty() {
                    k.as_slice() == key
                } else if end.as_slice() == [0] {
                    k.as_slice() <= key
                } else {
                    k.as_slice() <= key && key < end.as_slice()
                };
                if covered {
                    return false;
                }
            }
            _ => {}
        }
    }
    txn.get(key).is_some()
}

/// The branch taken at each txn, depth first (etcd's `compareToPath`).
fn compare_to_path(txn: &WriteTxn<'_>, r: &TxnRequest, path: &mut Vec<bool>) {
    let ok = r.compare.iter().all(|c| compare(txn, c));
    path.push(ok);
    let ops = if ok { &r.success } else { &r.failure };
    for op in ops {
        if let Some(Request::RequestTxn(t)) = &op.request {
            compare_to_path(txn, t, path);
        }
    }
}

impl Applier {
    /// Checks the ops on the chosen path before anything is written (etcd's `checkRequests`),
    /// so that executing them cannot fail half way: a txn either applies whole or changes
    /// nothing. Beyond etcd's checks this follows the path's own writes in order (`earlier`), so
    /// an `ignore_*` put after a delete that removes its key in the same txn (reachable through
    /// a `"\0"` range end, which etcd's `checkIntervals` does not see as covering anything) is
    /// refused up front instead of failing after the delete ran. It also refuses malformed ops
    /// (no op, empty key) here, in apply, so commands that did not come through the gRPC
    /// checks (replicated or built in-process) are just as safe.
    fn check_path(
        &self,
        txn: &WriteTxn<'_>,
        r: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        earlier: &mut Vec<Effect>,
    ) -> Result<()> {
        let ok = path[*at];
        *at += 1;
        let ops = if ok { &r.success } else { &r.failure };
        for op in ops {
            match &op.request {
                Some(Request::RequestPut(p)) => {
                    if p.key.is_empty() {
                        return Err(Error::EmptyKey);
                    }
                    if (p.ignore_value || p.ignore_lease) && !live_after(txn, earlier, &p.key) {
                        return Err(Error::KeyNotFound);
                    }
                    if p.lease != 0 && !self.lessor.exists(p.lease) {
                        return Err(Error::LeaseNotFound);
                    }
                    earlier.push(Effect::Put(p.key.to_vec()));
                }
                Some(Request::RequestRange(q)) => {
                    if q.key.is_empty() {
                        return Err(Error::EmptyKey);
                    }
                    if q.revision != 0 {
                        if q.revision > txn.begin_revision() {
                            return Err(Error::FutureRev);
                        }
                        if q.revision < txn.compacted() {
                            return Err(Error::Compacted);
                        }
                    }
                }
                Some(Request::RequestDeleteRange(d)) => {
                    if d.key.is_empty() {
                        return Err(Error::EmptyKey);
                    }
                    earlier.push(Effect::Delete(d.key.to_vec(), d.range_end.to_vec()));
                }
                Some(Request::RequestTxn(t)) => self.check_path(txn, t, path, at, earlier)?,
                None => return Err(Error::KeyNotFound),
            }
        }
        Ok(())
    }

    fn exec_path(
        &self,
        txn: &mut WriteTxn<'_>,
        r: &TxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<TxnResponse> {
        let ok = path[*at];
        *at += 1;
        let ops: &[RequestOp] = if ok { &r.success } else { &r.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match &op.request {
                Some(Request::RequestRange(q)) => OpResponse::ResponseRange(self.range_in(txn, q)?),
                Some(Request::RequestPut(p)) => OpResponse::ResponsePut(self.put_in(txn, p)?),
                Some(Request::RequestDeleteRange(d)) => {
                    OpResponse::ResponseDeleteRange(self.delete_in(txn, d))
                }
                Some(Request::RequestTxn(t)) => {
                    OpResponse::ResponseTxn(self.exec_path(txn, t, path, at)?)
                }
                None => return Err(Error::KeyNotFound),
            };
            responses.push(ResponseOp {
                response: Some(resp),
            });
        }
        // A nested txn's response carries an empty header, as etcd's `newTxnResp` leaves it;
        // only the outermost one gets the revision (`apply_txn`).
        Ok(TxnResponse {
            header: Some(ResponseHeader::default()),
            succeeded: ok,
            responses,
        })
    }

    /// Applies a whole txn inside `txn`.
    pub(crate) fn apply_txn(&self, txn: &mut WriteTxn<'_>, r: &TxnRequest) -> Result<TxnResponse> {
        let mut path = Vec::new();
        compare_to_path(txn, r, &mut path);
        self.check_path(txn, r, &path, &mut 0, &mut Vec::new())?;
        let mut resp = self.exec_path(txn, r, &path, &mut 0)?;
        resp.header = Some(ResponseHeader {
            revision: txn.header_revision(),
            ..Default::default()
        });
        Ok(resp)
    }
}

/// gRPC-level validation of a txn (etcd's `checkTxnRequest` + `checkIntervals`), before it is
/// proposed.
pub(crate) fn check_txn_request(r: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    check_txn_ops(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_ops: usize) -> Result<()> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_ops {
        return Err(Error::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        match &op.request {
            Some(Request::RequestRange(q)) if q.key.is_empty() => return Err(Error::EmptyKey),
            Some(Request::RequestPut(p)) => super::check_put(p)?,
            Some(Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(Error::EmptyKey)
            }
            Some(Request::RequestTxn(t)) => check_txn_ops(t, max_ops.saturating_sub(opc))?,
            None => return Err(Error::KeyNotFound),
            _ => {}
        }
    }
    Ok(())
}

/// A deleted interval `[key, end)`, or a single key when `end` is empty.
struct Del {
    key: Vec<u8>,
    end: Vec<u8>,
}

impl Del {
    fn covers(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            self.key == k
        } else {
            self.key.as_slice() <= k && k < self.end.as_slice()
        }
    }
}

/// Refuses two puts to one key, or a put inside a deleted range, in one branch (nested txns
/// included; the two branches of a nested txn may put the same key).
fn check_intervals(ops: &[RequestOp]) -> Result<(std::collections::HashSet<Vec<u8>>, Vec<Del>)> {
    use std::collections::HashSet;
    let mut dels: Vec<Del> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Del {
                key: d.key.to_vec(),
                end: d.range_end.to_vec(),
            }),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| d.covers(k)) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(Error::DuplicateKey);
            }
            if dels.iter().any(|d| d.covers(k)) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        let k = p.key.to_vec();
        if puts.contains(&k) || dels.iter().any(|d| d.covers(&k)) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.to_string().into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.to_string().into(),
                range_end: end.to_string().into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let ok = |ops: Vec<RequestOp>| {
            check_txn_request(
                &TxnRequest {
                    compare: vec![],
                    success: ops,
                    failure: vec![],
                },
                128,
            )
        };
        assert_eq!(ok(vec![put("a"), put("a")]), Err(Error::DuplicateKey));
        assert_eq!(ok(vec![del("a", "c"), put("b")]), Err(Error::DuplicateKey));
        assert_eq!(ok(vec![del("a", ""), put("a")]), Err(Error::DuplicateKey));
        assert_eq!(ok(vec![del("a", "c"), put("c")]), Ok(()));
        assert_eq!(
            ok(vec![put("a"), txn(vec![put("a")], vec![])]),
            Err(Error::DuplicateKey)
        );
        assert_eq!(
            ok(vec![txn(vec![put("a")], vec![put("a")])]),
            Ok(()),
            "then/else are exclusive"
        );
        assert_eq!(
            ok(vec![del("a", "z"), txn(vec![put("b")], vec![])]),
            Err(Error::DuplicateKey)
        );
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let many = TxnRequest {
            compare: vec![],
            success: (0..129).map(|i| put(&i.to_string())).collect(),
            failure: vec![],
        };
        assert_eq!(check_txn_request(&many, 128), Err(Error::TooManyOps));
        let empty = TxnRequest {
            compare: vec![],
            success: vec![put("")],
            failure: vec![],
        };
        assert_eq!(check_txn_request(&empty, 128), Err(Error::EmptyKey));
        let none = TxnRequest {
            compare: vec![],
            success: vec![RequestOp { request: None }],
            failure: vec![],
        };
        assert_eq!(check_txn_request(&none, 128), Err(Error::KeyNotFound));
    }
}
