//! # `register`: per-key read, write and compare-and-set
//!
//! Ten clients, spread over every member, each read (half the ops), write or compare-and-set
//! one key of a sliding window of keys (see [`KeyWindow`]). Written values are unique
//! (`<process>.<seq>`), which lets the linearizable checker discard unobserved indeterminate
//! writes and pin down observed ones. A CAS expects the value this client last saw on the key
//! (absent if it never saw one) and is a Txn comparing the value (or `version == 0` for
//! absent, since etcd fails a value compare on a missing key); a compare that does not hold is
//! a definite `fail`.
//!
//! Reads are linearizable or serializable per `--read-mode`. With serializable reads, a
//! member cut off from the leader keeps answering from its old state while the majority moves
//! on; since reads are frequent on every member, a partition reliably produces a read of a
//! value older than a write that completed before it: a stale read the checker must report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use rand::rngs::StdRng;
use rand::Rng;

use super::{spawn_clients, Ctx, KeyWindow, Process, ReadMode, WorkloadKind};
use crate::client::{outcome, Conn, Effect};
use crate::history::{Func, Op, OpType};

const CLIENTS: usize = 10;
/// Mean pause between a client's ops.
const PAUSE: Duration = Duration::from_millis(40);
pub(crate) const KEYS: KeyWindow = KeyWindow {
    active: 5,
    per_key: 150,
};

/// The op a client chose, before it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Planned {
    Read,
    Write(String),
    Cas {
        expected: Option<String>,
        value: String,
    },
}

/// Chooses the next op on `key`: half reads, a quarter writes, a quarter CAS from the value
/// this client last saw on the key.
pub(crate) fn plan(rng: &mut StdRng, last_seen: Option<&Option<String>>, value: String) -> Planned {
    match rng.random_range(0..4) {
        0 | 1 => Planned::Read,
        2 => Planned::Write(value),
        _ => Planned::Cas {
            expected: last_seen.cloned().flatten(),
            value,
        },
    }
}

pub(crate) fn cas_request(key: &str, expected: Option<&str>, value: &str) -> TxnRequest {
    let key = Bytes::from(key.to_string());
    let compare = match expected {
        Some(v) => Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::Value(Bytes::from(v.to_string()))),
            ..Default::default()
        },
        None => Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::Version(0)),
            ..Default::default()
        },
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key,
                value: Bytes::from(value.to_string()),
                ..Default::default()
            })),
        }],
        failure: vec![],
    }
}

pub(crate) async fn run(ctx: Ctx) -> Vec<Op> {
    let counter = Arc::new(AtomicU64::new(0));
    spawn_clients(CLIENTS, |i| client(ctx.clone(), i, counter.clone())).await
}

async fn client(mut ctx: Ctx, i: usize, counter: Arc<AtomicU64>) -> Vec<Op> {
    let kind = WorkloadKind::Register;
    let mut rng = ctx.rng(kind, i);
    let mut conn = Conn::new(ctx.endpoint(i), ctx.timeout);
    let mut process = Process::new(kind, i, CLIENTS);
    let mut last_seen: HashMap<String, Option<String>> = HashMap::new();
    let mut ops = Vec::new();
    let mut seq = 0u64;
    while ctx.running() {
        let key = format!(
            "{}{}",
            kind.prefix(),
            KEYS.key(counter.fetch_add(1, Ordering::Relaxed), &mut rng)
        );
        seq += 1;
        let value = format!("{}.{seq}", process.id());
        let planned = plan(&mut rng, last_seen.get(&key), value);
        let op = perform(&ctx, &mut conn, process.id(), &key, planned).await;
        if op.kind == OpType::Ok {
            match &op.f {
                Func::Read { value, .. } => {
                    last_seen.insert(key, value.clone());
                }
                Func::Write { value, .. } | Func::Cas { value, .. } => {
                    last_seen.insert(key, Some(value.clone()));
                }
                _ => {}
            }
        }
        process.after(&op);
        ops.push(op);
        if !ctx.pause(&mut rng, PAUSE).await {
            break;
        }
    }
    ops
}

async fn perform(ctx: &Ctx, conn: &mut Conn, process: u64, key: &str, planned: Planned) -> Op {
    let invoke = ctx.clock.now();
    let mut kv = conn.kv();
    let (f, result, effect) = match planned {
        Planned::Read => {
            let req = RangeRequest {
                key: Bytes::from(key.to_string()),
                serializable: ctx.read_mode == ReadMode::Serializable,
                ..Default::default()
            };
            let result = conn.call(kv.range(req)).await.map(|r| {
                let value = r
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                (value, r.header.map_or(0, |h| h.revision), true)
            });
            let f = Func::Read {
                key: key.to_string(),
                value: None,
            };
            (f, result, Effect::Read)
        }
        Planned::Write(value) => {
            let req = PutRequest {
                key: Bytes::from(key.to_string()),
                value: Bytes::from(value.clone()),
                ..Default::default()
            };
            let result = conn
                .call(kv.put(req))
                .await
                .map(|r| (None, r.header.map_or(0, |h| h.revision), true));
            let f = Func::Write {
                key: key.to_string(),
                value,
                lease: None,
            };
            (f, result, Effect::Write)
        }
        Planned::Cas { expected, value } => {
            let req = cas_request(key, expected.as_deref(), &value);
            let result = conn
                .call(kv.txn(req))
                .await
                .map(|r| (None, r.header.map_or(0, |h| h.revision), r.succeeded));
            let f = Func::Cas {
                key: key.to_string(),
                expected,
                value,
            };
            (f, result, Effect::Write)
        }
    };
    let complete = ctx.clock.now();
    match result {
        Ok((read, revision, held)) => {
            let mut f = f;
            if let Func::Read { value, .. } = &mut f {
                *value = read;
            }
            if held {
                Op::new(process, OpType::Ok, f, invoke, complete).with_revision(revision)
            } else {
                let mut op = Op::new(process, OpType::Fail, f, invoke, complete);
                op.error = Some("compare failed".to_string());
                op
            }
        }
        Err(failure) => {
            let mut op = Op::new(process, outcome(&failure, effect), f, invoke, complete);
            op.error = Some(failure.message());
            op
        }
    }
}
