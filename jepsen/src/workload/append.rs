//! # `append`: list-append transactions guarded by mod_revision
//!
//! As Jepsen's etcd test does it: a transaction of one to four micro-ops (read a key's list,
//! append a unique integer to it) over a sliding window of keys runs in two steps.
//! 1. One read-only Txn fetches every key the transaction touches, with each key's
//!    mod_revision (0 when absent). It is atomic, so a read-only transaction is done here.
//! 2. The client applies the micro-ops to those lists locally (a read sees the txn's own
//!    earlier appends) and sends one Txn whose guard is `mod_revision(k) == seen` for every
//!    key touched, read or written, and whose success branch puts the new lists.
//!
//! A guard that does not hold means the Txn did nothing: a definite `fail`. When it holds, no
//! key changed between the two steps, so the lists read in step 1 are the ones the commit
//! saw, and the reads recorded are true at the commit's revision. Reads of a `fail` or
//! `info` transaction are recorded unknown (`value: null`).
//!
//! A list is stored as its elements in decimal separated by spaces; a token that does not
//! parse is recorded as -1, which no transaction appends, so the checker reports it as a
//! garbage read rather than the harness hiding it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    compare, request_op, response_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    TxnResponse,
};
use rand::rngs::StdRng;
use rand::Rng;

use super::{spawn_clients, Ctx, KeyWindow, Process, WorkloadKind};
use crate::client::{outcome, Conn, Effect};
use crate::history::{Func, MicroOp, Op, OpType};

const CLIENTS: usize = 8;
const PAUSE: Duration = Duration::from_millis(50);
const MAX_TXN_LEN: usize = 4;
pub(crate) const KEYS: KeyWindow = KeyWindow {
    active: 5,
    per_key: 60,
};

/// A new transaction's micro-ops (reads unknown yet); `next_value` hands out unique values.
pub(crate) fn generate(
    rng: &mut StdRng,
    n: u64,
    prefix: &str,
    next_value: &AtomicI64,
) -> Vec<MicroOp> {
    let len = rng.random_range(1..=MAX_TXN_LEN);
    (0..len)
        .map(|_| {
            let key = format!("{prefix}{}", KEYS.key(n, rng));
            if rng.random_bool(0.5) {
                MicroOp::Append {
                    key,
                    value: next_value.fetch_add(1, Ordering::Relaxed),
                }
            } else {
                MicroOp::R { key, value: None }
            }
        })
        .collect()
}

/// The distinct keys of a transaction, in first-use order.
pub(crate) fn keys(micro: &[MicroOp]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for m in micro {
        let key = match m {
            MicroOp::Append { key, .. } | MicroOp::R { key, .. } => key,
        };
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    keys
}

pub(crate) fn encode(list: &[i64]) -> String {
    list.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn decode(value: &[u8]) -> Vec<i64> {
    String::from_utf8_lossy(value)
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(-1))
        .collect()
}

/// Applies the micro-ops to the lists read: the completed micro-ops (reads filled in) and the
/// new list of every key written.
pub(crate) fn apply(
    micro: &[MicroOp],
    mut lists: BTreeMap<String, Vec<i64>>,
) -> (Vec<MicroOp>, BTreeMap<String, Vec<i64>>) {
    let mut written = BTreeMap::new();
    let done = micro
        .iter()
        .map(|m| match m {
            MicroOp::Append { key, value } => {
                let list = lists.entry(key.clone()).or_default();
                list.push(*value);
                written.insert(key.clone(), list.clone());
                m.clone()
            }
            MicroOp::R { key, .. } => MicroOp::R {
                key: key.clone(),
                value: Some(lists.get(key).cloned().unwrap_or_default()),
            },
        })
        .collect();
    (done, written)
}

pub(crate) fn read_request(keys: &[String]) -> TxnRequest {
    TxnRequest {
        success: keys
            .iter()
            .map(|k| RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: Bytes::from(k.clone()),
                    ..Default::default()
                })),
            })
            .collect(),
        ..Default::default()
    }
}

/// The guarded write: every key's mod_revision as read, then the new lists.
pub(crate) fn write_request(
    mod_revisions: &BTreeMap<String, i64>,
    written: &BTreeMap<String, Vec<i64>>,
) -> TxnRequest {
    TxnRequest {
        compare: mod_revisions
            .iter()
            .map(|(k, rev)| Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: Bytes::from(k.clone()),
                target_union: Some(compare::TargetUnion::ModRevision(*rev)),
                ..Default::default()
            })
            .collect(),
        success: written
            .iter()
            .map(|(k, list)| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: Bytes::from(k.clone()),
                    value: Bytes::from(encode(list)),
                    ..Default::default()
                })),
            })
            .collect(),
        failure: vec![],
    }
}

/// The lists and mod_revisions a read-only Txn returned, for `keys` in order.
fn read_lists(
    keys: &[String],
    resp: &TxnResponse,
) -> (BTreeMap<String, Vec<i64>>, BTreeMap<String, i64>) {
    let (mut lists, mut revs) = (BTreeMap::new(), BTreeMap::new());
    for (key, r) in keys.iter().zip(&resp.responses) {
        let kv = match &r.response {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.first(),
            _ => None,
        };
        lists.insert(
            key.clone(),
            kv.map(|kv| decode(&kv.value)).unwrap_or_default(),
        );
        revs.insert(key.clone(), kv.map_or(0, |kv| kv.mod_revision));
    }
    (lists, revs)
}

pub(crate) async fn run(ctx: Ctx) -> Vec<Op> {
    let counter = Arc::new(AtomicU64::new(0));
    let values = Arc::new(AtomicI64::new(1));
    spawn_clients(CLIENTS, |i| {
        client(ctx.clone(), i, counter.clone(), values.clone())
    })
    .await
}

async fn client(
    mut ctx: Ctx,
    i: usize,
    counter: Arc<AtomicU64>,
    values: Arc<AtomicI64>,
) -> Vec<Op> {
    let kind = WorkloadKind::Append;
    let mut rng = ctx.rng(kind, i);
    let mut conn = Conn::new(ctx.endpoint(i), ctx.timeout);
    let mut process = Process::new(kind, i, CLIENTS);
    let mut ops = Vec::new();
    while ctx.running() {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let micro = generate(&mut rng, n, kind.prefix(), &values);
        let op = transact(&ctx, &mut conn, process.id(), micro).await;
        process.after(&op);
        ops.push(op);
        if !ctx.pause(&mut rng, PAUSE).await {
            break;
        }
    }
    ops
}

async fn transact(ctx: &Ctx, conn: &mut Conn, process: u64, micro: Vec<MicroOp>) -> Op {
    let invoke = ctx.clock.now();
    let keys = keys(&micro);
    let mut kv = conn.kv();
    let finish = |kind: OpType, micro: Vec<MicroOp>, error: Option<String>| {
        let mut op = Op::new(
            process,
            kind,
            Func::Txn { ops: micro },
            invoke,
            ctx.clock.now(),
        );
        op.error = error;
        op
    };
    let read = match conn.call(kv.txn(read_request(&keys))).await {
        Ok(read) => read,
        Err(failure) => {
            return finish(
                outcome(&failure, Effect::Read),
                micro,
                Some(failure.message()),
            )
        }
    };
    let (lists, mod_revisions) = read_lists(&keys, &read);
    let (done, written) = apply(&micro, lists);
    if written.is_empty() {
        let revision = read.header.map_or(0, |h| h.revision);
        return finish(OpType::Ok, done, None).with_revision(revision);
    }
    match conn
        .call(kv.txn(write_request(&mod_revisions, &written)))
        .await
    {
        Ok(resp) if resp.succeeded => {
            let revision = resp.header.map_or(0, |h| h.revision);
            finish(OpType::Ok, done, None).with_revision(revision)
        }
        Ok(_) => finish(OpType::Fail, micro, Some("guard failed".to_string())),
        Err(failure) => finish(
            outcome(&failure, Effect::Write),
            micro,
            Some(failure.message()),
        ),
    }
}
