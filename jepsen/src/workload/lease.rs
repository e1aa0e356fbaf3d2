//! # `lease`: keys live exactly as long as their lease
//!
//! Four clients each run cycles of:
//! 1. grant a lease with an id of the client's own (so an indeterminate grant still names its
//!    lease) and a TTL of 3–6 s, recording the TTL the server granted;
//! 2. put a fresh key `l/<client>/<cycle>` attached to it;
//! 3. hold it for one to three TTLs: read the key every ~150 ms and keep the lease alive every
//!    TTL/3 on the client's keep-alive stream;
//! 4. end it: revoke the lease (half the cycles) or stop keeping it alive and let it expire;
//!    then read the key until it is seen absent, for at most TTL + 3 s.
//!
//! Keys are never reused and only their own client writes them, so the lease checker can tell
//! exactly which write a read should see. A keep-alive answered with TTL 0 found no lease:
//! a definite `fail`. Reads are always linearizable here: a serializable read on a lagging
//! member could miss the put, which would look like a key vanishing early.

use std::time::Duration;

use bytes::Bytes;
use keelson_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest,
};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::{spawn_clients, Ctx, Process, WorkloadKind};
use crate::client::{outcome, Conn, Effect, Failure};
use crate::history::{Func, Op, OpType};

const CLIENTS: usize = 4;
const READ_PAUSE: Duration = Duration::from_millis(150);

/// The lease id of `client`'s `cycle`-th lease: positive, unique in the run.
pub(crate) fn lease_id(client: usize, cycle: u64) -> i64 {
    ((client as i64 + 1) << 32) | (cycle & 0xFFFF_FFFF) as i64
}

pub(crate) async fn run(ctx: Ctx) -> Vec<Op> {
    spawn_clients(CLIENTS, |i| client(ctx.clone(), i)).await
}

/// One client's state: its connection, keep-alive stream and history so far.
struct Client {
    ctx: Ctx,
    conn: Conn,
    process: Process,
    keepalive: Option<(
        mpsc::Sender<LeaseKeepAliveRequest>,
        Streaming<LeaseKeepAliveResponse>,
    )>,
    ops: Vec<Op>,
}

async fn client(ctx: Ctx, i: usize) -> Vec<Op> {
    let kind = WorkloadKind::Lease;
    let mut rng = ctx.rng(kind, i);
    let mut c = Client {
        conn: Conn::new(ctx.endpoint(i), ctx.timeout),
        process: Process::new(kind, i, CLIENTS),
        keepalive: None,
        ops: Vec::new(),
        ctx,
    };
    let mut cycle = 0u64;
    while c.ctx.running() {
        cycle += 1;
        let id = lease_id(i, cycle);
        let Some(ttl) = c.grant(id, rng.random_range(3..=6)).await else {
            if !c.ctx.sleep(Duration::from_millis(300)).await {
                break;
            }
            continue;
        };
        let key = format!("{}{i}/{cycle}", kind.prefix());
        c.put(&key, id).await;
        let ttl_d = Duration::from_secs(ttl.max(1) as u64);
        let hold = ttl_d * rng.random_range(1..=3);
        let started = tokio::time::Instant::now();
        let mut kept = started;
        while started.elapsed() < hold {
            c.read(&key).await;
            if kept.elapsed() >= ttl_d / 3 {
                c.keep_alive(id).await;
                kept = tokio::time::Instant::now();
            }
            if !c.ctx.pause(&mut rng, READ_PAUSE).await {
                break;
            }
        }
        if !c.ctx.running() {
            break;
        }
        let revoke = rng.random_bool(0.5);
        if revoke {
            c.revoke(id).await;
        }
        let ended = tokio::time::Instant::now();
        while ended.elapsed() < ttl_d + Duration::from_secs(3) {
            if c.read(&key).await == Some(None) {
                break;
            }
            if !c.ctx.pause(&mut rng, READ_PAUSE * 2).await {
                break;
            }
        }
    }
    c.ops
}

impl Client {
    fn record(
        &mut self,
        f: Func,
        invoke: u64,
        result: Result<Option<i64>, (Failure, Effect)>,
    ) -> OpType {
        let complete = self.ctx.clock.now();
        let op = match result {
            Ok(revision) => {
                let op = Op::new(self.process.id(), OpType::Ok, f, invoke, complete);
                match revision {
                    Some(r) => op.with_revision(r),
                    None => op,
                }
            }
            Err((failure, effect)) => {
                let mut op = Op::new(
                    self.process.id(),
                    outcome(&failure, effect),
                    f,
                    invoke,
                    complete,
                );
                op.error = Some(failure.message());
                op
            }
        };
        let kind = op.kind;
        self.process.after(&op);
        self.ops.push(op);
        kind
    }

    /// Grants lease `id`; the granted TTL when ok.
    async fn grant(&mut self, id: i64, ttl: i64) -> Option<i64> {
        let invoke = self.ctx.clock.now();
        let mut lease = self.conn.lease();
        match self
            .conn
            .call(lease.lease_grant(LeaseGrantRequest { ttl, id }))
            .await
        {
            Ok(resp) => {
                let f = Func::LeaseGrant {
                    lease: id,
                    ttl: resp.ttl,
                };
                self.record(f, invoke, Ok(resp.header.map(|h| h.revision)));
                Some(resp.ttl)
            }
            Err(failure) => {
                let f = Func::LeaseGrant { lease: id, ttl };
                self.record(f, invoke, Err((failure, Effect::Write)));
                None
            }
        }
    }

    async fn put(&mut self, key: &str, id: i64) {
        let invoke = self.ctx.clock.now();
        let value = format!("{}.{}", self.process.id(), id);
        let mut kv = self.conn.kv();
        let req = PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.clone()),
            lease: id,
            ..Default::default()
        };
        let result = self.conn.call(kv.put(req)).await;
        let f = Func::Write {
            key: key.to_string(),
            value,
            lease: Some(id),
        };
        let result = result
            .map(|r| r.header.map(|h| h.revision))
            .map_err(|e| (e, Effect::Write));
        self.record(f, invoke, result);
    }

    /// Reads `key`: `Some(value)` when ok.
    async fn read(&mut self, key: &str) -> Option<Option<String>> {
        let invoke = self.ctx.clock.now();
        let mut kv = self.conn.kv();
        let req = RangeRequest {
            key: Bytes::from(key.to_string()),
            ..Default::default()
        };
        match self.conn.call(kv.range(req)).await {
            Ok(resp) => {
                let value = resp
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                let f = Func::Read {
                    key: key.to_string(),
                    value: value.clone(),
                };
                self.record(f, invoke, Ok(resp.header.map(|h| h.revision)));
                Some(value)
            }
            Err(failure) => {
                let f = Func::Read {
                    key: key.to_string(),
                    value: None,
                };
                self.record(f, invoke, Err((failure, Effect::Read)));
                None
            }
        }
    }

    async fn keep_alive(&mut self, id: i64) {
        let invoke = self.ctx.clock.now();
        let result = self.keep_alive_once(id).await;
        match result {
            Ok(resp) if resp.ttl > 0 => {
                let f = Func::LeaseKeepAlive {
                    lease: id,
                    ttl: Some(resp.ttl),
                };
                self.record(f, invoke, Ok(resp.header.map(|h| h.revision)));
            }
            Ok(_) => {
                let f = Func::LeaseKeepAlive {
                    lease: id,
                    ttl: None,
                };
                let complete = self.ctx.clock.now();
                let mut op = Op::new(self.process.id(), OpType::Fail, f, invoke, complete);
                op.error = Some("lease not found (TTL 0)".to_string());
                self.ops.push(op);
            }
            Err(failure) => {
                self.keepalive = None;
                let f = Func::LeaseKeepAlive {
                    lease: id,
                    ttl: None,
                };
                self.record(f, invoke, Err((failure, Effect::Write)));
            }
        }
    }

    /// One request and its answer on the keep-alive stream, opened if needed; the whole
    /// exchange is bounded by the request timeout.
    async fn keep_alive_once(&mut self, id: i64) -> Result<LeaseKeepAliveResponse, Failure> {
        let timeout = self.conn.timeout();
        let closed = || Failure::Status(tonic::Status::unavailable("keep-alive stream closed"));
        let exchange = async {
            match &mut self.keepalive {
                Some((tx, _)) => tx
                    .send(LeaseKeepAliveRequest { id })
                    .await
                    .map_err(|_| closed())?,
                None => {
                    // The request goes in before the call: etcd sends the response headers
                    // with the first answer, so the call returns only after one.
                    let (tx, rx) = mpsc::channel(4);
                    tx.send(LeaseKeepAliveRequest { id })
                        .await
                        .map_err(|_| closed())?;
                    let mut lease = self.conn.lease();
                    let inbound = lease
                        .lease_keep_alive(ReceiverStream::new(rx))
                        .await
                        .map_err(Failure::Status)?
                        .into_inner();
                    self.keepalive = Some((tx, inbound));
                }
            }
            let (_, inbound) = self.keepalive.as_mut().expect("opened above");
            match inbound.message().await {
                Ok(Some(resp)) => Ok(resp),
                Ok(None) => Err(Failure::Status(tonic::Status::unavailable(
                    "keep-alive stream ended",
                ))),
                Err(status) => Err(Failure::Status(status)),
            }
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Timeout),
        };
        if result.as_ref().is_err_and(|f| !f.is_definite()) {
            self.conn.reset();
        }
        result
    }

    async fn revoke(&mut self, id: i64) {
        let invoke = self.ctx.clock.now();
        let mut lease = self.conn.lease();
        let result = self
            .conn
            .call(lease.lease_revoke(LeaseRevokeRequest { id }))
            .await
            .map(|r| r.header.map(|h| h.revision))
            .map_err(|e| (e, Effect::Write));
        self.record(Func::LeaseRevoke { lease: id }, invoke, result);
    }
}
