//! The v3lock service (Lock, Unlock), and the waiting-queue recipe it shares with v3election.
//!
//! etcd 3.4 serves v3lock by running its own client recipe (`clientv3/concurrency.Mutex`)
//! against itself (`etcdserver/api/v3lock/lock.go`). We run the same recipe in-process, with
//! the same keys, revisions and errors, so a lock taken here and one taken by etcdctl's
//! client-side recipe over KV/Watch exclude each other:
//!
//! - the session lease is the request's lease; lease 0 means "grant a 60 s lease"
//!   (`concurrency.NewSession`'s default TTL), which is then left to expire (the server orphans
//!   the session);
//! - the waiter key is `name + "/" + lease as %x`; one txn creates it if absent
//!   (`create_revision == 0` → put `""` with the lease) or reads it back, and in the same txn
//!   reads the oldest key under the prefix. Locking twice with one lease is therefore one
//!   acquisition, at the first request's place in the queue;
//! - the holder is the key with the lowest create revision under the prefix. A waiter waits
//!   until no key under the prefix has a create revision below its own, i.e. until every
//!   predecessor is deleted (unlocked, or its lease revoked/expired);
//! - after waiting, the waiter checks that its own key still exists and fails with
//!   `mutex: session is expired` if its lease ran out meanwhile. This is the fix for etcd
//!   #11456 (Jepsen); etcd 3.4.23 itself still answers success with a key nobody holds, the
//!   check being in `concurrency.Mutex` only from 3.5. Like etcd we notice only once the
//!   predecessors are gone (no early termination, etcd #19597);
//! - a request cancelled (or failed) while waiting deletes its key, as `Mutex.Lock` does when
//!   its context ends, so an abandoned waiter never blocks the queue.
//!
//! Waiting does not poll and does not use the watch hub: it re-reads the durable state each
//! time the published revision ([`Core::revision`]) moves. The receiver is marked seen *before*
//! each read, so a commit between the read and the wait still wakes the waiter.
//!
//! Errors keep etcd's text, and its code: Unknown for everything, since etcd's servers relay
//! the errors of their in-process client as plain errors ([`relayed`]).

use std::sync::Arc;

use bytes::Bytes;
use keelson_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keelson_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use keelson_proto::etcdserverpb::request_op::Request as Op;
use keelson_proto::etcdserverpb::response_op::Response as OpResponse;
use keelson_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, TxnResponse,
};
use keelson_proto::mvccpb::KeyValue;
use keelson_proto::v3lockpb::lock_server::Lock;
use keelson_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::apply::{check_txn_request, Command, Response as Applied};
use crate::core::Core;
use crate::error::Error;
use crate::server::kv::unexpected;

pub(crate) struct LockService {
    pub(crate) core: Arc<Core>,
    pub(crate) stopping: Stopping,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.acquire(req.into_inner())
            .await
            .map(Response::new)
            .map_err(relayed)
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.release(req.into_inner())
            .await
            .map(Response::new)
            .map_err(relayed)
    }
}

impl LockService {
    /// `concurrency.Mutex.Lock` with the request's session.
    async fn acquire(&self, r: LockRequest) -> Result<LockResponse, Status> {
        let core = &self.core;
        let lease = session_lease(core, r.lease).await?;
        let pfx = queue_prefix(&r.name);
        let key = waiter_key(&pfx, lease);
        // Mutex.tryAcquire: join the queue (or find our earlier place) and read the holder, in
        // one round.
        let resp = txn(
            core,
            TxnRequest {
                compare: vec![create_revision_is(&key, 0)],
                success: vec![put_op(&key, Bytes::new(), lease), oldest_op(&pfx)],
                failure: vec![get_op(&key), oldest_op(&pfx)],
            },
        )
        .await?;
        let my_rev = if resp.succeeded {
            header_rev(&resp)
        } else {
            first_kv(&resp)?.create_revision
        };
        let holder = range_kvs(&resp, 1)?;
        if holder.first().is_none_or(|kv| kv.create_revision == my_rev) {
            return Ok(LockResponse {
                header: resp.header,
                key,
            });
        }

        let cleanup = Cleanup::new(core, Command::DeleteRange(delete_req(&key)));
        wait_deletes(core, &self.stopping, &pfx, my_rev - 1).await?;
        cleanup.disarm();
        // The #11456 fix: our lease may have expired while we waited.
        let (alive, current) = {
            let st = core.mvcc.state.read();
            let alive = st.live_at(&key, &[], st.current).next().is_some();
            (alive, st.current)
        };
        if !alive {
            return Err(Error::SessionExpired.into());
        }
        Ok(LockResponse {
            header: core.header(current),
            key,
        })
    }

    /// The lock server's `Delete(key)`.
    async fn release(&self, r: UnlockRequest) -> Result<UnlockResponse, Status> {
        if r.key.is_empty() {
            return Err(Error::EmptyKey.into());
        }
        match self
            .core
            .propose(Command::DeleteRange(delete_req(&r.key)))
            .await?
        {
            Applied::DeleteRange(mut resp) => {
                self.core.fill(&mut resp.header);
                Ok(UnlockResponse {
                    header: resp.header,
                })
            }
            other => Err(unexpected(other)),
        }
    }
}

/// The status etcd's lock and election servers answer for an error. They call the KV API
/// through an in-process clientv3, which turns every `etcdserver: …` status back into a plain
/// error value; grpc-go then sends that (and the recipes' own `mutex:`/`election:` errors) as
/// code Unknown with the same text. So e.g. a missing lease is `Unknown: etcdserver: requested
/// lease not found` here, where the KV service says `NotFound`.
pub(crate) fn relayed(s: Status) -> Status {
    Status::unknown(s.message().to_string())
}

/// TTL of the lease granted for a request that names none (`concurrency.defaultSessionTTL`).
const DEFAULT_SESSION_TTL: i64 = 60;

/// `concurrency.NewSession(WithLease(lease))` as the servers use it: lease 0 grants a fresh
/// lease that nobody keeps alive; any other ID is used as given (a missing lease surfaces as
/// `requested lease not found` from the txn that attaches a key to it).
pub(crate) async fn session_lease(core: &Core, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let id = (core.next_id() & i64::MAX as u64) as i64;
    match core
        .propose(Command::LeaseGrant(LeaseGrantRequest {
            ttl: DEFAULT_SESSION_TTL,
            id,
        }))
        .await?
    {
        Applied::LeaseGrant(resp) => Ok(resp.id),
        other => Err(unexpected(other)),
    }
}

/// The queue's key prefix: the recipes append `/` to the name.
pub(crate) fn queue_prefix(name: &[u8]) -> Bytes {
    let mut p = Vec::with_capacity(name.len() + 1);
    p.extend_from_slice(name);
    p.push(b'/');
    p.into()
}

/// `fmt.Sprintf("%s%x", pfx, lease)`: Go prints a negative ID as `-` and its magnitude.
pub(crate) fn waiter_key(pfx: &[u8], lease: i64) -> Bytes {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    [pfx, hex.as_bytes()].concat().into()
}

/// clientv3's `GetPrefixRangeEnd`: the first key after every key starting with `p`.
pub(crate) fn prefix_end(p: &[u8]) -> Bytes {
    let mut end = p.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end.into();
        }
        end.pop();
    }
    Bytes::from_static(&[0])
}

pub(crate) fn create_revision_is(key: &Bytes, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        range_end: Bytes::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

pub(crate) fn put_op(key: &Bytes, value: Bytes, lease: i64) -> RequestOp {
    let put = PutRequest {
        key: key.clone(),
        value,
        lease,
        ..Default::default()
    };
    RequestOp {
        request: Some(Op::RequestPut(put)),
    }
}

pub(crate) fn get_op(key: &Bytes) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    }
}

pub(crate) fn delete_req(key: &Bytes) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.clone(),
        ..Default::default()
    }
}

/// Reads the oldest key under `pfx` (clientv3's `WithFirstCreate`).
fn oldest_op(pfx: &Bytes) -> RequestOp {
    let (limit, sort_order, sort_target) = (1, SortOrder::Ascend as i32, SortTarget::Create as i32);
    let (key, range_end) = (pfx.clone(), prefix_end(pfx));
    let range = RangeRequest {
        key,
        range_end,
        limit,
        sort_order,
        sort_target,
        ..Default::default()
    };
    RequestOp {
        request: Some(Op::RequestRange(range)),
    }
}

/// The oldest live key under `pfx` at the current revision, and that revision.
pub(crate) fn oldest(core: &Core, pfx: &Bytes) -> (Option<KeyValue>, i64) {
    let st = core.mvcc.state.read();
    let current = st.current;
    let kv = st
        .live_at(pfx, &prefix_end(pfx), current)
        .min_by_key(|kv| kv.create_revision)
        .cloned();
    (kv, current)
}

/// Proposes a txn and returns its response with a full header.
pub(crate) async fn txn(core: &Core, t: TxnRequest) -> Result<TxnResponse, Status> {
    // etcd's recipes go through the KV service, so its checks apply (an empty key in a
    // Proclaim or Resign is `key is not provided`).
    check_txn_request(&t, core.cfg.max_txn_ops)?;
    match core.propose(Command::Txn(t)).await? {
        Applied::Txn(mut resp) => {
            core.fill(&mut resp.header);
            Ok(resp)
        }
        other => Err(unexpected(other)),
    }
}

pub(crate) fn header_rev(resp: &TxnResponse) -> i64 {
    resp.header.as_ref().map_or(0, |h| h.revision)
}

/// The kvs of the `i`th response of a recipe txn (a range, by construction).
pub(crate) fn range_kvs(resp: &TxnResponse, i: usize) -> Result<&[KeyValue], Status> {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(r)) => Ok(&r.kvs),
        _ => Err(malformed(resp)),
    }
}

/// The key a failed `create_revision == 0` compare found (it exists, so the get returns it).
pub(crate) fn first_kv(resp: &TxnResponse) -> Result<&KeyValue, Status> {
    range_kvs(resp, 0)?.first().ok_or_else(|| malformed(resp))
}

fn malformed(resp: &TxnResponse) -> Status {
    Status::internal(format!("keelson: unexpected recipe txn response {resp:?}"))
}

/// `concurrency.waitDeletes`: waits until no key under `pfx` has a create revision
/// `<= max_create_rev`; returns the revision at which that was observed.
pub(crate) async fn wait_deletes(
    core: &Core,
    stopping: &Stopping,
    pfx: &Bytes,
    max_create_rev: i64,
) -> Result<i64, Status> {
    let end = prefix_end(pfx);
    let mut published = core.revision.clone();
    loop {
        published.borrow_and_update();
        let (blocked, current) = {
            let st = core.mvcc.state.read();
            let blocked = st
                .live_at(pfx, &end, st.current)
                .any(|kv| kv.create_revision <= max_create_rev);
            (blocked, st.current)
        };
        if !blocked {
            return Ok(current);
        }
        tokio::select! {
            moved = published.changed() => moved.map_err(|_| Status::from(Error::Stopped))?,
            _ = stopping.wait() => return Err(Error::Stopped.into()),
        }
    }
}

/// Graceful shutdown waits for every open request, and a Lock, Campaign or Observe may wait
/// forever; this tells them the server is stopping, so they end with `server stopped`.
#[derive(Clone)]
pub(crate) struct Stopping(tokio::sync::watch::Receiver<bool>);

impl Stopping {
    /// Wraps a server's shutdown future so that its completion also stops the waiters.
    pub(crate) fn on(
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> (
        impl std::future::Future<Output = ()> + Send + 'static,
        Stopping,
    ) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (
            async move {
                shutdown.await;
                let _ = tx.send(true);
            },
            Stopping(rx),
        )
    }

    /// Completes once the server is stopping (or its shutdown future was dropped).
    pub(crate) async fn wait(&self) {
        let _ = self.0.clone().wait_for(|stopping| *stopping).await;
    }
}

/// A write to propose if the request is dropped (client cancelled) or fails before
/// [`Cleanup::disarm`]: the recipes' "clean up in case of context cancel".
pub(crate) struct Cleanup {
    core: Arc<Core>,
    cmd: Option<Command>,
}

impl Cleanup {
    pub(crate) fn new(core: &Arc<Core>, cmd: Command) -> Cleanup {
        Cleanup {
            core: core.clone(),
            cmd: Some(cmd),
        }
    }

    pub(crate) fn disarm(mut self) {
        self.cmd = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(cmd) = self.cmd.take() else { return };
        // Dropped inside the server's runtime; the proposal must outlive the dropped request.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let core = self.core.clone();
        rt.spawn(async move {
            if let Err(e) = core.propose(cmd).await {
                tracing::debug!("cleaning up an abandoned lock/election waiter: {e}");
            }
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use etcd_client::{
        Client, Compare, CompareOp, GetOptions, LockOptions, LockResponse, PutOptions, Txn, TxnOp,
    };
    use tokio::task::JoinHandle;

    use crate::config::StoreConfig;

    /// A client of a fresh in-memory store on 127.0.0.1:0 (or, to compare behaviour, of the
    /// etcd at `KEELSON_COMPARE_ETCD=http://host:port`).
    pub(crate) async fn client() -> Client {
        let ep = match std::env::var("KEELSON_COMPARE_ETCD") {
            Ok(ep) => ep,
            Err(_) => {
                let cfg = StoreConfig {
                    listen_client_urls: vec!["http://127.0.0.1:0".into()],
                    data_dir: None,
                    ..Default::default()
                };
                let store = crate::Store::open(cfg).await.unwrap();
                let addr = store.client_addrs()[0];
                tokio::spawn(store.serve(std::future::pending()));
                format!("http://{addr}")
            }
        };
        Client::connect([ep], None).await.unwrap()
    }

    /// A name no other test (or earlier run against a shared etcd) uses.
    pub(crate) fn unique(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{name}-{nanos}")
    }

    pub(crate) fn status(e: etcd_client::Error) -> (tonic::Code, String) {
        match e {
            etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
            other => panic!("expected a gRPC status, got {other:?}"),
        }
    }

    pub(crate) async fn lease(c: &mut Client) -> i64 {
        c.lease_grant(60, None).await.unwrap().id()
    }

    fn spawn_lock(
        c: &Client,
        name: &str,
        lease: i64,
    ) -> JoinHandle<Result<LockResponse, etcd_client::Error>> {
        let (mut c, name) = (c.clone(), name.to_string());
        tokio::spawn(async move {
            c.lock(name, Some(LockOptions::new().with_lease(lease)))
                .await
        })
    }

    /// Asserts that `fut` is still pending after a short while: it waits rather than completes.
    pub(crate) async fn assert_waits<F: std::future::Future + Unpin>(fut: &mut F) {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), fut)
                .await
                .is_err(),
            "should still be waiting"
        );
    }

    #[tokio::test]
    async fn second_locker_acquires_only_after_unlock() {
        let mut c = client().await;
        let name = unique("lock");
        let (l1, l2) = (lease(&mut c).await, lease(&mut c).await);
        let first = c
            .lock(name.as_str(), Some(LockOptions::new().with_lease(l1)))
            .await
            .unwrap();
        assert_eq!(first.key(), format!("{name}/{l1:x}").as_bytes());
        // Locking again with the same lease is the same acquisition.
        let again = c
            .lock(name.as_str(), Some(LockOptions::new().with_lease(l1)))
            .await
            .unwrap();
        assert_eq!(again.key(), first.key());

        let mut second = spawn_lock(&c, &name, l2);
        assert_waits(&mut second).await;
        let unlocked = c.unlock(first.key()).await.unwrap();
        let unlock_rev = unlocked.header().unwrap().revision();
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.key(), format!("{name}/{l2:x}").as_bytes());
        assert!(second.header().unwrap().revision() >= unlock_rev);
        // It really queued before the unlock: its key is older than the unlock.
        let kv = c.get(second.key(), None).await.unwrap().kvs()[0].clone();
        assert!(kv.create_revision() < unlock_rev);
        assert_eq!(kv.lease(), l2);
        assert_eq!(kv.value(), b"");
    }

    #[tokio::test]
    async fn a_kv_recipe_holder_blocks_until_its_lease_is_revoked() {
        let mut c = client().await;
        let name = unique("lock");
        let (l1, l2) = (lease(&mut c).await, lease(&mut c).await);
        // The holder takes the lock the way etcdctl's client-side Mutex does, over plain KV.
        let key = format!("{name}/{l1:x}");
        let put = TxnOp::put(key.as_str(), "", Some(PutOptions::new().with_lease(l1)));
        let create = Compare::create_revision(key.as_str(), CompareOp::Equal, 0);
        assert!(c
            .txn(Txn::new().when([create]).and_then([put]))
            .await
            .unwrap()
            .succeeded());
        let mut second = spawn_lock(&c, &name, l2);
        assert_waits(&mut second).await;
        c.lease_revoke(l1).await.unwrap();
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.key(), format!("{name}/{l2:x}").as_bytes());
        let owners = c
            .get(format!("{name}/"), Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(owners.kvs().len(), 1);
    }

    #[tokio::test]
    async fn a_waiter_whose_lease_ends_gets_session_expired() {
        let mut c = client().await;
        let name = unique("lock");
        let (l1, l2) = (lease(&mut c).await, lease(&mut c).await);
        let first = c
            .lock(name.as_str(), Some(LockOptions::new().with_lease(l1)))
            .await
            .unwrap();
        let mut second = spawn_lock(&c, &name, l2);
        assert_waits(&mut second).await;
        c.lease_revoke(l2).await.unwrap();
        // Still waiting for its predecessor (etcd 3.4 has no early termination) ...
        assert_waits(&mut second).await;
        c.unlock(first.key()).await.unwrap();
        // ... and then it notices its key is gone: the #11456 fix. (etcd 3.4.23 itself still
        // answers success here; the check is in clientv3/concurrency from 3.5.)
        let err = second.await.unwrap().unwrap_err();
        assert_eq!(
            status(err),
            (tonic::Code::Unknown, "mutex: session is expired".into())
        );
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let mut c = client().await;
        let name = unique("lock");
        let (l1, l2, l3) = (
            lease(&mut c).await,
            lease(&mut c).await,
            lease(&mut c).await,
        );
        let first = c
            .lock(name.as_str(), Some(LockOptions::new().with_lease(l1)))
            .await
            .unwrap();
        let mut second = spawn_lock(&c, &name, l2);
        assert_waits(&mut second).await;
        second.abort();
        let mut third = spawn_lock(&c, &name, l3);
        assert_waits(&mut third).await;
        c.unlock(first.key()).await.unwrap();
        // The third only gets the lock if the cancelled second removed its key.
        let third = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("third acquires")
            .unwrap();
        assert_eq!(third.unwrap().key(), format!("{name}/{l3:x}").as_bytes());
    }

    #[tokio::test]
    async fn lock_errors_match_etcd() {
        let mut c = client().await;
        let name = unique("lock");
        let err = c
            .lock(name.as_str(), Some(LockOptions::new().with_lease(0x1234)))
            .await
            .unwrap_err();
        assert_eq!(
            status(err),
            (
                tonic::Code::Unknown,
                "etcdserver: requested lease not found".into()
            )
        );
        let err = c.unlock("").await.unwrap_err();
        assert_eq!(
            status(err),
            (
                tonic::Code::Unknown,
                "etcdserver: key is not provided".into()
            )
        );
        // Without a lease the server grants a 60 s one for the lock.
        let held = c.lock(name.as_str(), None).await.unwrap();
        let kv = c.get(held.key(), None).await.unwrap().kvs()[0].clone();
        assert_eq!(held.key(), format!("{name}/{:x}", kv.lease()).as_bytes());
        let ttl = c.lease_time_to_live(kv.lease(), None).await.unwrap();
        assert_eq!(ttl.granted_ttl(), 60);
        // Unlocking a key nobody holds is not an error.
        c.unlock(held.key()).await.unwrap();
        c.unlock(held.key()).await.unwrap();
    }
}
